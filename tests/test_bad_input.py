"""Bad input through the command lines: one clear line on stderr, exit code 2, and no stage marked finished.

Each case starts from a copy of a smoke run folder with stage 00 done (or less), runs one CLI in a subprocess as a
user would, and checks the message, the exit code, that no traceback is shown, and that the stage it targets left
no ``manifest.json`` (nor, where the error comes before any work, a folder at all).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def stage00(tmp_path_factory) -> Path:
    from steca_lib.config import EnvironmentConfig, config_from_params
    from steca_lib.expert_data import run_environment_stage

    run = tmp_path_factory.mktemp("bad-input") / "run"
    run_environment_stage(config_from_params(EnvironmentConfig, "smoke", run_dir=str(run)))
    return run


def cli(module: str, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"steca_lib.{module}", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, env={**os.environ, **(env or {})})


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """The process failed with exit code 2 and exactly one ``error:`` line naming every fragment, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def empty_expert_file(run: Path) -> None:
    write(run / "00_environment" / "expert_train.json", "[]")


def corrupt_expert_file(run: Path) -> None:
    write(run / "00_environment" / "expert_train.json", '[{"id": "x", "conversations": [')


def degenerate_rollouts(run: Path) -> None:
    """A stage 02 folder that an older kit marked complete with no records (n_samples=-1 was accepted then)."""
    write(run / "02_rollouts" / "rollouts.jsonl", "")
    write(run / "02_rollouts" / "manifest.json", json.dumps({"status": "complete", "finished_at": "then",
                                                             "config": {}, "summary": {}}))


def nothing(run: Path) -> None:
    pass


# (case id, CLI module, arguments, how to spoil the run folder, the stage folder that must not be finished,
#  whether that folder must not exist at all, fragments of the message)
CASES = [
    ("rollouts n_samples=-1", "rollouts", ["--set", "n_samples=-1"], nothing, "02_rollouts", True,
     ["RolloutConfig.n_samples = -1", "integer ≥ 1"]),
    ("rollouts n_samples=0", "rollouts", ["--set", "n_samples=0"], nothing, "02_rollouts", True,
     ["RolloutConfig.n_samples = 0"]),
    ("rollouts --n-tasks -1", "rollouts", ["--n-tasks", "-1"], nothing, "02_rollouts", True,
     ["RolloutConfig.n_tasks = -1", "None (all) or an integer ≥ 1"]),
    ("rollouts bad shard", "rollouts", ["--shard", "3/2"], nothing, "02_rollouts", True, ["shard = '3/2'"]),
    ("rollouts bad temperature", "rollouts", ["--set", "temperature=-1"], nothing, "02_rollouts", True,
     ["temperature = -1"]),
    ("rollouts before SFT", "rollouts", [], nothing, "02_rollouts", True, ["no model at", "01_sft/model",
                                                                             "run stage 01 first"]),
    ("sft empty expert file", "sft", [], empty_expert_file, "01_sft", True,
     ["expert_train.json: no trajectories"]),
    ("sft corrupt expert file", "sft", [], corrupt_expert_file, "01_sft", True,
     ["expert_train.json: not valid JSON"]),
    ("sft epochs=0", "sft", ["--set", "epochs=0"], nothing, "01_sft", True, ["SFTStageConfig.epochs = 0"]),
    ("sft unknown field", "sft", ["--set", "learning_rat=1e-3"], nothing, "01_sft", True,
     ["has no parameter(s) ['learning_rat']"]),
    ("sft missing model folder", "sft", ["--model", "./no/such/model"], nothing, "01_sft", True,
     ["no model at ./no/such/model"]),
    ("sft without stage 00", "sft", [], lambda run: shutil.rmtree(run / "00_environment"), "01_sft", True,
     ["has not run", "run it first"]),
    ("step rewards before stage 02", "step_rewards", [], nothing, "03_step_rewards", True,
     ["stage 02_rollouts has not finished"]),
    ("step rewards on 0 rollouts", "step_rewards", [], degenerate_rollouts, "03_step_rewards", False,
     ["holds no rollouts"]),
    ("calibration unknown reflector", "calibration", ["--set", "reflector=gpt5"], nothing, "04_calibration", True,
     ["CalibrationConfig.reflector = 'gpt5'", "rule, chat, self"]),
    ("calibration unknown embedder", "calibration", ["--set", "embedder=word2vec"], nothing, "04_calibration",
     True, ["CalibrationConfig.embedder = 'word2vec'"]),
    ("calibration before stage 03", "calibration", [], nothing, "04_calibration", True, ["has not finished"]),
    ("reinforced unknown variant", "reinforced", ["--set", "variant=ppo"], nothing, "05_reinforced", True,
     ["ReinforcedConfig.variant = 'ppo'"]),
    ("reinforced empty sets", "reinforced", ["--set", "sets=[]"], nothing, "05_reinforced", True,
     ["ReinforcedConfig.sets = []"]),
    ("evaluation max_tasks=0", "evaluation", ["--set", "max_tasks=0"], nothing, "01_eval", True,
     ["EvalConfig.max_tasks = 0"]),
    ("evaluation unknown split", "evaluation", ["--set", 'splits=["test"]'], nothing, "01_eval", True,
     ["EvalConfig.splits"]),
    ("evaluation before SFT", "evaluation", [], nothing, "01_eval", True, ["no model at"]),
    ("stage 00 n_train=0", "expert_data", ["--set", "n_train=0"], nothing, "00_environment", False,
     ["EnvironmentConfig.n_train = 0"]),
    ("recovery n_cases=0", "recovery", ["--set", "n_cases=0"], nothing, "06_recovery", True,
     ["RecoveryConfig.n_cases = 0"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_no_finished_stage(case, stage00, tmp_path):
    _, module, args, spoil, stage, no_folder, fragments = case
    run = tmp_path / "run"
    shutil.copytree(stage00, run)
    spoil(run)
    before = (run / stage / "manifest.json").read_text() if (run / stage / "manifest.json").exists() else None
    proc = cli(module, "--profile", "smoke", "--run-dir", str(run), *args)
    assert_one_line_error(proc, *fragments)
    after = (run / stage / "manifest.json").read_text() if (run / stage / "manifest.json").exists() else None
    assert after == before  # nothing marked finished (stage 00's existing manifest is left as it was)
    if no_folder:
        assert not (run / stage).exists(), sorted(p.name for p in (run / stage).iterdir())


STAGE_MODULES = ("expert_data", "sft", "rollouts", "step_rewards", "calibration", "reinforced", "evaluation",
                 "recovery")


@pytest.mark.parametrize("module", STAGE_MODULES)
def test_every_stage_has_a_command_line_with_the_same_options(module):
    proc = cli(module, "--help")
    assert proc.returncode == 0, proc.stderr
    for option in ("--profile", "--seed", "--run-dir", "--set", "--debug"):
        assert option in proc.stdout, (module, option)


def test_step_rewards_command_runs_the_stage(scripted_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(scripted_run, run)
    shutil.rmtree(run / "03_step_rewards")
    proc = cli("step_rewards", "--profile", "smoke", "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["rows"] > 0 and (run / "03_step_rewards" / "manifest.json").exists()


def test_debug_shows_the_traceback(stage00):
    proc = cli("rollouts", "--profile", "smoke", "--run-dir", str(stage00), "--set", "n_samples=-1", "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr
    proc = cli("rollouts", "--profile", "smoke", "--run-dir", str(stage00), "--set", "n_samples=-1",
               env={"STECA_DEBUG": "1"})
    assert "Traceback" in proc.stderr


def test_the_same_configs_fail_in_the_api():
    from steca_lib.config import config_from_params
    from steca_lib.errors import ConfigError
    from steca_lib.rollouts import RolloutConfig

    with pytest.raises(ConfigError, match="n_samples = -1"):
        config_from_params(RolloutConfig, "smoke", n_samples=-1)
    with pytest.raises(ConfigError, match="unknown profile 'fast'"):
        config_from_params(RolloutConfig, "fast")
    for profile in ("smoke", "cpu", "cpu-llm", "paper", "smoke-scienceworld", "cpu-scienceworld"):
        config_from_params(RolloutConfig, profile)  # every profile's defaults are valid


def test_reproduce_names_the_notebook_cell_and_error(tmp_path):
    """A bad notebook parameter under papermill: one line with the notebook, the cell and the kit's message; the
    executed copy is kept and the stage is recorded as failed, not finished."""
    proc = subprocess.run([sys.executable, "-m", "steca_lib.reproduce", "--profile", "smoke", "--seeds", "0",
                           "--only", "02", "--runs-dir", str(tmp_path), "--no-figures", "--param", "n_samples=-1"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    line = assert_one_line_error(proc, "notebook 02_exploration.ipynb (seed 0) failed", "raised ConfigError",
                                 "RolloutConfig.n_samples = -1", "executed copy:")
    executed = Path(line.rsplit("executed copy: ", 1)[1].split(" [--debug")[0])
    assert executed.exists()
    record = json.loads((tmp_path / "smoke-seed0" / "reproduction.json").read_text())
    assert record["stages"]["02_exploration"]["status"] == "failed"
    assert not (tmp_path / "smoke-seed0" / "02_rollouts").exists()


def test_unknown_profile_under_papermill_is_one_line(tmp_path):
    from steca_lib.reproduce import NotebookFailed, run_notebooks

    with pytest.raises(NotebookFailed, match=r"03_step_rewards.ipynb \(seed 0\) failed: cell \[\d+\] raised "
                                             r"ConfigError: unknown profile 'bogus'; expected one of smoke, cpu"):
        run_notebooks("bogus", 0, tmp_path / "run", only=["03"])


def test_reproduce_stops_a_cell_that_runs_too_long(tmp_path):
    """``--cell-timeout``: a cell that does not finish in time ends the run with one line instead of a wait."""
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('profile = "smoke"\nseed = 0\nrun_dir = ""',
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import threading\nthreading.Event().wait(60)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, nb_dir / "00_wait.ipynb")
    from steca_lib.reproduce import NotebookFailed, run_notebooks

    with pytest.raises(NotebookFailed, match=r"00_wait.ipynb \(seed 0\) failed: a cell ran longer than 2 s"):
        run_notebooks("smoke", 0, tmp_path / "run", directory=nb_dir, cell_timeout=2)
    record = json.loads((tmp_path / "run" / "reproduction.json").read_text())
    assert record["stages"]["00_wait"]["status"] == "failed"


@pytest.fixture
def failing_endpoint():
    """An OpenAI-compatible endpoint on 127.0.0.1 that answers every request with HTTP 500."""
    pytest.importorskip("openai")
    from test_calibration import StubChat

    server = ThreadingHTTPServer(("127.0.0.1", 0), StubChat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    StubChat.script, StubChat.hits = [], []  # an empty script answers 500
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_persistent_500_from_the_reflector_is_one_line(scripted_run, failing_endpoint, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(scripted_run, run)
    proc = cli("calibration", "--profile", "smoke", "--run-dir", str(run), "--set", "reflector=chat",
               "--set", "reflector_retries=1", "--set", "reflector_timeout=2", "--set", "label=chat",
               "--set", "embedder=lexical",
               env={"STECA_REFLECT_BASE_URL": failing_endpoint, "STECA_REFLECT_MODEL": "stub", "OPENAI_API_KEY": "k"})
    assert_one_line_error(proc, "reflection endpoint failed after 1 retries")
    assert not (run / "04_calibration" / "chat" / "manifest.json").exists()


def test_rollout_benchmark_without_a_trained_model_says_what_to_run(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_rollouts.py"), "--run-dir",
                           str(tmp_path / "cpu-seed0")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert_one_line_error(proc, "no model at", "python -m steca_lib.reproduce --profile cpu --seeds 0 --only 00 01")
