"""Run the numbered notebooks headless with papermill into a run folder, then refresh ``figures/``.

``python -m steca_lib.reproduce --profile cpu --seeds 0 1 2``. Each notebook runs with the parameters
``profile``, ``seed`` and ``run_dir``; its executed copy goes to ``<run>/notebooks/``. A notebook already
finished for that run with the same extra parameters is skipped (stages cache their artifacts, so a rerun with
other parameters only does what is new); a failing one stops the run and its executed copy is kept for inspection.
Seeds run one after another, so notebook 06 of the last seed compares all of them; its report and figures are
copied to ``figures/``, its report into ``docs/results.md`` between the ``results`` markers and its main table into
the README between the ``headline`` markers.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
import time
from pathlib import Path

from steca_lib import pipeline
from steca_lib.artifacts import package_versions
from steca_lib.comparison import sibling_runs
from steca_lib.config import PROFILES, parse_assignments, resolve_run_dir
from steca_lib.data import write_json_atomic
from steca_lib.errors import StecaError, one_line, run_cli

REPO = Path(__file__).resolve().parent.parent
log = logging.getLogger("steca_lib.reproduce")


def notebooks(directory: Path = REPO / "notebooks") -> list[Path]:
    """The stage notebooks in pipeline order (:mod:`steca_lib.pipeline`); in another folder, its numbered notebooks
    in name order."""
    if Path(directory).resolve() == (REPO / "notebooks").resolve():
        return [Path(directory) / f"{name}.ipynb" for name in pipeline.notebooks()]
    return sorted(p for p in Path(directory).glob("[0-9][0-9]_*.ipynb"))


class NotebookFailed(StecaError):
    """A stage notebook stopped on an error or a cell timeout; its executed copy is kept."""


#: Seconds one notebook cell may run before the reproduction stops it (``--cell-timeout``; 0 = no limit). The
#: longest cells of the cpu profile (SFT, notebook 06's methods) take well under an hour on 2 cores.
CELL_TIMEOUT = 7200


def notebook_failure(nb: Path, seed: int, out: Path, err: Exception, timeout: int | None) -> NotebookFailed:
    """One line that says which notebook and cell failed and why, and where the executed copy is."""
    from nbclient.exceptions import CellTimeoutError
    from papermill.exceptions import PapermillExecutionError

    if isinstance(err, CellTimeoutError):
        why = f"a cell ran longer than {timeout} s (--cell-timeout)"
    elif isinstance(err, PapermillExecutionError):
        lines = [ln for ln in str(err.evalue).splitlines() if ln.strip()]
        why = f"cell [{err.exec_count}] raised {err.ename}: {lines[0] if lines else ''}"
    else:
        why = f"{type(err).__name__}: {one_line(err)}"
    return NotebookFailed(f"notebook {nb.name} (seed {seed}) failed: {why}; executed copy: {out}")


def run_notebooks(profile: str, seed: int, run_dir: Path, only: list[str] | None = None,
                  directory: Path = REPO / "notebooks", params: dict | None = None,
                  cell_timeout: int | None = CELL_TIMEOUT) -> dict:
    """Execute every stage notebook (of ``directory``) for one seed, with ``params`` added to the parameters of
    each and at most ``cell_timeout`` seconds per cell (None or 0: no limit); returns the run's reproduction record.
    A failure is a :class:`NotebookFailed` (the record says ``failed``; the executed copy is kept)."""
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError
    from papermill.exceptions import PapermillExecutionError

    record_path = run_dir / "reproduction.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {"stages": {}}
    record.update(profile=profile, seed=seed, versions=package_versions(), python=sys.version.split()[0])
    for nb in notebooks(directory):
        if only and not any(nb.name.startswith(o) for o in only):
            continue
        stage = record["stages"].get(nb.stem, {})
        if stage.get("status") == "complete" and stage.get("params", {}) == (params or {}):
            log.info("skip %s (finished in %.1f s)", nb.name, stage["wall_time_s"])
            continue
        out = run_dir / "notebooks" / nb.name
        out.parent.mkdir(parents=True, exist_ok=True)
        log.info("run %s -> %s", nb.name, out)
        started = time.time()
        try:
            pm.execute_notebook(str(nb), str(out), kernel_name="python3", cwd=str(nb.parent), progress_bar=False,
                                parameters={**(params or {}), "profile": profile, "seed": seed,
                                            "run_dir": str(run_dir)},
                                execution_timeout=cell_timeout or None)
        except (PapermillExecutionError, CellTimeoutError) as err:
            record["stages"][nb.stem] = {"status": "failed", "wall_time_s": round(time.time() - started, 1),
                                         "executed_notebook": str(out), "params": params or {}}
            write_json_atomic(record, record_path)
            raise notebook_failure(nb, seed, out, err, cell_timeout) from err
        record["stages"][nb.stem] = {"status": "complete", "wall_time_s": round(time.time() - started, 1),
                                     "executed_notebook": str(out), "params": params or {}}
        write_json_atomic(record, record_path)
    return record


def refresh_figures(run_dir: Path, target: Path = REPO / "figures") -> list[Path]:
    """Make the repository's ``figures/`` the run's PNG figures: copy them, and remove figures the run did not make
    (so that every figure there comes from the same reproduction and settings)."""
    target.mkdir(exist_ok=True)
    made = sorted((run_dir / "figures").glob("*.png"))
    for stale in sorted(set(target.glob("*.png")) - {target / png.name for png in made}):
        stale.unlink()
    for png in made:
        shutil.copy2(png, target / png.name)
    return [target / png.name for png in made]


#: Seeds the reproduction runs when none are given (the issue's default: 3 for the embedded cpu profile).
DEFAULT_SEEDS = {"cpu": [0, 1, 2]}
#: The generated blocks: the full results in ``docs/results.md``, the headline (main table) in the README.
README_MARKERS = ("<!-- results:start -->", "<!-- results:end -->")
HEADLINE_MARKERS = ("<!-- headline:start -->", "<!-- headline:end -->")
RESULTS_PAGE = REPO / "docs" / "results.md"
#: Notebooks a profile runs when ``--only`` is not given. The ScienceWorld profiles run stages 01–05 (notebook 00 is
#: the household world's tour, 06 its comparison and recovery test) and leave ``figures/`` and the results pages alone.
PROFILE_NOTEBOOKS = {"smoke-scienceworld": ["01", "02", "03", "04", "05"],
                     "cpu-scienceworld": ["01", "02", "03", "04", "05"]}


def copy_report(run_dir: Path, target: Path = REPO / "figures") -> list[Path]:
    """Copy notebook 06's ``results.md`` / ``results.csv`` next to the figures."""
    copied = []
    for name in ("results.md", "results.csv"):
        src = run_dir / "06_report" / name
        if src.exists():
            shutil.copy2(src, target / name)
            copied.append(target / name)
    return copied


def stage_times(run_dir: Path) -> dict[str, float]:
    """Seconds per stage group from the stage manifests (a resumed stage counts its last session only). Other
    ``01_eval`` folders are CLI diagnostics (dev split, ALFWorld engine), not part of the reproduction."""
    out = {}
    for name, pattern in pipeline.time_rows():
        manifests = sorted(Path(run_dir).glob(f"{pattern}/manifest.json"))
        times = [json.loads(m.read_text())["wall_time_s"] for m in manifests]
        if times:
            out[name] = sum(times)
    return out


def run_seed(run: Path) -> int:
    """The seed of a run folder named ``<profile>-seed<k>``."""
    found = re.search(r"seed(\d+)$", Path(run).name)
    if not found:
        raise ValueError(f"{run} is not a <profile>-seed<k> run folder")
    return int(found.group(1))


def results_section(times: dict[int, dict[str, float]], profile: str, report: str) -> str:
    """The generated block of ``docs/results.md``: the report and the wall time of every stage per seed."""
    seeds = list(times)
    lines = ["| Stage | " + " | ".join(f"seed {s} (min)" for s in seeds) + " |", "|" + "---|" * (len(seeds) + 1)]
    for name, _ in pipeline.time_rows():
        if any(name in t for t in times.values()):
            lines.append(f"| {name} | " + " | ".join(f"{times[s][name] / 60:.1f}" if name in times[s] else "—"
                                                      for s in seeds) + " |")
    lines.append("| **total** | " + " | ".join(f"**{sum(times[s].values()) / 60:.0f}**" for s in seeds) + " |")
    return (f"_Generated by `python -m steca_lib.reproduce --profile {profile}` (seeds "
            f"{', '.join(map(str, seeds))}); do not edit by hand._\n\n{report}\n"
            "**Compute time per stage** (from the stage manifests; a stage that was interrupted and resumed counts "
            "its last session only):\n\n" + "\n".join(lines) + "\n")


def headline_section(profile: str, report: str) -> str:
    """The README's generated headline: the main table of notebook 06's report (``figures/results.md``)."""
    table = re.search(r"(?m)^\| Method \|.*\n(?:\|.*\n?)+", report)
    if table is None:
        raise ValueError("the report has no main table (a '| Method |' table)")
    return (f"_Generated by `python -m steca_lib.reproduce --profile {profile}` from `figures/results.md` (success %, "
            "95% interval over seeds; the paper's ALFWorld numbers beside it, not comparable in scale); do not edit "
            f"by hand._\n\n{table.group(0).rstrip()}\n")


def update_readme(section: str, readme: Path = RESULTS_PAGE, markers: tuple[str, str] = README_MARKERS) -> None:
    """Replace the text between ``markers`` in ``readme`` (default: the results block of ``docs/results.md``) with
    ``section``."""
    text = readme.read_text()
    start, end = markers
    if start not in text or end not in text:
        raise ValueError(f"{readme} has no {start} ... {end} block to refresh")
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    readme.write_text(pattern.sub(lambda _: f"{start}\n{section}{end}", text))


def main(argv: list[str] | None = None) -> int:
    """The command line; a failing notebook or a bad setting ends in one line and exit code 2 (``--debug``)."""
    return run_cli(reproduce, argv)


def reproduce(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=PROFILES, default="cpu")
    ap.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2 for cpu, 0 otherwise")
    ap.add_argument("--only", nargs="*", help="notebook prefixes to run, e.g. 00 01 (default: all)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="extra notebook parameter (JSON value), e.g. --param 'ablations=[]'")
    ap.add_argument("--runs-dir", default="", help="parent folder of the run folders (default: runs/)")
    ap.add_argument("--no-figures", action="store_true",
                    help="do not refresh figures/, docs/results.md and the README headline")
    ap.add_argument("--cell-timeout", type=int, default=CELL_TIMEOUT,
                    help=f"seconds a notebook cell may run (default {CELL_TIMEOUT}; 0 = no limit)")
    ap.add_argument("--debug", action="store_true", help="on an error, show the traceback (or STECA_DEBUG=1)")
    args = ap.parse_args(argv)
    if args.cell_timeout < 0:
        ap.error("--cell-timeout: expected seconds ≥ 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    def folder(seed: int) -> Path:
        return resolve_run_dir(str(Path(args.runs_dir) / f"{args.profile}-seed{seed}") if args.runs_dir else "",
                               args.profile, seed).resolve()

    try:
        params = parse_assignments(args.param)
    except ValueError as err:
        ap.error(f"--param: {err}")
    seeds = args.seeds or DEFAULT_SEEDS.get(args.profile, [0])
    records = {}
    for seed in seeds:
        only = args.only if args.only is not None else PROFILE_NOTEBOOKS.get(args.profile)
        records[seed] = run_notebooks(args.profile, seed, folder(seed), only, params=params,
                                      cell_timeout=args.cell_timeout)
        for name, st in records[seed]["stages"].items():
            log.info("seed %d  %-28s %-9s %7.1f s", seed, name, st["status"], st["wall_time_s"])
    last = folder(seeds[-1])
    if not args.no_figures and args.profile not in PROFILE_NOTEBOOKS:
        for p in refresh_figures(last) + copy_report(last):
            log.info("refreshed %s", p.relative_to(REPO) if p.is_relative_to(REPO) else p)
        report = last / "06_report" / "results.md"
        if report.exists():
            times = {run_seed(run): stage_times(run) for run in sibling_runs(last, args.profile)}  # seeds pooled
            update_readme(results_section(times, args.profile, report.read_text()))
            update_readme(headline_section(args.profile, report.read_text()), REPO / "README.md", HEADLINE_MARKERS)
            log.info("docs/results.md and the README headline refreshed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
