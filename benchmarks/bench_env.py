"""Speed of the embedded household world on this machine: env steps/s, clone/s, expert steps/s.

    .venv/bin/python benchmarks/bench_env.py [--tasks 200]
"""

from __future__ import annotations

import argparse
import random
import time

from steca_lib.envs.household import HouseholdEnv, HouseholdExpert, WorldSpec, generate_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=200)
    args = ap.parse_args()
    tasks = generate_split(WorldSpec(), "train", args.tasks)
    rng = random.Random(0)

    # random walks over admissible actions (action choice is outside the timed region)
    steps, env_time = 0, 0.0
    for t in tasks:
        env = HouseholdEnv(t, max_steps=40)
        env.reset()
        while not env.done:
            action = rng.choice(env.admissible_actions())
            t0 = time.perf_counter()
            env.step(action)
            env_time += time.perf_counter() - t0
            steps += 1
    print(f"env.step (random admissible actions): {steps / env_time:,.0f} steps/s over {steps} steps")

    t0 = time.perf_counter()
    n_clones = 0
    for t in tasks:
        env = HouseholdEnv(t)
        env.reset()
        for _ in range(20):
            env.clone()
            n_clones += 1
    print(f"env.clone: {n_clones / (time.perf_counter() - t0):,.0f} clones/s")

    t0 = time.perf_counter()
    expert_steps = sum(len(HouseholdExpert(t).run()[0]) for t in tasks)
    print(f"expert episodes (expert + env): {expert_steps / (time.perf_counter() - t0):,.0f} steps/s")


if __name__ == "__main__":
    main()
