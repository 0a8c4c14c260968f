"""Deviation detection (the paper's Eq. 5, or the official code's rule) and the trajectory deviation distance.

Both rules read the step-reward rows of stage 03 (one per task and branch point j, with r(a_{j+1}) as
``expert_reward`` and r(â_{j+1}) as ``explored_reward``; the code rule also needs ``continues``, whether the greedy
explored episode has a turn after â_{j+1}, which stage 04 adds to each row from stage 02's records before
detection) and compare the explored action with the reward of the
*previous* expert step, r(a_j), because completion probability should rise along a good trajectory:

* ``paper``: â_{j+1} is deviated iff r(â_{j+1}) − r(a_j) < δ; only the first deviation of a task is calibrated.
  The kit also requires â_{j+1} ≠ a_{j+1} (an action equal to the expert's is not a deviation from the expert
  path; with N = 5 its reward differs from r(a_{j+1}) only by sampling noise).
* ``code``: the official scripts: j ≥ 2, r(â_{j+1}) ≤ r(a_j), the greedy continuation after â_{j+1} failed and
  has at least one more turn, the actions differ as strings and their embedding cosine is below 0.95; every
  qualifying branch is kept.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable

import numpy as np

from steca_lib.embedders import Embedder
from steca_lib.prompts import parse_react_action

RULES = ("paper", "code")


def with_previous_reward(rows: list[dict]) -> list[dict]:
    """Rows in (task, step) order, each with r(a_j) (the expert reward of the task's row j − 1) as
    ``previous_expert_reward``; None at j = 0, where there is no previous expert step."""
    by_key = {(r["task_id"], r["step"]): r["expert_reward"] for r in rows}
    return [{**r, "previous_expert_reward": by_key.get((r["task_id"], r["step"] - 1))}
            for r in sorted(rows, key=lambda r: (r["task_id"], r["step"]))]


Funnel = list[tuple[str, int]]


def _filter(rows: list[dict], checks: list[tuple[str, Callable[[dict], bool]]], funnel: Funnel) -> list[dict]:
    """Apply named checks in order, recording how many rows survive each."""
    for name, keep in checks:
        rows = [r for r in rows if keep(r)]
        funnel.append((name, len(rows)))
    return rows


def paper_deviations(rows: list[dict], delta: float = 0.0) -> tuple[list[dict], Funnel]:
    """Eq. 5: per task, the first j with â_{j+1} ≠ a_{j+1} and r(â_{j+1}) − r(a_j) < δ."""
    funnel: Funnel = [("branch points", len(rows))]
    kept = _filter(with_previous_reward(rows), [("j ≥ 1 (r(a_j) exists)",
                                                 lambda r: r["previous_expert_reward"] is not None),
                                                ("explored action ≠ expert action", lambda r: not r["same_action"]),
                                                (f"r(â) − r(a_j) < {delta:g}",
                                                 lambda r: r["explored_reward"] - r["previous_expert_reward"] < delta)],
                   funnel)
    first: dict[str, dict] = {}
    for r in kept:
        first.setdefault(r["task_id"], r)
    funnel.append(("first deviation of each task", len(first)))
    return list(first.values()), funnel


def code_deviations(rows: list[dict], similarity: dict[tuple[str, int], float], min_step: int = 2,
                    max_similarity: float = 0.95) -> tuple[list[dict], Funnel]:
    """The official rule: every (task, j ≥ ``min_step``) with r(â_{j+1}) ≤ r(a_j), a failed greedy continuation
    that goes on after â_{j+1} (``continues``), different action strings and embedding cosine below
    ``max_similarity`` (``similarity`` maps (task, j) to the cosine of the two actions)."""
    funnel: Funnel = [("branch points", len(rows))]
    annotated = [{**r, "action_similarity": similarity.get((r["task_id"], r["step"]), 1.0)}
                 for r in with_previous_reward(rows)]
    first = max(min_step, 1)  # r(a_j) exists from j = 1 on
    kept = _filter(annotated, [(f"j ≥ {first}", lambda r: r["step"] >= first),
                               ("explored action ≠ expert action", lambda r: not r["same_action"]),
                               ("r(â) ≤ r(a_j)", lambda r: r["explored_reward"] <= r["previous_expert_reward"]),
                               ("greedy continuation failed", lambda r: not r["greedy_success"]),
                               ("continuation has turns after â", lambda r: r["continues"]),
                               (f"action cosine < {max_similarity:g}",
                                lambda r: r["action_similarity"] < max_similarity)], funnel)
    return kept, funnel


def detect(rows: list[dict], rule: str, delta: float = 0.0, similarity: dict | None = None, min_step: int = 2,
           max_similarity: float = 0.95) -> tuple[list[dict], Funnel]:
    """The deviated branches under ``rule`` (see the module docstring) and the count after every check."""
    if rule == "paper":
        return paper_deviations(rows, delta)
    if rule == "code":
        return code_deviations(rows, similarity or {}, min_step, max_similarity)
    raise ValueError(f"unknown deviation rule {rule!r}; expected one of {RULES}")


def ndtw(cost: np.ndarray) -> float:
    """DTW over a local cost matrix, C(n, m) / sqrt(n² + m²), as the official code normalises it. One empty side
    counts as the largest per-step cost, 1; both empty as 0."""
    n, m = cost.shape
    if n == 0 or m == 0:
        return 0.0 if n == m else 1.0
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j], acc[i, j - 1], acc[i - 1, j - 1])
    return float(acc[n, m] / math.sqrt(n * n + m * m))


def turn_actions(turns: list[dict]) -> list[str]:
    """The action of every gpt turn (``""`` when a turn has none), as the official distance reads them."""
    return [parse_react_action(t["value"]) or "" for t in turns if t["from"] == "gpt"]


def trajectory_deviation(chosen: list[dict], rejected: list[dict], embedder: Embedder) -> float:
    """The trajectory deviation distance of two turn lists: nDTW over their actions with cost 1 − cosine."""
    xs, ys = turn_actions(chosen), turn_actions(rejected)
    return ndtw(1.0 - embedder.cosine(xs, ys))


def sample_weight(deviation: float, k: float, rewards_deviation: bool) -> float:
    """The sample's weight: 1 + k·dev for calibrated and expert sets (harder cases count more), 1 − k·dev for
    explored successes (detours count less)."""
    return 1.0 + k * deviation if rewards_deviation else 1.0 - k * deviation


def count_by(rows: list[dict], key: str = "family") -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for r in rows:
        out[r[key]] += 1
    return dict(sorted(out.items()))
