"""Stage 00 as a stage: config from parameters, artifacts and manifest, skip on rerun, config mismatch."""

import json

import pytest

from steca_lib.artifacts import StageConfigMismatch
from steca_lib.config import EnvironmentConfig, config_from_params
from steca_lib.data import load_trajectories, read_jsonl
from steca_lib.expert_data import STAGE, load_tasks, run_environment_stage


def test_config_from_params():
    cfg = config_from_params(EnvironmentConfig, "cpu", n_seen=None, n_unseen=7)
    assert (cfg.n_train, cfg.n_seen, cfg.n_unseen) == (2400, 140, 7)
    with pytest.raises(TypeError, match="n_tarin"):
        config_from_params(EnvironmentConfig, "smoke", n_tarin=3)
    with pytest.raises(ValueError, match="profile"):
        config_from_params(EnvironmentConfig, "huge")


def test_stage_writes_artifacts_and_skips_on_rerun(tmp_path):
    cfg = config_from_params(EnvironmentConfig, "smoke", n_train=12, n_seen=6, n_unseen=6, run_dir=str(tmp_path))
    summary = run_environment_stage(cfg)
    out = tmp_path / STAGE
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["config"]["n_train"] == 12
    assert manifest["versions"]["torch"] and manifest["seed"] == 0
    assert summary["splits"]["train"]["expert_success"] == 1.0
    assert len(load_trajectories(out / "expert_train.json")) == 12
    assert [t.task_id for t in load_tasks(tmp_path, "unseen")] == [f"unseen_{i}" for i in range(6)]
    assert len(read_jsonl(out / "expert_stats.jsonl")) == 24
    before = (out / "expert_train.json").stat().st_mtime_ns
    assert run_environment_stage(cfg) == summary
    assert (out / "expert_train.json").stat().st_mtime_ns == before
    other = config_from_params(EnvironmentConfig, "smoke", n_train=13, run_dir=str(tmp_path))
    with pytest.raises(StageConfigMismatch, match="n_train"):
        run_environment_stage(other)
    # a run made before a field existed: it matches while the new field is at its default, not otherwise
    del manifest["config"]["noise"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert run_environment_stage(cfg) == summary
    with pytest.raises(StageConfigMismatch, match="noise"):
        run_environment_stage(config_from_params(EnvironmentConfig, "smoke", n_train=12, n_seen=6, n_unseen=6,
                                                 noise=0.3, run_dir=str(tmp_path)))
    dev = load_tasks(tmp_path, "dev")  # generated on demand like seen tasks, after the seen split's indices
    assert len(dev) == 60 and dev[0].task_id == "seen_6"


def test_interrupted_stage_is_redone(tmp_path):
    cfg = config_from_params(EnvironmentConfig, "smoke", n_train=5, n_seen=2, n_unseen=2, run_dir=str(tmp_path))
    (tmp_path / STAGE).mkdir(parents=True)
    (tmp_path / STAGE / "tasks_train.jsonl").write_text('{"half": ')  # a crashed earlier run, no manifest
    run_environment_stage(cfg)
    assert len(load_tasks(tmp_path, "train")) == 5


def test_same_seed_same_files(tmp_path):
    files = []
    for d in ("a", "b"):
        cfg = config_from_params(EnvironmentConfig, "smoke", n_train=10, n_seen=3, n_unseen=3,
                                 run_dir=str(tmp_path / d))
        run_environment_stage(cfg)
        files.append((tmp_path / d / STAGE / "expert_train.json").read_text())
    assert files[0] == files[1]


def test_results_of_other_inputs_are_not_resumed(tmp_path):
    """A stage made from a retrained model recomputes: its finished summary is stale and its partial JSONL goes."""
    from steca_lib.artifacts import discard_if_inputs_changed, finished_summary, model_inputs, write_manifest

    model_stage = tmp_path / "05_reinforced" / "steca"
    write_manifest(model_stage, "05", {"seed": 0}, {}, 0.0)
    inputs = model_inputs(model_stage / "model")
    assert inputs == {"model": json.loads((model_stage / "manifest.json").read_text())["finished_at"]}
    assert model_inputs(tmp_path / "elsewhere" / "model") is None

    out = tmp_path / "eval"
    out.mkdir()
    (out / "seen.jsonl").write_text('{"id": "a"}\n')
    assert discard_if_inputs_changed(out, inputs) == []  # first run: nothing to compare with
    assert discard_if_inputs_changed(out, inputs) == []  # same model: resume
    write_manifest(out, "eval", {"seed": 0}, {"n": 1}, 0.0, inputs)
    assert finished_summary(out, {"seed": 0}, inputs=inputs) == {"n": 1}
    retrained = {"model": "later"}
    assert finished_summary(out, {"seed": 0}, inputs=retrained) is None
    assert discard_if_inputs_changed(out, retrained) == [out / "seen.jsonl"]
    assert not (out / "seen.jsonl").exists()
