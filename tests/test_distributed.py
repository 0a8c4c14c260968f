"""Multi-process training, executed: SFT and reinforced training under ``accelerate launch`` with two CPU
processes (DDP over gloo, ``configs/accelerate/cpu_ddp.yaml``) train the same model as one process with the same
global batch; only rank 0 writes. The accelerate configs of the paper profile go through accelerate's own loader."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs" / "accelerate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_stage(module: str, *args: str, processes: int = 1) -> subprocess.CompletedProcess:
    """``python -m steca_lib.<module>``, or the same under ``accelerate launch`` with ``processes`` processes."""
    launch = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file", str(CONFIGS / "cpu_ddp.yaml"),
              "--num_processes", str(processes), "--main_process_port", str(free_port())] if processes > 1 else \
        [sys.executable]
    proc = subprocess.run([*launch, "-m", f"steca_lib.{module}", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def losses(folder: Path) -> list[float]:
    return [h["loss"] for h in map(json.loads, (folder / "train_log.jsonl").read_text().splitlines()) if "loss" in h]


def assert_same_weights(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4)


def test_sft_on_two_processes_trains_the_one_process_model(smoke_run, tmp_path):
    runs = {}
    for processes in (1, 2):
        run = tmp_path / f"run-{processes}"
        shutil.copytree(smoke_run[0] / "00_environment", run / "00_environment")
        run_stage("sft", "--profile", "smoke", "--run-dir", str(run), "--set", "group_by_length=false",
                  "--set", "batch_size=8", "--set", f"per_device_batch_size={8 // processes}", processes=processes)
        runs[processes] = run / "01_sft"
    one, two = losses(runs[1]), losses(runs[2])
    assert len(one) == len(two) == 6  # 48 trajectories, global batch 8, one epoch
    assert two == pytest.approx(one, rel=1e-4)
    assert_same_weights(runs[1] / "model", runs[2] / "model")
    manifest = json.loads((runs[2] / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["summary"]["steps"] == 6
    assert not (runs[2] / "checkpoints").exists()


def test_reinforced_training_on_two_processes_trains_the_one_process_model(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("05_*"))
    four = run / "04_calibration" / "four"  # a set of 4 samples: 2 steps of global batch 2, no uneven last batch
    shutil.copytree(run / "04_calibration" / "main", four)
    rft = json.loads((four / "rft.json").read_text())
    assert len(rft) >= 4
    (four / "rft.json").write_text(json.dumps(rft[:4]))
    for processes in (1, 2):
        run_stage("reinforced", "--profile", "smoke", "--run-dir", str(run), "--set", "variant=rft",
                  "--set", "calibration=four", "--set", f"label=rft-{processes}", "--set", "batch_size=2",
                  "--set", f"per_device_batch_size={2 // processes}", processes=processes)
    one, two = (run / "05_reinforced" / f"rft-{p}" for p in (1, 2))
    assert len(losses(one)) == 2 and losses(two) == pytest.approx(losses(one), rel=1e-4)
    assert_same_weights(one / "model", two / "model")


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_accelerate_configs_load_through_accelerate(name):
    """Each config as ``accelerate launch --config_file`` reads it: accelerate's own loader and its checks."""
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(CONFIGS / name))
    assert cfg.num_processes >= 1 and cfg.compute_environment.value == "LOCAL_MACHINE"
    assert str(cfg.distributed_type.value) in ("MULTI_GPU", "FSDP", "DEEPSPEED", "NO")
    if cfg.distributed_type.value == "FSDP":
        assert cfg.fsdp_config["fsdp_version"] == 2
