"""Stage 04: deviation rules on hand-made step-reward tables, the trajectory distance, reflections (forced action,
the OpenAI-compatible client against a local stub server, the cache) and the schema of every training set."""

import json
import math
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from steca_lib.calibration import SETS, CalibrationConfig, load_set, run_calibration_stage
from steca_lib.config import config_from_params
from steca_lib.deviation import code_deviations, ndtw, paper_deviations, sample_weight, trajectory_deviation
from steca_lib.embedders import LexicalEmbedder, open_embedder
from steca_lib.reflection import (ChatReflector, ReflectionError, ReflectionRequest, RuleReflector, open_reflector,
                                  postprocess, reflect_all, reflection_prompt)



def row(task, step, expert, explored, same=False, greedy_success=False, continues=True):
    return {"task_id": task, "family": "f", "step": step, "expert_action": f"go to a {step}",
            "explored_action": f"go to a {step}" if same else f"open b {step}", "same_action": same,
            "expert_reward": expert, "explored_reward": explored, "greedy_success": greedy_success,
            "continues": continues}


# Task t: expert rewards rise 0.2, 0.4, 0.6, 0.8, 1.0. Explored rewards per step and what each rule must say.
TABLE = [
    row("t", 0, 0.2, 0.0),          # j = 0: no previous expert step, never deviated
    row("t", 1, 0.4, 0.2),          # tie with r(a_1) = 0.2: code (≤) yes but j < 2; paper (<) no
    row("t", 2, 0.6, 0.4),          # tie with r(a_2) = 0.4: code yes; paper no
    row("t", 3, 0.8, 0.4),          # 0.4 < r(a_3) = 0.6: both; paper's first deviation
    row("t", 4, 1.0, 0.6, same=True),  # same action: neither
    row("u", 0, 0.4, 0.4),
    row("u", 1, 0.6, 0.2, greedy_success=True),  # below: paper yes; code no (greedy continuation succeeded)
    row("u", 2, 0.8, 0.6, continues=False),      # tie: code would, but nothing follows â
    row("u", 3, 1.0, 0.4),                        # below: code yes (similarity permitting), paper: not first
]


def test_paper_rule_first_strict_deviation_per_task():
    found, funnel = paper_deviations(TABLE, delta=0.0)
    assert [(d["task_id"], d["step"]) for d in found] == [("t", 3), ("u", 1)]
    assert found[0]["previous_expert_reward"] == 0.6
    assert funnel[0] == ("branch points", 9) and funnel[-1] == ("first deviation of each task", 2)
    # δ = 0.05 turns the ties into deviations; δ = −0.01 keeps them out
    assert [(d["task_id"], d["step"]) for d in paper_deviations(TABLE, delta=0.05)[0]] == [("t", 1), ("u", 1)]
    assert [(d["task_id"], d["step"]) for d in paper_deviations(TABLE, delta=-0.01)[0]] == [("t", 3), ("u", 1)]


def test_code_rule_ties_steps_greedy_success_and_similarity():
    sim = {(r["task_id"], r["step"]): 0.5 for r in TABLE}
    found, funnel = code_deviations(TABLE, sim)
    assert [(d["task_id"], d["step"]) for d in found] == [("t", 2), ("t", 3), ("u", 3)]
    sim[("t", 2)] = 0.95  # not below the threshold
    assert [(d["task_id"], d["step"]) for d in code_deviations(TABLE, sim)[0]] == [("t", 3), ("u", 3)]
    assert [n for n, _ in funnel][:3] == ["branch points", "j ≥ 2", "explored action ≠ expert action"]
    assert [c for _, c in funnel] == sorted((c for _, c in funnel), reverse=True)


def test_ndtw_on_known_sequences():
    assert ndtw(np.zeros((3, 3))) == 0.0
    # one step of cost 1 on the diagonal of a 2×2 problem: 1 / sqrt(8)
    assert math.isclose(ndtw(np.array([[0.0, 1.0], [1.0, 1.0]])), 1 / math.sqrt(8))
    # 1×2: both cells on the only path: (0.5 + 0.25) / sqrt(5)
    assert math.isclose(ndtw(np.array([[0.5, 0.25]])), 0.75 / math.sqrt(5))
    # warping: [a, b] vs [a, a, b] aligns at zero cost
    emb = LexicalEmbedder()
    turns = lambda acts: [{"from": "gpt", "value": f"Thought: x\nAction: {a}"} for a in acts]  # noqa: E731
    assert trajectory_deviation(turns(["go to a 1", "open b 2"]), turns(["go to a 1", "go to a 1", "open b 2"]),
                                emb) == pytest.approx(0.0, abs=1e-12)
    # go to drawer 1 vs go to drawer 2: lexical cosine 3/4, so cost 1/4 on a 1×1 path: 0.25 / sqrt(2)
    assert trajectory_deviation(turns(["go to drawer 1"]), turns(["go to drawer 2"]), emb) == pytest.approx(
        0.25 / math.sqrt(2))
    assert sample_weight(0.5, 0.01, True) == 1.005 and sample_weight(0.5, 1.0, False) == 0.5


def test_embedder_names_and_bad_input():
    assert open_embedder("lexical").name == "lexical"
    with pytest.raises(ValueError, match="unknown embedder"):
        open_embedder("glove")


def test_sentence_embedder_loads_a_local_encoder_folder(tmp_path):
    """The MiniLM path (mean pooling) on a tiny BERT built here: identical texts have cosine 1."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "go", "to", "drawer", "1", "2"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(tmp_path)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path)
    emb = open_embedder(f"minilm:{tmp_path}")
    sims = emb.cosine(["go to drawer 1", "go to drawer 2"], ["go to drawer 1"])
    assert sims.shape == (2, 1) and sims[0, 0] == pytest.approx(1.0, abs=1e-5) and sims[1, 0] < 1.0


def request(key="t/3", action="go to cabinet 4", obs="Nothing happens.", expert="open fridge 1"):
    history = [{"from": "human", "value": "instruction"}, {"from": "gpt", "value": "OK"},
               {"from": "human", "value": "You are in a room.\n\nYour task is to: put a cool apple in cabinet."},
               {"from": "gpt", "value": f"Thought: hm.\nAction: {action}"},
               {"from": "human", "value": f"Observation: {obs}"}]
    return ReflectionRequest(key=key, history=history, expert_action=expert)


def test_postprocess_forces_the_expert_action_and_drops_stray_text():
    raw = ("Sure! Here is the thought.\nThought: I went the wrong way; the apple is in the fridge.\n"
           "Action: go to garbagecan 1\nObservation: You arrive.")
    assert postprocess(raw, "open fridge 1") == ("Thought: I went the wrong way; the apple is in the fridge.\n"
                                                 "Action: open fridge 1")
    assert postprocess("The fridge holds it.", "open fridge 1") == "Thought: The fridge holds it.\nAction: open fridge 1"
    assert postprocess("Thought: a\nHuman: b", "x").endswith("Thought: a\nAction: x")


def test_prompt_carries_history_mistake_and_expert_action():
    p = reflection_prompt(request())
    assert p.startswith("Human: instruction\n\nGpt: OK\n\nHuman: You are in a room.")
    assert "Gpt: Thought: hm.\nAction: go to cabinet 4\n\nHuman: Observation: Nothing happens." in p
    assert "The correct next action is: open fridge 1." in p


def test_rule_reflector_names_the_mistake_and_varies():
    texts = RuleReflector().reflect([request(key=f"t/{i}") for i in range(12)])
    assert all("go to cabinet 4" in t and t.endswith("Action: open fridge 1") for t in texts)
    assert all(any(p in t for p in ("did nothing", "no effect", "move was wrong")) for t in texts)
    assert len({t for t in texts}) >= 3
    detour = RuleReflector().reflect([request(obs="On the cabinet 4, you see a mug 1.")])[0]
    assert "mug 1" in detour and "put a cool apple in cabinet" in detour


class StubChat(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint whose next answers are scripted: an int is an HTTP error status,
    ``"timeout"`` sleeps past the client's timeout, ``"hang"`` holds the request for 30 s, ``"malformed"`` is a 200
    with broken JSON, other strings (``""`` too) answer."""

    script: list = []
    hits: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        StubChat.hits.append(body)
        step = StubChat.script.pop(0) if StubChat.script else 500
        if step in ("timeout", "hang"):
            threading.Event().wait(1.0 if step == "timeout" else 30.0)  # not time.sleep: the tests patch it
            step = "late"
        if isinstance(step, int):
            self.send_response(step)
            self.send_header("Content-Type", "application/json")
            self.send_header("retry-after-ms", "5")
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "busy"}}')
            return
        payload = b'{"id": "x", "choices": [' if step == "malformed" else json.dumps({
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": step}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        try:
            self.wfile.write(payload)
        except BrokenPipeError:  # the client gave up on a "timeout" answer
            pass


@pytest.fixture
def stub_server():
    pytest.importorskip("openai")
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubChat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    StubChat.script, StubChat.hits = [], []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_chat_reflector_retries_then_caches(stub_server, tmp_path, monkeypatch):
    monkeypatch.setattr("steca_lib.reflection.time.sleep", lambda s: None)
    StubChat.script = [429, 500, "Thought: first.\nAction: whatever",
                       "malformed", "Thought: second.",
                       "timeout", "Thought: third."]
    client = ChatReflector(model="stub-4o", base_url=stub_server, timeout=0.3, max_retries=3)
    reqs = [request(key=f"t/{i}", action=f"go to cabinet {i}") for i in range(3)]
    rows, calls = reflect_all(reqs + [request(key="same", action="go to cabinet 0")], client,
                              tmp_path / "cache.jsonl")
    assert rows[3]["raw"] == rows[0]["raw"]  # an identical prompt is asked once
    rows = rows[:3]
    assert calls == 3 and [r["turn"] for r in rows] == [
        "Thought: first.\nAction: open fridge 1", "Thought: second.\nAction: open fridge 1",
        "Thought: third.\nAction: open fridge 1"]
    assert StubChat.hits[0]["messages"] == [{"role": "user", "content": reflection_prompt(reqs[0])}]
    cached = [json.loads(line) for line in (tmp_path / "cache.jsonl").read_text().splitlines()]
    assert [c["raw"] for c in cached] == ["Thought: first.\nAction: whatever", "Thought: second.", "Thought: third."]
    assert "127.0.0.1" not in (tmp_path / "cache.jsonl").read_text()  # the endpoint is not written down
    hits = len(StubChat.hits)
    rows2, calls2 = reflect_all(reqs, client, tmp_path / "cache.jsonl")
    assert calls2 == 0 and len(StubChat.hits) == hits and rows2 == rows


def test_chat_reflector_gives_a_clear_error_and_keeps_what_it_had(stub_server, tmp_path, monkeypatch):
    monkeypatch.setattr("steca_lib.reflection.time.sleep", lambda s: None)
    StubChat.script = ["Thought: kept."] + [500] * 10
    client = ChatReflector(model="stub-4o", base_url=stub_server, timeout=0.3, max_retries=2)
    with pytest.raises(ReflectionError, match="after 2 retries"):
        reflect_all([request(key="a"), request(key="b", action="go to sofa 1")], client, tmp_path / "cache.jsonl")
    assert [json.loads(x)["key"] for x in (tmp_path / "cache.jsonl").read_text().splitlines()] == ["a"]
    StubChat.script = ["malformed"] * 10
    with pytest.raises(ReflectionError, match="no usable answer"):
        reflect_all([request(key="c", action="go to bed 1")], client, tmp_path / "cache.jsonl")


RESUME_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_calibration import request
from steca_lib.reflection import ChatReflector, reflect_all
client = ChatReflector(model="stub-4o", base_url={url!r}, timeout=60, max_retries=0)
reflect_all([request(key=f"t/{{i}}", action=f"go to cabinet {{i}}") for i in range(3)], client, {cache!r})
"""


def test_chat_reflector_resumes_after_a_kill_and_rides_out_empty_and_late_answers(stub_server, tmp_path,
                                                                               monkeypatch):
    """A run killed (SIGKILL) while the endpoint hangs keeps the answer it had; the rerun asks only for the rest and
    retries an empty answer and one slower than the timeout (429 and 500: the test above)."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    cache = tmp_path / "cache.jsonl"
    StubChat.script = ["Thought: before the kill.", "hang"]
    code = RESUME_SCRIPT.format(tests=str(Path(__file__).parent), url=stub_server, cache=str(cache))
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 60
    while not (cache.exists() and cache.read_text().count("\n") == 1) or len(StubChat.hits) < 2:
        assert time.time() < deadline and proc.poll() is None, "the first answer never reached the cache"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    monkeypatch.setattr("steca_lib.reflection.time.sleep", lambda s: None)
    StubChat.script, StubChat.hits = ["", "Thought: second.", "timeout", "Thought: third."], []
    client = ChatReflector(model="stub-4o", base_url=stub_server, timeout=0.3, max_retries=2)
    reqs = [request(key=f"t/{i}", action=f"go to cabinet {i}") for i in range(3)]
    rows, calls = reflect_all(reqs, client, cache)
    assert calls == 2 and len(StubChat.hits) == 4  # request 0 came from the cache; 1: empty, then an answer
    assert [r["raw"] for r in rows] == ["Thought: before the kill.", "Thought: second.", "Thought: third."]
    assert len(cache.read_text().splitlines()) == 3


def test_reflector_settings_reach_the_client_and_a_dead_endpoint_fails_fast(scripted_run, stub_server, tmp_path,
                                                                           monkeypatch):
    """Stage 04's ``reflector_timeout`` and ``reflector_retries`` bound the wait on an endpoint that never answers."""
    import time

    monkeypatch.setattr("steca_lib.reflection.time.sleep", lambda s: None)
    run = tmp_path / "run"
    shutil.copytree(scripted_run, run)
    StubChat.script = ["hang"] * 10
    cfg = config_from_params(CalibrationConfig, "smoke", run_dir=str(run), reflector="chat", label="dead",
                             embedder="lexical", reflector_model="stub", reflector_base_url=stub_server,
                             reflector_timeout=0.5, reflector_retries=1)
    t0 = time.time()
    with pytest.raises(ReflectionError, match="after 1 retries"):
        run_calibration_stage(cfg)
    assert time.time() - t0 < 10 and len(StubChat.hits) == 2  # one try and one retry, 0.5 s each
    assert not (run / "04_calibration" / "dead" / "manifest.json").exists()


def test_another_reflector_model_or_endpoint_is_not_served_stale_results(scripted_run, stub_server, tmp_path,
                                                                        monkeypatch):
    """Model and endpoint (from the config or the environment) are part of the finished check and the cache key."""
    run = tmp_path / "run"
    shutil.copytree(scripted_run, run)
    monkeypatch.setenv("STECA_REFLECT_BASE_URL", stub_server)
    monkeypatch.setenv("STECA_REFLECT_MODEL", "model-a")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-key")
    StubChat.script = [f"Thought: a{i}." for i in range(50)]

    def calibrate():
        return run_calibration_stage(config_from_params(CalibrationConfig, "smoke", run_dir=str(run),
                                                        reflector="chat", label="chat", embedder="lexical"))

    first = calibrate()
    asked = len(StubChat.hits)
    if asked == 0:
        pytest.skip("the scripted run has no deviation to reflect on")
    assert calibrate() == first and len(StubChat.hits) == asked  # same model: finished, nothing asked
    monkeypatch.setenv("STECA_REFLECT_MODEL", "model-b")
    StubChat.script = [f"Thought: b{i}." for i in range(50)]
    second = calibrate()
    assert len(StubChat.hits) == 2 * asked and {h["model"] for h in StubChat.hits[asked:]} == {"model-b"}
    assert second["reflector"] != first["reflector"] and "127.0.0.1" not in json.dumps(second)
    raws = {s["meta"]["raw_reflection"] for s in load_set(run, "calibrated", "chat")}
    assert not any(r.startswith("Thought: a") for r in raws)
    for path in (run / "04_calibration" / "chat").iterdir():  # neither the address nor the key is written down
        assert "127.0.0.1" not in path.read_text() and "sk-test-secret-key" not in path.read_text(), path


def assert_turns_alternate(turns, first):
    assert [t["from"] for t in turns] == [("gpt", "human")[(i + (first == "human")) % 2] for i in range(len(turns))]


@pytest.mark.parametrize("rule", ["code", "paper"])
def test_stage_writes_every_set_in_the_training_schema(scripted_run, tmp_path, rule):
    run = tmp_path / "run"
    shutil.copytree(scripted_run, run)
    cfg = config_from_params(CalibrationConfig, "smoke", run_dir=str(run), rule=rule, embedder="lexical")
    summary = run_calibration_stage(cfg)
    assert summary["sizes"]["calibrated"] >= 1 and summary["sizes"]["traj_pairs"] >= 1
    if rule == "code":
        assert all(summary["sizes"][s] >= 1 for s in SETS)
    merged = load_set(run)
    assert len(merged) == summary["train_pairs"] == sum(summary["sizes"][s] for s in SETS)
    assert [m["id"] for m in merged] == [str(i) for i in range(len(merged))]
    for sample in merged:
        assert set(sample) == {"id", "prompt", "chosen", "rejected", "deviation", "reward", "meta"}
        assert sample["prompt"][0]["from"] == "human" and sample["prompt"][-1]["from"] == "human"
        assert_turns_alternate(sample["prompt"], "human")
        assert_turns_alternate(sample["chosen"], "gpt")
        assert sample["chosen"][-1]["from"] == "gpt" and sample["rejected"][-1]["from"] == "gpt"
        assert_turns_alternate(sample["rejected"], "gpt")
        k = 1 if sample["meta"]["set"] != "explored" else -1
        assert sample["reward"] == pytest.approx(1 + k * cfg.k * sample["deviation"])
    for sample in load_set(run, "calibrated"):
        expert_action = sample["chosen"][0]["value"].split("Action: ")[-1]
        assert sample["chosen"][0]["value"].startswith("Thought: ")
        assert sample["prompt"][-2]["value"].split("Action: ")[-1] != expert_action
    for sample in load_set(run, "explored"):
        assert sample["deviation"] < cfg.explored_max_deviation
    rft = load_set(run, "rft")  # RFT: one expert trajectory per explored task, then distinct explored successes
    experts = [s for s in rft if s["meta"]["source"] == "expert"]
    assert len(experts) == summary["tasks"] and len(rft) > len(experts)
    assert len({json.dumps(s["prompt"] + s["chosen"]) for s in rft}) == len(rft)
    for sample in rft:
        assert len(sample["prompt"]) == 3 and sample["rejected"] == []
        assert_turns_alternate(sample["chosen"], "gpt")
        assert sample["chosen"][-1]["from"] == "gpt"
    # a second call skips; a recomputation gives the same sets (the rule reflector is deterministic, not cached)
    assert run_calibration_stage(cfg) == summary
    (run / "04_calibration" / "main" / "manifest.json").unlink()
    again = run_calibration_stage(cfg)
    assert again["sizes"] == summary["sizes"] and load_set(run) == merged


def test_calibrated_continuation_is_checked_by_replay(scripted_run, tmp_path):
    """Without the replay check the official behaviour keeps more samples, some of them impossible."""
    run = tmp_path / "run"
    shutil.copytree(scripted_run, run)
    checked = run_calibration_stage(config_from_params(CalibrationConfig, "smoke", run_dir=str(run),
                                                       embedder="lexical"))
    shutil.rmtree(run / "04_calibration" / "main")
    unchecked = run_calibration_stage(config_from_params(CalibrationConfig, "smoke", run_dir=str(run),
                                                         embedder="lexical", check_suffix=False))
    assert unchecked["sizes"]["calibrated"] == checked["sizes"]["calibrated"] + checked["dropped_invalid_suffix"]
    assert checked["dropped_invalid_suffix"] >= 1


def test_bad_rule_is_rejected():
    with pytest.raises(ValueError, match="rule = .fuzzy. is not allowed; expected one of paper, code"):
        config_from_params(CalibrationConfig, "smoke", rule="fuzzy")


def test_self_reflection_by_the_sft_agent(smoke_run, tmp_path):
    """The ablation's reflector: the agent answers the reflection prompt; the action is forced all the same."""
    reflector = open_reflector("self", smoke_run[0])
    rows, calls = reflect_all([request(), request(key="b", action="go to bed 1")], reflector, tmp_path / "c.jsonl")
    assert calls == 2 and reflector.name == "local:self (SFT agent)"
    assert all(r["turn"].startswith("Thought") and r["turn"].endswith("\nAction: open fridge 1") for r in rows)
