"""The official pipeline's released record formats (``../shared/formats``): read them with checks, and write the
kit's exploration and Monte Carlo results in them, so that work moves both ways between the kit and the scripts.

* exploration: one record per (task ``id``, step ``iteration``): the agent's step output, its immediate reward,
  whether the greedy continuation succeeded, the history up to the step and the full continuation;
* Monte Carlo: one record per continuation sample: ``(id, iteration, sample)`` and its final success;
* training pairs (``prompt/chosen/rejected/deviation/reward``) and evaluation records (``meta`` + conversation).

The official files hold the *agent's* samples; the kit also rolls out the expert's action at each step and writes
those samples in the same Monte Carlo schema to a second file. Trajectory files (FastChat and role/content) are
read by :mod:`steca_lib.data`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from steca_lib.data import DataFormatError, chat_messages, format_error, normalize_turn, read_records, write_json_atomic
from steca_lib.prompts import parse_react_action
from steca_lib.rollouts import GREEDY, turn_index

#: Required fields and their types per record kind (``bool`` rewards may also be 0/1 numbers, as released).
SCHEMAS: dict[str, dict[str, tuple[type, ...]]] = {
    "exploration": {"id": (int, str), "iteration": (int,), "game_file": (str,), "agent_step_output": (str,),
                    "agent_step_reward": (int, float, bool), "agent_final_reward": (int, float, bool),
                    "agent_step_conversations": (list,), "agent_conversations": (list,)},
    "mc": {"id": (int, str), "iteration": (int,), "sample": (int,), "agent_step_reward": (int, float, bool),
           "agent_final_reward": (int, float, bool)},
    "pairs": {"id": (int, str), "prompt": (list,), "chosen": (list,), "rejected": (list,),
              "deviation": (int, float), "reward": (int, float)},
    "evaluation": {"meta": (dict,), "conversations": (list,)},
}
CONVERSATION_FIELDS = ("agent_step_conversations", "agent_conversations", "prompt", "chosen", "rejected",
                       "conversations")


def load_records(path: str | os.PathLike, kind: str) -> list[dict]:
    """A released file (JSON list or JSONL) of ``kind`` (see :data:`SCHEMAS`), checked field by field; turns in
    either speaker style are kept as they are. Errors name the file, the record and the field."""
    if kind not in SCHEMAS:
        raise ValueError(f"kind must be one of {sorted(SCHEMAS)}, got {kind!r}")
    path = Path(path)
    records = read_records(path)
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DataFormatError(f"{path}: record {i}: expected an object, got {type(rec).__name__}")
        for name, types in SCHEMAS[kind].items():
            if name not in rec:
                raise format_error(path, i, rec, name, "missing")
            if not isinstance(rec[name], types) or (bool not in types and isinstance(rec[name], bool)):
                raise format_error(path, i, rec, name, f"expected {'/'.join(t.__name__ for t in types)}, "
                                                f"got {type(rec[name]).__name__}")
        for name in CONVERSATION_FIELDS:
            for k, turn in enumerate(rec.get(name, []) if name in SCHEMAS[kind] else []):
                normalize_turn(turn, path, i, rec, k, name)
    return records


def save_records(records: list[dict], path: str | os.PathLike) -> Path:
    """Write released-format records as a JSON list (the official files' layout)."""
    write_json_atomic(records, path)
    return Path(path)


def exploration_records(rollouts: list[dict], game_files: dict[str, str]) -> list[dict]:
    """The kit's greedy explored branches (stage 02) as official exploration records (role/content turns)."""
    out = []
    for r in rollouts:
        if r["branch"] != "explored" or r["sample"] != GREEDY:
            continue
        messages = chat_messages(r["conversations"])
        t = turn_index(r["step"])
        out.append({"id": r["task_id"], "iteration": r["step"], "game_file": game_files[r["task_id"]],
                    "agent_step_output": messages[t]["content"] if len(messages) > t else "",
                    "agent_step_reward": 0, "agent_final_reward": bool(r["meta"]["success"]),
                    "agent_step_conversations": messages[:t + 2], "agent_conversations": messages, "time": None})
    return out


def mc_records(rollouts: list[dict], branch: str = "explored") -> list[dict]:
    """The kit's sampled continuations of one branch (``explored``: the official file; ``expert``: the kit's
    second file) as official Monte Carlo records."""
    return [{"id": r["task_id"], "iteration": r["step"], "sample": r["sample"], "agent_step_reward": 0,
             "agent_final_reward": bool(r["meta"]["success"])}
            for r in rollouts if r["branch"] == branch and r["sample"] != GREEDY]


def step_rewards(exploration: list[dict], mc: list[dict], mc_expert: list[dict] | None = None) -> list[dict]:
    """Eq. 1 from released records: per (task, step), the explored action, its step reward (mean final success of
    the samples), the greedy continuation's success and, when the expert's samples are given, the expert's step
    reward (else None)."""
    def means(records: list[dict]) -> dict[tuple[Any, int], float]:
        groups: dict[tuple[Any, int], list[float]] = defaultdict(list)
        for m in records:
            groups[(m["id"], m["iteration"])].append(float(m["agent_final_reward"]))
        return {k: sum(v) / len(v) for k, v in groups.items()}

    explored, expert = means(mc), means(mc_expert or [])
    rows = []
    for e in exploration:
        key = (e["id"], e["iteration"])
        rows.append({"task_id": e["id"], "step": e["iteration"],
                     "explored_action": parse_react_action(e["agent_step_output"]),
                     "explored_reward": explored.get(key), "expert_reward": expert.get(key),
                     "greedy_success": bool(e["agent_final_reward"])})
    return rows
