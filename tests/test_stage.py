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


def test_the_pipeline_is_declared_once_and_matches_the_notebooks():
    """``steca_lib.pipeline`` lists every stage notebook in order; reproduce runs them in that order and every
    stage's config and run function resolve."""
    from pathlib import Path

    from steca_lib import pipeline, reproduce

    folder = Path(__file__).resolve().parent.parent / "notebooks"
    assert [p.stem for p in reproduce.notebooks(folder)] == pipeline.notebooks()
    assert pipeline.notebooks() == sorted(p.stem for p in folder.glob("[0-9][0-9]_*.ipynb"))
    for s in pipeline.STAGES:
        if s.config:
            assert callable(s.run_function()) and s.config_class().__name__.endswith("Config")
            assert s.notebook[:2] == s.folder[:2]
    assert [name for name, _ in pipeline.time_rows()][0] == "00 environment"
    with pytest.raises(ValueError, match="unknown stage 'xx'"):
        pipeline.ensure("smoke", before="xx")


def test_ensure_runs_the_earlier_stages_once(tmp_path):
    from steca_lib import pipeline
    from steca_lib.artifacts import load_manifest

    pipeline.ensure("smoke", 0, str(tmp_path), before="01_sft")
    first = load_manifest(tmp_path / "00_environment")
    assert first["status"] == "complete" and not (tmp_path / "01_sft").exists()
    pipeline.ensure("smoke", 0, str(tmp_path), before="01_sft")  # finished: skipped
    assert load_manifest(tmp_path / "00_environment")["finished_at"] == first["finished_at"]


def test_readme_and_docs_links_resolve_and_the_front_door_is_small():
    """Every relative link of README.md and docs/*.md names a file that exists; the README stays under 10 KB with
    its generated headline block."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    pages = [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://", "mailto:")):
                assert (page.parent / target).exists(), f"{page.name}: broken link {target}"
    readme = (repo / "README.md").read_text()
    assert len(readme.encode()) <= 10_240 and "<!-- headline:start -->" in readme
    assert "<!-- results:start -->" in (repo / "docs" / "results.md").read_text()


def test_headline_is_the_reports_main_table_and_figures_come_from_one_run(tmp_path):
    from steca_lib import reproduce

    report = "**Main table**\n\n| Method | Seeds | Seen |\n|---|---|---|\n| SFT | 3 | 11.0 |\n\n**Other**\n\n| A |\n"
    section = reproduce.headline_section("cpu", report)
    assert section.endswith("| Method | Seeds | Seen |\n|---|---|---|\n| SFT | 3 | 11.0 |\n") and "| A |" not in section
    readme = tmp_path / "README.md"
    readme.write_text("top\n<!-- headline:start -->\nold\n<!-- headline:end -->\nend\n")
    reproduce.update_readme(section, readme, reproduce.HEADLINE_MARKERS)
    assert "old" not in readme.read_text() and "| SFT | 3 | 11.0 |" in readme.read_text()
    run, figures = tmp_path / "run", tmp_path / "figures"
    (run / "figures").mkdir(parents=True)
    figures.mkdir()
    (run / "figures" / "a.png").write_bytes(b"new")
    (figures / "a.png").write_bytes(b"old")
    (figures / "stale.png").write_bytes(b"older settings")
    assert reproduce.refresh_figures(run, figures) == [figures / "a.png"]
    assert sorted(p.name for p in figures.iterdir()) == ["a.png"] and (figures / "a.png").read_bytes() == b"new"
