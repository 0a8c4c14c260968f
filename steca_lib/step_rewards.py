"""Stage 03: Monte Carlo step rewards from the rollouts of stage 02 (the paper's Eq. 1).

    r(s_t, a_t) = (1/N) Σ_{i=1..N} R(τ_i),   τ_i ~ π_θ(· | s_t, a_t)

the mean final success of N continuations sampled after action a_t. One row per (task, step j) in
``03_step_rewards/step_rewards.jsonl``: the expert action a_{j+1} and its reward, the agent's explored action
â_{j+1} and its reward, and whether the explored greedy continuation succeeded.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from steca_lib.artifacts import finished_summary, stage_dir, upstream, write_manifest
from steca_lib.config import RunSettings, check_config
from steca_lib.data import read_jsonl, write_jsonl_atomic
from steca_lib.errors import DegenerateOutput
from steca_lib.metrics import bootstrap_ci
from steca_lib.rollouts import GREEDY, load_rollouts

STAGE = "03_step_rewards"


@dataclass
class StepRewardConfig(RunSettings):
    """Stage 03: nothing to tune; the config names the run and the seed of the confidence intervals."""

    PROFILE_DEFAULTS: ClassVar[dict[str, dict]] = {"smoke": {}, "cpu": {}, "cpu-llm": {}, "paper": {}}

    def __post_init__(self):
        check_config(self)


def mc_reward(samples: list[dict]) -> float:
    """Eq. 1: the mean final success of the sampled continuations."""
    if not samples:
        raise DegenerateOutput("a branch has no sampled continuations (N = 0), so its Monte Carlo reward is "
                               "undefined; rerun stage 02 with n_samples ≥ 1")
    return sum(float(r["meta"]["success"]) for r in samples) / len(samples)


def step_reward_rows(records: list[dict]) -> list[dict]:
    """One row per (task, step): expert and explored actions with their Monte Carlo step rewards."""
    groups: dict[tuple[str, int], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        groups[(r["task_id"], r["step"])][r["branch"]].append(r)
    n_steps = defaultdict(int)
    for task_id, step in groups:
        n_steps[task_id] = max(n_steps[task_id], step + 1)
    rows = []
    for (task_id, step), g in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        greedy = next(r for r in g["explored"] if r["sample"] == GREEDY)
        samples = [r for r in g["explored"] if r["sample"] != GREEDY]
        rows.append({
            "task_id": task_id, "family": greedy["family"], "step": step, "n_steps": n_steps[task_id],
            "expert_action": greedy["expert_action"], "explored_action": greedy.get("action"),
            "same_action": greedy.get("action") == greedy["expert_action"],
            "expert_reward": mc_reward(g["expert"]), "explored_reward": mc_reward(samples),
            "greedy_success": bool(greedy["meta"]["success"]), "n_samples": len(samples),
        })
    return rows


def summarize_step_rewards(rows: list[dict], seed: int = 0) -> dict:
    """Headline numbers: mean rewards with CIs, how often the explored action scores below the expert's."""
    exp = bootstrap_ci([r["expert_reward"] for r in rows], seed=seed)
    explo = bootstrap_ci([r["explored_reward"] for r in rows], seed=seed)
    differ = [r for r in rows if not r["same_action"]]
    return {
        "rows": len(rows), "tasks": len({r["task_id"] for r in rows}),
        "expert_reward": exp, "explored_reward": explo,
        "explored_differs": len(differ) / max(len(rows), 1),
        "explored_below_expert": sum(r["explored_reward"] < r["expert_reward"] for r in rows) / max(len(rows), 1),
        "greedy_success_from_start": statistics.mean(r["greedy_success"] for r in rows if r["step"] == 0)
        if rows else None,
    }


def run_step_reward_stage(cfg: StepRewardConfig) -> dict:
    """Compute the step rewards of a finished stage 02."""
    inputs = upstream(cfg.path, "02_rollouts")
    out = stage_dir(cfg.path, STAGE)
    done = finished_summary(out, cfg, inputs=inputs)
    if done is not None:
        return done
    started = time.time()
    rows = step_reward_rows(load_rollouts(cfg.path))
    if not rows:
        raise DegenerateOutput(f"{cfg.path / '02_rollouts'} holds no rollouts, so there is no step reward to compute; "
                               "rerun stage 02 with n_tasks ≥ 1")
    write_jsonl_atomic(rows, out / "step_rewards.jsonl")
    summary = summarize_step_rewards(rows, cfg.seed)
    write_manifest(out, STAGE, cfg, summary, started, inputs)
    return summary


def load_step_rewards(run_dir: Path) -> list[dict]:
    return read_jsonl(Path(run_dir) / STAGE / "step_rewards.jsonl")


if __name__ == "__main__":
    from steca_lib.config import stage_main

    raise SystemExit(stage_main(StepRewardConfig, run_step_reward_stage,
                                "Stage 03: Monte Carlo step rewards from stage 02's rollouts."))
