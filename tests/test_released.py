"""The official release formats: a few hundred synthetic records per kind round-trip, bad records are named, and
the kit's own exploration written in those formats gives back the kit's step rewards."""

import random

import pytest

from steca_lib import released
from steca_lib.data import DataFormatError, write_jsonl_atomic
from steca_lib.expert_data import load_tasks
from steca_lib.rollouts import load_rollouts
from steca_lib.step_rewards import load_step_rewards


def turns(rng: random.Random, n: int, style: str, first: str = "human") -> list[dict]:
    speakers = {"fastchat": ("human", "gpt"), "role": ("user", "assistant")}[style]
    key, value = ("from", "value") if style == "fastchat" else ("role", "content")
    start = 0 if first == "human" else 1
    return [{key: speakers[(start + k) % 2], value: f"text {rng.random():.6f}"} for k in range(n)]


def synthetic(kind: str, n: int = 300, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        style = ("fastchat", "role")[i % 2]
        if kind == "exploration":
            out.append({"id": i // 10, "iteration": i % 10, "game_file": f"data/json_2.1.1/train/task-{i}/trial_x",
                        "agent_step_output": f"Thought: t{i}\nAction: go to shelf {i % 7}",
                        "agent_step_reward": 0, "agent_final_reward": rng.random() < 0.5,
                        "agent_step_conversations": turns(rng, 5, style), "agent_conversations": turns(rng, 9, style),
                        "time": round(rng.random() * 5, 2)})
        elif kind == "mc":
            out.append({"id": i // 50, "iteration": (i // 5) % 10, "sample": i % 5, "agent_step_reward": 0,
                        "agent_final_reward": rng.random() < 0.5})
        elif kind == "pairs":
            out.append({"id": str(i), "prompt": turns(rng, 5, style), "chosen": turns(rng, 3, style, "gpt"),
                        "rejected": turns(rng, 3, style, "gpt"), "deviation": rng.random(),
                        "reward": 1 + 0.01 * rng.random()})
        else:
            out.append({"meta": {"steps": i % 40, "reward": float(i % 2), "finished": True, "success": bool(i % 2),
                                 "terminate_reason": "success", "error": None},
                        "conversations": turns(rng, 7, style)})
    return out


@pytest.mark.parametrize("kind", sorted(released.SCHEMAS))
@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_few_hundred_records_round_trip(tmp_path, kind, suffix):
    records = synthetic(kind)
    path = tmp_path / f"{kind}{suffix}"
    if suffix == ".json":
        released.save_records(records, path)
    else:
        write_jsonl_atomic(records, path)
    assert released.load_records(path, kind) == records


@pytest.mark.parametrize("kind, field, value, problem", [
    ("exploration", "iteration", True, "expected int, got bool"),
    ("mc", "agent_final_reward", "yes", "expected int/float/bool, got str"),
    ("pairs", "chosen", None, "expected list, got NoneType"),
    ("pairs", "deviation", None, "expected int/float, got NoneType"),
])
def test_bad_records_are_named(tmp_path, kind, field, value, problem):
    records = synthetic(kind, 20)
    records[7][field] = value
    path = released.save_records(records, tmp_path / "bad.json")
    with pytest.raises(DataFormatError, match=rf"record 7 .*field '{field}': {problem}"):
        released.load_records(path, kind)
    del records[7][field]
    released.save_records(records, path)
    with pytest.raises(DataFormatError, match=rf"record 7 .*field '{field}': missing"):
        released.load_records(path, kind)


def test_bad_speaker_is_named(tmp_path):
    records = synthetic("exploration", 12)
    records[3]["agent_conversations"][2] = {"role": "system", "content": "x"}
    path = released.save_records(records, tmp_path / "bad.json")
    with pytest.raises(DataFormatError, match=r"record 3 .*agent_conversations\[2\]\.role.*unknown speaker"):
        released.load_records(path, "exploration")
    with pytest.raises(ValueError, match="kind"):
        released.load_records(path, "trajectories")


def test_kit_exploration_in_released_format_gives_the_kits_step_rewards(scripted_run, tmp_path):
    rollouts = load_rollouts(scripted_run)
    games = {t.task_id: t.game_file for t in load_tasks(scripted_run, "train")}
    files = {"exploration": released.exploration_records(rollouts, games),
             "mc": released.mc_records(rollouts), "mc_expert": released.mc_records(rollouts, "expert")}
    loaded = {}
    for name, records in files.items():
        path = released.save_records(records, tmp_path / f"{name}.json")
        loaded[name] = released.load_records(path, "exploration" if name == "exploration" else "mc")
    rows = released.step_rewards(loaded["exploration"], loaded["mc"], loaded["mc_expert"])
    kit = load_step_rewards(scripted_run)
    assert len(rows) == len(kit) > 50
    by_key = {(r["task_id"], r["step"]): r for r in rows}
    for k in kit:
        r = by_key[(k["task_id"], k["step"])]
        assert (r["explored_action"], r["explored_reward"], r["expert_reward"], r["greedy_success"]) == (
            k["explored_action"], k["explored_reward"], k["expert_reward"], k["greedy_success"])
    first = loaded["exploration"][0]
    assert first["agent_step_conversations"][-1]["content"].startswith("Observation: ")
    assert first["agent_step_conversations"][-2]["content"] == first["agent_step_output"]
