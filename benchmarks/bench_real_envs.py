"""Speed of the real environments beside the embedded world, on the same expert action sequences.

    .venv/bin/python benchmarks/bench_real_envs.py [--tasks 20] [--scienceworld-tasks 3]

ALFWorld: the embedded expert's actions on compiled games (start + reset timed apart from the steps).
ScienceWorld: its gold action sequences on the first variations of a few tasks, through the kit's environment
(simulators from one JVM, lean step) and through the package's own environment (a JVM each, ``step`` with its info
dict), side by side. Prints steps/s per world and the ratio to the embedded world.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from steca_lib.envs.household import HouseholdEnv, HouseholdExpert, WorldSpec, generate_split


def _play(make, plans) -> tuple[float, float, int, int]:
    """(seconds in start+reset, seconds in steps, steps, episodes) over fresh episodes of each plan."""
    start = steps_time = 0.0
    n = 0
    for key, plan in plans:
        t0 = time.perf_counter()
        env = make(key)
        env.reset()
        t1 = time.perf_counter()
        for action in plan:
            env.step(action)
        t2 = time.perf_counter()
        getattr(env, "close", lambda: None)()
        start, steps_time, n = start + t1 - t0, steps_time + t2 - t1, n + len(plan)
    return start, steps_time, n, len(plans)


class PackageScienceWorld:
    """The ``scienceworld`` package's own environment on variation 0 of a task, as its README drives it."""

    def __init__(self, name: str):
        from scienceworld import ScienceWorldEnv

        self.name, self.env = name, ScienceWorldEnv("", envStepLimit=500)

    def reset(self):
        self.env.load(self.name, 0, "easy")
        return self.env.reset()

    def step(self, action: str):
        return self.env.step(action)

    def close(self):
        self.env.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--scienceworld-tasks", type=int, default=3)
    args = ap.parse_args()
    tasks = generate_split(WorldSpec(), "seen", args.tasks)
    plans = [(t, [a for _, a, _ in HouseholdExpert(t).run()[0]]) for t in tasks]
    rows = [("embedded", *_play(lambda t: HouseholdEnv(t), plans))]

    from steca_lib.envs.alfworld import AlfworldEnv, write_games

    with tempfile.TemporaryDirectory() as tmp:
        games = dict(zip((t.task_id for t in tasks), write_games(tasks, Path(tmp))))
        rows.append(("alfworld (compiled)", *_play(lambda t: AlfworldEnv(games[t.task_id], t.task_id), plans)))

    from steca_lib.envs.scienceworld import ScienceWorldEnv, expert_actions

    names = ["find-living-thing", "boil", "melt", "chemistry-mix", "grow-plant"][:args.scienceworld_tasks]
    sw_plans = [(name, expert_actions(name, 0)) for name in names]
    rows.append(("scienceworld (kit)", *_play(lambda name: ScienceWorldEnv(name, 0, max_steps=500), sw_plans)))
    rows.append(("scienceworld (package)", *_play(PackageScienceWorld, sw_plans)))

    base = rows[0][3] / rows[0][2]
    for name, start, steps_time, n, episodes in rows:
        rate = n / steps_time
        print(f"{name:22s} {n:5d} steps  {rate:10,.1f} steps/s  start+reset {start / episodes:6.2f} s/episode"
              f"  ratio to embedded {rate / base:.5f}")


if __name__ == "__main__":
    main()
