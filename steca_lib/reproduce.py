"""Run the numbered notebooks headless with papermill into a run folder, then refresh ``figures/``.

``python -m steca_lib.reproduce --profile cpu --seeds 0 1 2``. Each notebook runs with the parameters
``profile``, ``seed`` and ``run_dir``; its executed copy goes to ``<run>/notebooks/``. A notebook already
finished for that run is skipped; a failing one stops the run and its executed copy is kept for inspection.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from steca_lib.artifacts import package_versions
from steca_lib.config import PROFILES, resolve_run_dir
from steca_lib.data import write_json_atomic

REPO = Path(__file__).resolve().parent.parent
log = logging.getLogger("steca_lib.reproduce")


def notebooks(directory: Path = REPO / "notebooks") -> list[Path]:
    """The numbered stage notebooks, in order."""
    return sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))


def run_notebooks(profile: str, seed: int, run_dir: Path, only: list[str] | None = None) -> dict:
    """Execute every stage notebook for one seed; returns the run's reproduction record."""
    import papermill as pm

    record_path = run_dir / "reproduction.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {"stages": {}}
    record.update(profile=profile, seed=seed, versions=package_versions(), python=sys.version.split()[0])
    for nb in notebooks():
        if only and not any(nb.name.startswith(o) for o in only):
            continue
        stage = record["stages"].get(nb.stem, {})
        if stage.get("status") == "complete":
            log.info("skip %s (finished in %.1f s)", nb.name, stage["wall_time_s"])
            continue
        out = run_dir / "notebooks" / nb.name
        out.parent.mkdir(parents=True, exist_ok=True)
        log.info("run %s -> %s", nb.name, out)
        started = time.time()
        try:
            pm.execute_notebook(str(nb), str(out), kernel_name="python3", cwd=str(nb.parent), progress_bar=False,
                                parameters={"profile": profile, "seed": seed, "run_dir": str(run_dir)})
        except Exception:
            record["stages"][nb.stem] = {"status": "failed", "wall_time_s": round(time.time() - started, 1),
                                         "executed_notebook": str(out)}
            write_json_atomic(record, record_path)
            raise
        record["stages"][nb.stem] = {"status": "complete", "wall_time_s": round(time.time() - started, 1),
                                     "executed_notebook": str(out)}
        write_json_atomic(record, record_path)
    return record


def refresh_figures(run_dir: Path, target: Path = REPO / "figures") -> list[Path]:
    """Copy the run's PNG figures into the repository's ``figures/`` folder."""
    target.mkdir(exist_ok=True)
    copied = []
    for png in sorted((run_dir / "figures").glob("*.png")):
        shutil.copy2(png, target / png.name)
        copied.append(target / png.name)
    return copied


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=PROFILES, default="cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--only", nargs="*", help="notebook prefixes to run, e.g. 00 01 (default: all)")
    ap.add_argument("--runs-dir", default="", help="parent folder of the run folders (default: runs/)")
    ap.add_argument("--no-figures", action="store_true", help="do not refresh figures/")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    def folder(seed: int) -> Path:
        return resolve_run_dir(str(Path(args.runs_dir) / f"{args.profile}-seed{seed}") if args.runs_dir else "",
                               args.profile, seed).resolve()

    for seed in args.seeds:
        record = run_notebooks(args.profile, seed, folder(seed), args.only)
        for name, st in record["stages"].items():
            log.info("seed %d  %-28s %-9s %7.1f s", seed, name, st["status"], st["wall_time_s"])
    if not args.no_figures:
        for p in refresh_figures(folder(args.seeds[0])):
            log.info("figure %s", p.relative_to(REPO) if p.is_relative_to(REPO) else p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
