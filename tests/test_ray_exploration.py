"""Stage 02 on Ray (``executor="ray"``): shards as Ray tasks on a local Ray (``ray.init(num_cpus=2)``) merge into
the records a single process makes, and a worker killed mid-shard is rerun by Ray with nothing lost or doubled."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]' (make does)")

from steca_lib.config import config_from_params  # noqa: E402
from steca_lib.data import read_jsonl  # noqa: E402
from steca_lib.rollouts import RolloutConfig, run_rollouts  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def fresh_copy(trained_run, folder):
    """Stages 00 and 01 of the smoke run (a real SFT model explores), nothing after."""
    shutil.copytree(trained_run, folder, ignore=shutil.ignore_patterns("02_*", "03_*", "04_*", "05_*", "iterations"))
    return folder


def outcome(record):
    return record["id"], record["meta"]["success"], [t["value"] for t in record["conversations"]]


def test_ray_shards_merge_into_the_single_process_records(trained_run, tmp_path, local_ray):
    local, on_ray = fresh_copy(trained_run, tmp_path / "local"), fresh_copy(trained_run, tmp_path / "ray")
    run_rollouts(config_from_params(RolloutConfig, "smoke", run_dir=str(local)))
    cfg = config_from_params(RolloutConfig, "smoke", run_dir=str(on_ray), executor="ray", ray_shards=2)
    summary = run_rollouts(cfg)
    assert summary["executor"] == "ray" and len(summary["shards"]) == 2
    assert sorted(summary["merged_from"]) == ["rollouts.shard-0-of-2.jsonl", "rollouts.shard-1-of-2.jsonl"]
    ours, theirs = read_jsonl(on_ray / "02_rollouts" / "rollouts.jsonl"), read_jsonl(local / "02_rollouts" /
                                                                                    "rollouts.jsonl")
    assert len(ours) == len({r["id"] for r in ours}) and {r["id"] for r in ours} == {r["id"] for r in theirs}
    greedy = sorted(outcome(r) for r in ours if r["sample"] == -1)
    assert greedy == sorted(outcome(r) for r in theirs if r["sample"] == -1)  # greedy branches: identical episodes
    manifest = json.loads((on_ray / "02_rollouts" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["summary"]["records"] == len(theirs)
    assert run_rollouts(cfg)["records"] == len(theirs)  # finished: skipped


def test_a_killed_ray_worker_is_rerun_and_loses_nothing(trained_run, tmp_path, local_ray):
    import psutil

    run = fresh_copy(trained_run, tmp_path / "run")
    cfg = config_from_params(RolloutConfig, "smoke", run_dir=str(run), executor="ray", ray_shards=2, n_tasks=6)
    result: list = []
    driver = threading.Thread(target=lambda: result.append(run_rollouts(cfg)), daemon=True)
    driver.start()
    killed, deadline = None, time.time() + 300
    while killed is None and driver.is_alive() and time.time() < deadline:
        shard_lines = [len(p.read_text().splitlines()) for p in (run / "02_rollouts").glob("rollouts.shard-*.jsonl")]
        if len(shard_lines) == 2 and min(shard_lines) >= 3:  # both shards have records on disk: any kill resumes
            for proc in psutil.process_iter(["pid", "cmdline"]):
                if any("explore_shard" in part for part in (proc.info["cmdline"] or [])):
                    os.kill(proc.info["pid"], signal.SIGKILL)
                    killed = proc.info["pid"]
                    break
        time.sleep(0.02)
    driver.join(timeout=300)
    assert killed is not None, "no Ray worker was running a shard to kill"
    assert result, "the Ray exploration did not finish after the kill"
    summary = result[0]
    assert any(s["new_records"] < s["records"] for s in summary["shards"])  # a rerun resumed from its shard file
    ids = [r["id"] for r in read_jsonl(run / "02_rollouts" / "rollouts.jsonl")]
    assert len(ids) == len(set(ids)) == summary["records"]
    for shard in (run / "02_rollouts").glob("rollouts.shard-*.jsonl"):
        shard_ids = [r["id"] for r in read_jsonl(shard)]
        assert len(shard_ids) == len(set(shard_ids)), shard.name  # nothing written twice
