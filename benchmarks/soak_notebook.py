"""Run one notebook headless with papermill many times and count the runs that hang or fail.

``python benchmarks/soak_notebook.py notebooks/00_environment_tour.ipynb --runs 50``. Each run has a per-cell
execution timeout (``--cell-timeout``). A run counts as a hang when a cell hits it, and as a stall when a cell took
at least half of it and then went on: nbclient waited out its timeout for a reply that had already come, and
without a timeout it would have waited forever. The cell is reported for both. Runs share one run folder (the first
builds the stage's artifacts, later ones reuse them, as a class would), or each gets a new one with ``--fresh``.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path


def slowest_cell(executed: Path) -> tuple[int | None, float]:
    """The code cell (1-based among code cells) that took longest in an executed notebook, and its seconds."""
    cells = [c for c in json.loads(executed.read_text())["cells"] if c["cell_type"] == "code"]
    durations = [c.get("metadata", {}).get("papermill", {}).get("duration") or 0.0 for c in cells]
    if not durations:
        return None, 0.0
    k = max(range(len(durations)), key=durations.__getitem__)
    return k + 1, durations[k]


def main() -> int:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebook", type=Path)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--cell-timeout", type=int, default=60)
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--fresh", action="store_true", help="a new run folder for every run")
    args = ap.parse_args()
    outcomes: collections.Counter = collections.Counter()
    where: collections.Counter = collections.Counter()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        for i in range(args.runs):
            run_dir = Path(tmp) / (f"run-{i}" if args.fresh else "run")
            t0 = time.time()
            out = Path(tmp) / f"out-{i}.ipynb"
            try:
                pm.execute_notebook(str(args.notebook), str(out), kernel_name="python3",
                                    cwd=str(args.notebook.parent), progress_bar=False,
                                    parameters={"profile": args.profile, "run_dir": str(run_dir)},
                                    execution_timeout=args.cell_timeout)
                cell, seconds = slowest_cell(out)
                outcome = "stall" if seconds >= args.cell_timeout / 2 else "ok"
                if outcome == "stall":
                    where[(outcome, cell, f"{seconds:.0f} s")] += 1
            except PapermillExecutionError as err:
                outcome = "hang" if err.ename in ("CellTimeoutError", "TimeoutError") else "error"
                where[(outcome, err.exec_count, err.ename)] += 1
            except Exception as err:  # a cell timeout (nbclient's CellTimeoutError), a dead kernel
                outcome = "hang" if "timeout" in type(err).__name__.lower() else "error"
                where[(outcome, slowest_cell(out)[0] if out.exists() else None, type(err).__name__)] += 1
            outcomes[outcome] += 1
            print(f"run {i + 1:>3}/{args.runs}: {outcome:<5} {time.time() - t0:6.1f} s", flush=True)
    print(f"notebook: {args.notebook.name}")
    for (outcome, cell, name), n in sorted(where.items(), key=str):
        print(f"  {outcome} in cell {cell}: {name} x{n}")
    print(f"runs: {args.runs}  ok: {outcomes['ok']}  stall: {outcomes['stall']}  hang: {outcomes['hang']}  "
          f"error: {outcomes['error']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
