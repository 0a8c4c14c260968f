"""Trajectory file formats: round trips, the released variants, and errors that say where."""

import json
from pathlib import Path

import pytest

from steca_lib.data import DataFormatError, load_trajectories, save_trajectories
from steca_lib.envs.household import HouseholdExpert, generate_task
from steca_lib.envs.household.generator import WorldSpec
from steca_lib.envs.household.world import intro_text
from steca_lib.expert_data import expert_conversation
from steca_lib.prompts import INSTRUCTION, parse_react_action

DATA = Path(__file__).parent / "data"


def test_loads_both_released_variants_identically():
    a = load_trajectories(DATA / "sft_fastchat.json")
    b = load_trajectories(DATA / "sft_role_content.json")
    assert a == b
    assert a[0]["conversations"][1] == {"from": "gpt", "value": "OK"}


@pytest.mark.parametrize("style", ["fastchat", "role_content"])
@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_round_trip(tmp_path, style, suffix):
    spec = WorldSpec()
    records = []
    for i in range(5):
        t = generate_task(spec, "train", i)
        records.append(expert_conversation(t, intro_text(t), HouseholdExpert(t).run()[0]))
    path = tmp_path / f"x{suffix}"
    if suffix == ".json":
        save_trajectories(records, path, style=style)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert load_trajectories(path) == records


def test_expert_record_layout():
    t = generate_task(WorldSpec(), "train", 3)
    turns = HouseholdExpert(t).run()[0]
    conv = expert_conversation(t, intro_text(t), turns)["conversations"]
    assert conv[0]["value"] == INSTRUCTION and conv[1]["value"] == "OK"
    assert conv[2]["value"].endswith(f"Your task is to: {t.goal.text}")
    assert conv[-1]["from"] == "gpt" and len(conv) == 3 + 2 * len(turns) - 1
    assert [parse_react_action(c["value"]) for c in conv[3::2]] == [a for _, a, _ in turns]
    assert all(c["value"].startswith("Observation: ") for c in conv[4::2])


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"a": 1}', "expected a JSON list"),
    ('[{"id": "x7"}]', "record 0 (id='x7'), field 'conversations'"),
    ('[{"id": 1, "conversations": [{"from": "human", "value": "hi"}, {"from": "robot", "value": "?"}]}]',
     "record 0 (id=1), field 'conversations[1].from': unknown speaker 'robot'"),
    ('[{"id": 1, "conversations": [{"role": "user", "content": 5}]}]',
     "field 'conversations[0].content': expected a string"),
    ('[{"id": 1, "conversations": [{"from": "gpt", "value": "OK"}]}]', "expected a human turn"),
    ('[{"path": "vh/3", "conversations": [{"text": "x"}]}]', "record 0 (id='vh/3'), field 'conversations[0]'"),
    # a turn that mixes the two styles, as in ETO's own in-context example file: the keys found are named
    ('[{"id": 2, "conversations": [{"from": "human", "content": "hi"}]}]',
     "field 'conversations[0]': has keys ['content', 'from']; expected 'from'/'value' or 'role'/'content'"),
])
def test_malformed_files_name_file_record_and_field(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataFormatError) as err:
        load_trajectories(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_broken_jsonl_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 0, "conversations": [{"from": "human", "value": "x"}]}\n{oops\n')
    with pytest.raises(DataFormatError, match="line 2"):
        load_trajectories(path)


def test_parse_react_action_like_the_paper():
    assert parse_react_action("Thought: hm\nAction: go to fridge 1") == "go to fridge 1"
    assert parse_react_action("Thought: no action here") is None
    assert parse_react_action("Action:open drawer 2\n") == "open drawer 2"
