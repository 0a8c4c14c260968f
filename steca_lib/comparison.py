"""Stage 06: train and evaluate every method and ablation of a run, then compare them over seeds.

Methods are the paper's Table 1 rows that the kit can run (SFT, RFT, ETO, IPR, STeCa data with SFT+DPO, STeCa
without reinforced training, STeCa); ablations are its Tables 3, 6 and 7 and the deviation-rule switch. Each one is
a stage-04 configuration (when it needs other data) plus a stage-05 configuration, so results are cached per run
folder and a rerun only evaluates what is missing. Tables pool the run folders of several seeds: mean success over
seeds with a Student-t 95% interval (with one seed, the bootstrap interval over tasks), beside the paper's numbers.
"""

from __future__ import annotations

import csv
from pathlib import Path

from steca_lib import pipeline
from steca_lib.artifacts import load_manifest
from steca_lib.calibration import CalibrationConfig, run_calibration_stage
from steca_lib.config import config_from_params, resolve_run_dir
from steca_lib.data import read_jsonl, write_json_atomic
from steca_lib.evaluation import EvalConfig, eval_inputs, run_eval_stage
from steca_lib.iteration import iterate
from steca_lib.methods import ABLATIONS, method, stage05_settings
from steca_lib.metrics import paired_bootstrap_diff, seed_ci
from steca_lib.recovery import RecoveryConfig, recovery_inputs, run_recovery_stage
from steca_lib.reinforced import NoTrainingData, ReinforcedConfig, run_reinforced_stage
from steca_lib.sft import model_dir as sft_model_dir


#: Ablations notebook 06 runs when its ``ablations`` parameter is None: all of them, except in the smoke profile
#: (CI), which runs two that exercise both kinds (another training set; another calibration).
DEFAULT_ABLATIONS = {"smoke": ["no-calibrated", "self-reflection"]}


def default_ablations(profile: str) -> list[str]:
    return DEFAULT_ABLATIONS.get(profile, list(ABLATIONS))


#: Seeds that also train the ablations when notebook 06's ``ablation_seeds`` is None: seed 0, except in the ``cpu``
#: profile, where the eight ablations (a training and an evaluation each) would double a seed's time (opt in: [0]).
DEFAULT_ABLATION_SEEDS = {"cpu": []}


def default_ablation_seeds(profile: str) -> list[int]:
    return DEFAULT_ABLATION_SEEDS.get(profile, [0])


SPLITS = ("seen", "unseen")


def reinforced_config(profile: str, seed: int, run_dir: str, key: str) -> ReinforcedConfig | None:
    """The stage-05 config of a method (ablations train STeCa), or None for SFT."""
    settings = stage05_settings(key)
    if settings is None:
        return None
    return config_from_params(ReinforcedConfig, profile, seed=seed, run_dir=run_dir, **settings)


def eval_label(run: Path, key: str, profile: str) -> str:
    """The folder name of a method's evaluation: ``sft``, the stage-05 model's name, plus ``-r<k>`` when iterated."""
    cfg = reinforced_config(profile, 0, str(run), key)
    if cfg is None:
        return "sft"
    rounds = method(key).rounds
    return cfg.name + (f"-r{rounds}" if rounds > 1 else "")


def eval_folder(run: Path, key: str, profile: str) -> Path:
    """Where a method's evaluation of run ``run`` lives."""
    label = eval_label(run, key, profile)
    return Path(run) / ("01_eval" if label == "sft" else "05_eval") / label


def run_method(profile: str, seed: int, run_dir: str, key: str, recovery: bool = False) -> dict:
    """Make a method's data and model if missing, evaluate it on the test splits and, with ``recovery``, on the
    deviated-history cases. A method without training data (e.g. an empty set in a small run) is reported as
    skipped with the reason."""
    m = method(key)
    base = {"profile": profile, "seed": seed, "run_dir": run_dir}
    if m.calibration is not None:
        run_calibration_stage(config_from_params(CalibrationConfig, **base, **m.calibration))
    rcfg = reinforced_config(profile, seed, run_dir, key)
    result = {"key": key, "label": m.label, "train": None}
    label = eval_label(resolve_run_dir(run_dir, profile, seed), key, profile)
    if rcfg is None:
        model, stage = "", "01_eval"
    else:
        try:
            result["train"] = (iterate(profile, seed, run_dir, rcfg.variant, m.rounds)[-1] if m.rounds > 1
                               else run_reinforced_stage(rcfg))
        except NoTrainingData as err:
            return {**result, "skipped": str(err)}
        model, stage = result["train"]["model_dir"], "05_eval"
    result["eval"] = run_eval_stage(config_from_params(EvalConfig, **base, label=label, model_dir=model), stage=stage)
    if recovery:
        result["recovery"] = run_recovery_stage(config_from_params(RecoveryConfig, **base, label=label,
                                                                   model_dir=model))
    return result


def prepare_run(profile: str, seed: int, run_dir: str) -> None:
    """Stages 00–04 of a run with the profile's settings (each returns at once when already done)."""
    pipeline.ensure(profile, seed, run_dir, before="05_reinforced")


def verdict(rows: list[dict], ours: str = "steca") -> list[str]:
    """Plain sentences: for each other method and split, STeCa's difference and whether the 95% intervals
    overlap (overlap = no clear difference at this sample size)."""
    by_key = {r["key"]: r for r in rows}
    if ours not in by_key:
        return []
    out = []
    for r in rows:
        if r["key"] == ours:
            continue
        for split in SPLITS:
            a, b = by_key[ours][split], r[split]
            diff = 100 * (a["success"] - b["success"])
            overlap = not (a["ci_low"] > b["ci_high"] or b["ci_low"] > a["ci_high"])
            gap = f"{abs(diff):4.1f} points {'above' if diff > 0 else 'below'}" if round(diff, 1) else "equal to"
            out.append(f"{split:>6}: STeCa is {gap} {r['method']}"
                       + (" (intervals overlap: not a clear difference)" if overlap else " (intervals do not overlap)"))
    return out


def sibling_runs(run: Path, profile: str) -> list[Path]:
    """The run folders of every seed of this profile next to ``run`` (``<profile>-seed<k>``), ``run`` included."""
    run = Path(run)
    found = {p.resolve() for p in run.parent.glob(f"{profile}-seed*") if p.is_dir()} | {run.resolve()}
    return sorted(found)


def _current(run: Path, key: str, profile: str, stage: str = "eval") -> dict | None:
    """The finished manifest of a method's evaluation (or recovery) in ``run``, or None when missing or made from
    an older model (its inputs differ from what the stage would record now)."""
    folder = eval_folder(run, key, profile)
    if stage == "06_recovery":
        folder = Path(run) / "06_recovery" / folder.name
    manifest = load_manifest(folder)
    if not manifest or manifest.get("status") != "complete":
        return None
    model, cfg = manifest["config"].get("model_dir") or sft_model_dir(run), manifest["config"]
    expected = (recovery_inputs(run, cfg["calibration"], model) if stage == "06_recovery"
                else eval_inputs(run, model, cfg.get("alfworld_data", "")))
    return manifest if manifest.get("inputs") == expected else None


def _summaries(runs: list[Path], key: str, profile: str, stage: str) -> list[dict]:
    return [m["summary"] for run in runs if (m := _current(run, key, profile, stage)) is not None]


def _cell(summaries: list[dict], split: str) -> dict:
    values = [s[split]["success"] for s in summaries]
    if len(values) == 1:
        s = summaries[0][split]
        return {"success": s["success"], "ci_low": s["ci_low"], "ci_high": s["ci_high"], "ci": "tasks (bootstrap)"}
    mean, low, high = seed_ci(values)
    return {"success": mean, "ci_low": low, "ci_high": high, "ci": f"{len(values)} seeds (t)"}


def comparison_rows(runs: list[Path], keys: list[str], profile: str, stage: str = "eval") -> list[dict]:
    """One row per method with results: label, seeds, per-split success and 95% CI, and the paper's numbers."""
    rows = []
    for key in keys:
        summaries = _summaries(runs, key, profile, stage)
        if not summaries:
            continue
        paper = method(key).paper or (None, None)
        row = {"key": key, "method": method(key).label, "seeds": len(summaries)}
        for split, published in zip(SPLITS, paper):
            row[split] = _cell(summaries, split)
            row[f"paper_{split}"] = published if stage == "eval" else None
        row["paper_average"] = method(key).paper_average if stage == "eval" else None
        rows.append(row)
    return rows


def _outcomes(run: Path, key: str, profile: str, split: str) -> dict[str, bool]:
    """Task id → success of a method's finished evaluation in ``run`` (empty when missing or stale)."""
    if _current(run, key, profile) is None:
        return {}
    return {r["id"]: bool(r["meta"]["success"]) for r in read_jsonl(eval_folder(run, key, profile) / f"{split}.jsonl")}


def paired_rows(runs: list[Path], keys: list[str], profile: str, ours: str = "steca") -> list[dict]:
    """STeCa minus each other method, per split: the mean paired difference over the seeds both have, on the same
    tasks, with a 95% bootstrap interval over tasks within each seed (seeds fixed). Pairing removes what the
    methods share, such as a seed's SFT warm-up, which the pooled table's intervals over seeds carry."""
    base = {(run, split): _outcomes(run, ours, profile, split) for run in runs for split in SPLITS}
    rows = []
    for key in (k for k in keys if k != ours):
        row = {"key": key, "method": method(key).label, "seeds": 0}
        for split in SPLITS:
            groups = []
            for run in runs:
                a, b = base[run, split], _outcomes(run, key, profile, split)
                common = sorted(a.keys() & b.keys())
                if common:
                    groups.append(([a[t] for t in common], [b[t] for t in common]))
            diff, low, high = paired_bootstrap_diff(groups)
            row[split] = {"diff": diff, "ci_low": low, "ci_high": high}
            row["seeds"] = max(row["seeds"], len(groups))
        if row["seeds"]:
            rows.append(row)
    return rows


def paired_table(rows: list[dict]) -> str:
    """The paired differences as a Markdown table (points, 95% interval)."""
    lines = ["| STeCa minus | Seeds | Seen (points) | Unseen (points) |", "|---|---|---|---|"]
    for r in rows:
        cells = [f"{100 * r[s]['diff']:+.1f} [{100 * r[s]['ci_low']:+.1f}, {100 * r[s]['ci_high']:+.1f}]"
                 for s in SPLITS]
        lines.append(f"| {r['method']} | {r['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "—" if x is None or x != x else f"{100 * x:.1f}"


def markdown_table(rows: list[dict], paper: bool = True) -> str:
    """The comparison as a Markdown table (success % with its 95% interval; the paper's ALFWorld numbers)."""
    head = ["Method", "Seeds", "Seen", "Unseen"] + (["Paper ALFWorld seen", "unseen", "Paper avg"] if paper else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], str(r["seeds"])]
        for split in SPLITS:
            c = r[split]
            cells.append(f"{_pct(c['success'])} [{_pct(c['ci_low'])}, {_pct(c['ci_high'])}]")
        if paper:
            cells += [("—" if r[f"paper_{s}"] is None else f"{r[f'paper_{s}']:.1f}") for s in SPLITS]
            cells.append("—" if r["paper_average"] is None else f"{r['paper_average']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> None:
    """Flat CSV of comparison rows (one line per method and split)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "split", "seeds", "success", "ci_low", "ci_high", "ci", "paper"])
        for r in rows:
            for split in SPLITS:
                c = r[split]
                w.writerow([r["method"], split, r["seeds"], c["success"], c["ci_low"], c["ci_high"], c["ci"],
                            r[f"paper_{split}"]])


def episode_records(runs: list[Path], key: str, profile: str) -> list[dict]:
    """Every test episode of a method over the given runs, tagged with the run and the expert's length."""
    out = []
    for run in runs:
        folder = eval_folder(run, key, profile)
        if _current(run, key, profile) is None:
            continue
        steps = {r["task_id"]: r["steps"] for r in read_jsonl(Path(run) / "00_environment" / "expert_stats.jsonl")}
        for split in SPLITS:
            for r in read_jsonl(folder / f"{split}.jsonl"):
                out.append({"run": Path(run).name, "split": split, "family": r["family"],
                            "expert_steps": steps[r["id"]], "success": bool(r["meta"]["success"])})
    return out


LENGTH_BINS = (("≤ 7", 0, 7), ("8–13", 8, 13), ("> 13", 14, 10_000))


def breakdown(runs: list[Path], keys: list[str], profile: str, by: str) -> dict[str, dict[str, tuple[float, int]]]:
    """Success and episode count per method and group, pooled over runs and both test splits; ``by`` is
    ``family`` or ``length`` (the expert's steps, in the paper's Table 9 bins)."""
    table = {}
    for key in keys:
        records = episode_records(runs, key, profile)
        if not records:
            continue
        groups: dict[str, list[bool]] = {}
        for r in records:
            if by == "length":
                g = next(name for name, lo, hi in LENGTH_BINS if lo <= r["expert_steps"] <= hi)
            else:
                g = r[by]
            groups.setdefault(g, []).append(r["success"])
        table[method(key).label] = {g: (sum(v) / len(v), len(v)) for g, v in groups.items()}
    return table


def write_report(runs: list[Path], keys: list[str], ablations: list[str], profile: str, out: Path) -> str:
    """``results.md`` (main table, ablations, recovery) and ``results.csv`` in ``out``; returns the Markdown."""
    main = comparison_rows(runs, keys, profile)
    parts = ["**Main table** (success %, 95% CI; ALFWorld-paper numbers for reference, not comparable in scale):",
             "", markdown_table(main)]
    paired = paired_rows(runs, keys, profile)
    if paired:
        parts += ["", "**STeCa minus each method** (percentage points on the same tasks and seeds; 95% bootstrap "
                  "over tasks within each seed, seeds fixed):", "", paired_table(paired)]
    abl = comparison_rows(runs, ["steca", *ablations], profile)
    if len(abl) > 1:
        parts += ["", "**Ablations** (STeCa first):", "", markdown_table(abl)]
    rec = comparison_rows(runs, keys, profile, stage="06_recovery")
    if rec:
        parts += ["", "**Continuing after a deviated action** (the paper's Fig. 4; seen = calibrated training cases, "
                  "unseen = detours in unseen tasks):", "", markdown_table(rec, paper=False)]
    text = "\n".join(parts) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)
    write_csv(main + [r for r in abl if r["key"] != "steca"], out / "results.csv")
    write_json_atomic({"runs": [str(r) for r in runs], "main": main, "paired": paired, "ablations": abl,
                       "recovery": rec},
                      out / "results.json")
    return text
