"""Stage 06: the deviated-history cases (the paper's Fig. 4), the tables over seeds, and the reproduction runner."""

import json
import math
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from scripted import ScriptedBackend

from steca_lib import comparison, reproduce
from steca_lib.artifacts import load_manifest, write_manifest
from steca_lib.calibration import CalibrationConfig, load_set, run_calibration_stage
from steca_lib.config import EnvironmentConfig, config_from_params, parse_assignments
from steca_lib.data import write_jsonl_atomic
from steca_lib.evaluation import EvalConfig, eval_inputs
from steca_lib.metrics import paired_bootstrap_diff, seed_ci
from steca_lib.prompts import parse_react_action
from steca_lib.recovery import RecoveryConfig, run_recovery_stage, seen_cases, unseen_cases
from steca_lib.rollouts import expert_paths


@pytest.fixture(scope="module")
def calibrated_run(scripted_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("recovery") / "run"
    shutil.copytree(scripted_run, run)
    run_calibration_stage(config_from_params(CalibrationConfig, "smoke", run_dir=str(run), embedder="lexical"))
    return run


def test_recovery_cases_hold_a_deviated_action_in_a_real_state(calibrated_run):
    cfg = config_from_params(RecoveryConfig, "smoke", run_dir=str(calibrated_run), n_cases=6)
    seen = seen_cases(cfg)
    assert 1 <= len(seen) <= 6 and len(seen) == min(6, len(load_set(calibrated_run, "calibrated")))
    paths = {p.task.task_id: p for p in expert_paths(calibrated_run, None)}
    for key, ep in seen.items():
        task_id, j = key.rsplit("/", 1)
        deviated = parse_react_action(ep.messages[-2]["content"])
        assert ep.messages[-1]["role"] == "user" and ep.messages[-2]["role"] == "assistant"
        assert deviated != paths[task_id].actions[int(j)] and ep.env.steps == int(j) + 1
    unseen = unseen_cases(cfg)
    assert len(unseen) == 6
    for key, ep in unseen.items():
        task_id, j = key.rsplit("/", 1)
        path = {p.task.task_id: p for p in expert_paths(calibrated_run, None, "unseen")}[task_id]
        target = parse_react_action(ep.messages[-2]["content"]).removeprefix("go to ")
        assert target in path.task.scene.receptacles and f"go to {target}" != path.actions[int(j)]
        env, _ = path.prefix(int(j), 40)
        assert ep.messages[-1]["content"] == f"Observation: {env.step(f'go to {target}').observation}"
        assert ep.messages[:-2] == path.messages[:3 + 2 * int(j)]
    assert list(unseen_cases(cfg)) == list(unseen)  # seeded


def test_recovery_stage_plays_every_case_and_skips_when_done(calibrated_run):
    cfg = config_from_params(RecoveryConfig, "smoke", run_dir=str(calibrated_run), n_cases=6, label="scripted",
                             model_dir=str(calibrated_run / "none"))
    backend = ScriptedBackend(calibrated_run, mistake_rate=0.0)  # after the detour: the expert's remaining actions
    summary = run_recovery_stage(cfg, backend=backend)
    paths = {p.task.task_id: p for p in expert_paths(calibrated_run, None, "unseen")}

    def scripted_outcome(key, ep):  # what that agent must reach: expert suffix, then its last action repeated
        task_id, j = key.rsplit("/", 1)
        actions = paths[task_id].actions
        for a in actions[int(j):] + [actions[-1]] * cfg.max_steps:
            result = ep.env.step(a)
            if result.done:
                return result.reward >= 1.0
        return False

    expected = [scripted_outcome(k, ep) for k, ep in unseen_cases(cfg).items()]
    assert summary["unseen"]["n"] == 6 and summary["unseen"]["success"] == sum(expected) / 6
    assert 0 < sum(expected) < 6  # some detours are harmless, some strand the expert's plan
    assert summary["seen"]["n"] == len(seen_cases(cfg))
    calls = backend.calls
    assert run_recovery_stage(cfg, backend=backend) == summary and backend.calls == calls


def test_seed_interval_is_student_t():
    mean, low, high = seed_ci([0.2, 0.3, 0.4])
    assert mean == pytest.approx(0.3)
    assert high - mean == pytest.approx(4.303 * 0.1 / math.sqrt(3)) and mean - low == pytest.approx(high - mean)
    assert math.isnan(seed_ci([0.5])[1])


def fake_eval(run, key, seen, unseen, families=("pick_and_place_simple",)):
    """A finished evaluation of ``key`` in ``run`` with the given per-task successes."""
    folder = comparison.eval_folder(run, key, "smoke")
    summary = {}
    for split, outcomes in (("seen", seen), ("unseen", unseen)):
        rows = [{"id": f"{split}_{i}", "family": families[i % len(families)], "meta": {"success": bool(o)}}
                for i, o in enumerate(outcomes)]
        write_jsonl_atomic(rows, folder / f"{split}.jsonl")
        summary[split] = {"success": sum(outcomes) / len(outcomes), "ci_low": 0.0, "ci_high": 1.0}
    if load_manifest(Path(run) / "00_environment") is None:  # the stage the evaluation's inputs name
        write_manifest(Path(run) / "00_environment", "00_environment", EnvironmentConfig(), {}, time.time())
    write_manifest(folder, "eval", EvalConfig(), summary, time.time(),
                   eval_inputs(run, comparison.sft_model_dir(run)))


def test_main_table_pools_seeds_with_the_papers_numbers(tmp_path):
    runs = [tmp_path / f"smoke-seed{s}" for s in range(3)]
    for s, run in enumerate(runs):
        stats = [{"task_id": f"{split}_{i}", "steps": 5 + 5 * i} for split in ("seen", "unseen") for i in range(4)]
        write_jsonl_atomic(stats, run / "00_environment" / "expert_stats.jsonl")
        fake_eval(run, "sft", [1, 0, 0, 0], [1, 1, 0, 0])
        fake_eval(run, "steca", [1, 1, 0, s % 2], [1, 1, 1, 0])
    fake_eval(runs[0], "ipr", [1, 1, 1, 1], [0, 0, 0, 0])  # one seed only: its bootstrap interval is kept
    assert comparison.sibling_runs(runs[1], "smoke") == [r.resolve() for r in runs]
    rows = comparison.comparison_rows(runs, ["sft", "ipr", "steca", "rft"], "smoke")
    assert [r["key"] for r in rows] == ["sft", "ipr", "steca"]  # rft has no results
    sft, ipr, steca = rows
    assert sft["seeds"] == 3 and sft["seen"]["success"] == 0.25 and sft["seen"]["ci_low"] == 0.25
    assert steca["seen"]["success"] == pytest.approx((0.5 + 0.75 + 0.5) / 3)
    assert steca["seen"]["ci"] == "3 seeds (t)" and steca["seen"]["ci_low"] < steca["seen"]["success"]
    assert ipr["seeds"] == 1 and ipr["seen"]["ci"] == "tasks (bootstrap)" and ipr["seen"]["ci_high"] == 1.0
    assert (steca["paper_seen"], steca["paper_unseen"]) == (74.3, 76.1) and sft["paper_seen"] is None
    table = comparison.markdown_table(rows)
    assert "| STeCa | 3 | 58.3 [" in table and "| 74.3 | 76.1 | 70.9 |" in table
    said = comparison.verdict(rows)
    assert any("STeCa is 33.3 points above SFT" in s for s in said)
    assert any("below IPR" in s and "seen" in s for s in said)
    length = comparison.breakdown(runs, ["sft"], "smoke", by="length")["SFT"]
    assert length == {"≤ 7": (1.0, 6), "8–13": (0.5, 6), "> 13": (0.0, 12)}
    text = comparison.write_report(runs, ["sft", "steca"], [], "smoke", tmp_path / "report")
    assert text.count("| SFT |") == 2  # the main table's row and the paired table's (STeCa minus SFT)
    assert (tmp_path / "report" / "results.csv").read_text().count("\n") == 5


def test_paired_differences_use_the_same_tasks_and_seeds(tmp_path):
    runs = [tmp_path / f"smoke-seed{s}" for s in range(2)]
    for run in runs:
        fake_eval(run, "sft", [1, 0, 0, 0], [1, 1, 0, 0])
        fake_eval(run, "steca", [1, 1, 0, 0], [1, 1, 0, 0])
    fake_eval(runs[0], "ipr", [0, 0, 0, 0], [1, 1, 1, 1])  # one seed only
    sft, ipr = comparison.paired_rows(runs, ["sft", "ipr", "steca", "rft"], "smoke")
    assert (sft["key"], sft["seeds"], ipr["seeds"]) == ("sft", 2, 1)
    assert sft["seen"]["diff"] == pytest.approx(0.25) and 0.0 <= sft["seen"]["ci_low"] < 0.25 < sft["seen"]["ci_high"]
    assert sft["unseen"] == {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0}  # same outcomes on every task
    assert ipr["seen"]["diff"] == pytest.approx(0.5) and ipr["unseen"]["diff"] == pytest.approx(-0.5)
    table = comparison.paired_table([sft, ipr])
    assert "| SFT | 2 | +25.0 [" in table and "| IPR (1 iteration) | 1 | +50.0 [" in table
    assert "STeCa minus each method" in comparison.write_report(runs, ["sft", "steca"], [], "smoke", tmp_path / "r")


def test_paired_bootstrap_holds_seeds_fixed():
    # a seed where the two always agree adds no spread; the other seed's tasks do
    mean, low, high = paired_bootstrap_diff([([1, 1, 0, 0], [1, 1, 0, 0]), ([1, 1, 1, 1], [0, 0, 1, 1])])
    assert mean == pytest.approx(0.25) and low < mean < high and high <= 0.5 and low >= 0.0
    assert math.isnan(paired_bootstrap_diff([])[0])


def test_readme_block_is_refreshed_and_nothing_else(tmp_path):
    readme = tmp_path / "README.md"
    start, end = reproduce.README_MARKERS
    readme.write_text(f"# Kit\n\nbefore\n{start}\nold table\n{end}\nafter\n")
    reproduce.update_readme("new table\n", readme)
    assert readme.read_text() == f"# Kit\n\nbefore\n{start}\nnew table\n{end}\nafter\n"
    (tmp_path / "other.md").write_text("no markers")
    with pytest.raises(ValueError, match="results:start"):
        reproduce.update_readme("x", tmp_path / "other.md")
    for seed, seconds in ((0, 60), (1, 90)):
        write_manifest(tmp_path / f"s{seed}" / "01_sft", "01_sft", EvalConfig(), {}, time.time() - seconds)
    write_manifest(tmp_path / "s1" / "05_eval" / "a", "e", EvalConfig(), {}, time.time() - 6)
    write_manifest(tmp_path / "s1" / "05_eval" / "b", "e", EvalConfig(), {}, time.time() - 6)
    write_manifest(tmp_path / "s0" / "01_eval" / "sft", "e", EvalConfig(), {}, time.time() - 30)
    write_manifest(tmp_path / "s0" / "01_eval" / "sft-dev", "e", EvalConfig(), {}, time.time() - 600)  # diagnostic
    times = {s: reproduce.stage_times(tmp_path / f"s{s}") for s in (0, 1)}
    section = reproduce.results_section(times, "cpu", "T\n")
    assert "| 01 SFT | 1.0 | 1.5 |" in section and "| 05 evaluation (every method) | — | 0.2 |" in section
    assert "| 01 evaluation | 0.5 | — |" in section
    assert reproduce.run_seed(tmp_path / "cpu-seed12") == 12
    with pytest.raises(ValueError, match="seed"):
        reproduce.run_seed(tmp_path / "elsewhere")


def test_reproduction_skips_finished_notebooks_and_stops_at_a_failure(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    for name, src in (("00_ok", "open('done.txt', 'a').write(f'{seed} {extra}')"),
                      ("01_fails", "raise RuntimeError('x')"),
                      ("02_never", "open('never.txt', 'w')")):
        params = nbformat.v4.new_code_cell("profile = 'smoke'\nseed = 0\nrun_dir = ''\nextra = None",
                                           metadata={"tags": ["parameters"]})
        nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(src)],
                                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                               "language": "python"}})
        nbformat.write(nb, nbs / f"{name}.ipynb")
    run = tmp_path / "run"
    with pytest.raises(Exception, match="RuntimeError"):
        reproduce.run_notebooks("smoke", 7, run, directory=nbs, params=parse_assignments(["extra=[1]"]))
    record = json.loads((run / "reproduction.json").read_text())
    assert record["stages"]["00_ok"]["status"] == "complete" and record["stages"]["01_fails"]["status"] == "failed"
    assert (run / "notebooks" / "01_fails.ipynb").exists() and not (nbs / "never.txt").exists()
    assert (nbs / "done.txt").read_text() == "7 [1]"
    with pytest.raises(Exception, match="RuntimeError"):  # a rerun with the same parameters skips it
        reproduce.run_notebooks("smoke", 7, run, directory=nbs, params=parse_assignments(["extra=[1]"]))
    assert (nbs / "done.txt").read_text() == "7 [1]"
    with pytest.raises(Exception, match="RuntimeError"):  # other parameters run it again
        reproduce.run_notebooks("smoke", 7, run, directory=nbs, params=parse_assignments(["extra=[2]"]))
    assert (nbs / "done.txt").read_text() == "7 [1]7 [2]"


def test_one_registry_describes_every_method_once():
    """``steca_lib.methods``: stage 05's variants are the methods with a loss; every method and ablation makes a
    valid stage-05 config (or none, for SFT) with a distinct evaluation folder and label."""
    from steca_lib import methods
    from steca_lib.reinforced import VARIANTS

    assert VARIANTS is methods.VARIANTS and set(VARIANTS) == {"rft", "eto", "ipr", "sft+dpo", "wo-rt", "steca"}
    keys = [*methods.METHODS, *methods.ABLATIONS]
    labels = [methods.method(k).label for k in keys]
    assert len(set(labels)) == len(labels)
    folders = {k: comparison.eval_label(Path("runs/smoke-seed0"), k, "smoke") for k in keys}
    assert len(set(folders.values())) == len(folders) and folders["sft"] == "sft" and folders["eto-3"] == "eto-r3"
    assert comparison.reinforced_config("smoke", 0, "", "no-calibrated").sets == ("explored", "expert_sub",
                                                                                 "traj_pairs")
    assert methods.method("steca").paper == (74.3, 76.1) and methods.method("sft").loss is None
    with pytest.raises(KeyError, match="unknown method 'ppo'"):
        methods.method("ppo")
