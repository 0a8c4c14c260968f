"""Generation backends, the episode runner (paper's protocol), evaluation records and confidence intervals."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from steca_lib.config import config_from_params
from steca_lib.envs.household import HouseholdEnv, generate_task
from steca_lib.envs.household.generator import WorldSpec
from steca_lib.episodes import advance, run_episodes
from steca_lib.evaluation import EvalConfig, initial_messages, run_eval_stage, summarize, task_episode
from steca_lib.expert_data import load_tasks
from steca_lib.generation import HFBackend, OpenAIChatBackend, Sampling, cut_at_stop
from steca_lib.metrics import bootstrap_ci
from steca_lib.models import load_model, load_tokenizer
from steca_lib.prompts import NO_ACTION_OBSERVATION


@pytest.fixture(scope="module")
def backend(smoke_run):
    run, _ = smoke_run
    path = run / "01_sft" / "model"
    return HFBackend(load_model(path, device="cpu"), load_tokenizer(path))


def _prompts(n):
    spec = WorldSpec()
    return [initial_messages(HouseholdEnv(generate_task(spec, "seen", i)).reset(), []) for i in range(n)]


def test_batched_greedy_equals_one_at_a_time(backend):
    prompts = _prompts(6)
    greedy = Sampling(temperature=0.0, max_new_tokens=40)
    batched = backend.generate(prompts, greedy)
    single = [backend.generate([p], greedy)[0] for p in prompts]
    assert batched == single
    assert all(isinstance(x, str) and x for x in batched)


def test_sampling_is_seeded(backend):
    prompts = _prompts(4)
    a = backend.generate(prompts, Sampling(temperature=1.0, max_new_tokens=24, seed=5))
    b = backend.generate(prompts, Sampling(temperature=1.0, max_new_tokens=24, seed=5))
    c = backend.generate(prompts, Sampling(temperature=1.0, max_new_tokens=24, seed=6))
    assert a == b and a != c


def test_prompt_beyond_context_is_reported_not_truncated(smoke_run):
    run, _ = smoke_run
    path = run / "01_sft" / "model"
    small = HFBackend(load_model(path, device="cpu"), load_tokenizer(path), max_context=200)
    replies = small.generate(_prompts(2) + [[{"role": "user", "content": "go"}]], Sampling(max_new_tokens=8))
    assert replies[:2] == [None, None] and isinstance(replies[2], str)


def test_cut_at_stop_strings():
    assert cut_at_stop("Thought: x\nAction: look\nObservation: y", ("\nObservation:",)) == "Thought: x\nAction: look"


def test_turn_without_action_gets_the_papers_error_observation():
    task = generate_task(WorldSpec(), "seen", 0)
    ep = task_episode(task, 40, [])
    advance(ep, "Thought: I am thinking only.")
    assert ep.messages[-1]["content"] == f"Observation: {NO_ACTION_OBSERVATION}"
    assert ep.env.steps == 1 and not ep.done
    advance(ep, "Thought: now act\nAction: look")
    assert ep.messages[-1]["content"].startswith("Observation: You are in the middle of a room")
    advance(ep, None)
    assert ep.done and ep.terminate_reason == "context_limit"


class ScriptedBackend:
    """Replays each task's expert actions: the runner must then succeed everywhere."""

    def __init__(self, tasks):
        from steca_lib.envs.household import HouseholdExpert
        from steca_lib.envs.household.world import intro_text

        self.plans = {intro_text(t): [a for _, a, _ in HouseholdExpert(t).run()[0]] for t in tasks}
        self.calls = 0

    def generate(self, prompts, sampling):
        self.calls += 1
        out = []
        for messages in prompts:
            plan = self.plans[messages[2]["content"]]
            turn = sum(m["role"] == "assistant" for m in messages) - 1
            out.append(f"Thought: step {turn}\nAction: {plan[turn]}")
        return out


def test_runner_batches_episodes_and_keeps_the_protocol():
    tasks = [generate_task(WorldSpec(), "seen", i) for i in range(10)]
    backend = ScriptedBackend(tasks)
    finished = run_episodes((task_episode(t, 40, []) for t in tasks), backend, Sampling(), batch_size=4,
                            total=len(tasks))
    assert sorted(e.key for e in finished) == sorted(t.task_id for t in tasks)
    assert all(e.reward == 1.0 and e.terminate_reason == "success" for e in finished)
    longest = max(e.agent_turns for e in finished)
    assert backend.calls < sum(e.agent_turns for e in finished)  # batched: fewer calls than turns
    assert backend.calls >= longest
    rec = finished[0].record()
    assert rec["conversations"][1] == {"from": "gpt", "value": "OK"} and rec["meta"]["success"]
    assert rec["conversations"][-1]["from"] == "gpt"


def test_runner_reads_episodes_lazily_one_per_free_slot():
    """Environments that hold a simulator from their reset on (ScienceWorld) must not all start at once."""
    tasks = [generate_task(WorldSpec(), "seen", i) for i in range(10)]
    backend = ScriptedBackend(tasks)
    started = []
    live_at_call = []

    def episodes():
        for t in tasks:
            started.append(t.task_id)
            yield task_episode(t, 40, [])

    generate = backend.generate
    def counting(prompts, sampling):
        live_at_call.append(len(started) - len(finished_keys))
        return generate(prompts, sampling)
    backend.generate = counting
    finished_keys = []
    run_episodes(episodes(), backend, Sampling(), batch_size=3, total=len(tasks),
                 on_finish=lambda ep: finished_keys.append(ep.key))
    assert len(finished_keys) == 10 and max(live_at_call) == 3


def test_bootstrap_ci():
    mean, low, high = bootstrap_ci([1, 0] * 50, n_boot=4000, seed=1)
    assert mean == 0.5 and 0.38 < low < 0.45 and 0.55 < high < 0.62
    assert bootstrap_ci([1, 1, 1]) == (1.0, 1.0, 1.0)
    assert bootstrap_ci([1, 0, 1], seed=3) == bootstrap_ci([1, 0, 1], seed=3)


def test_summarize_records():
    recs = [{"family": "a", "meta": {"success": s, "reward": float(s), "steps": 3, "terminate_reason": r}}
            for s, r in [(True, "success"), (False, "max_steps"), (True, "success"), (False, "context_limit")]]
    s = summarize(recs, 2000)
    assert s["n"] == 4 and s["success"] == 0.5 and s["by_family"] == {"a": 0.5}
    assert s["terminate_reasons"] == {"success": 2, "max_steps": 1, "context_limit": 1}
    assert s["ci_low"] <= 0.5 <= s["ci_high"]


def test_eval_stage_records_resume_and_skip(smoke_run, tmp_path):
    import shutil

    run, _ = smoke_run
    work = tmp_path / "run"
    shutil.copytree(run / "00_environment", work / "00_environment")
    shutil.copytree(run / "01_sft" / "model", work / "01_sft" / "model")
    cfg = config_from_params(EvalConfig, "smoke", run_dir=str(work), max_steps=6, max_new_tokens=24)
    out = work / "01_eval" / "sft"
    # an uninterrupted reference run, then a crashed run that had finished two episodes of the seen split
    shutil.copytree(run / "00_environment", tmp_path / "ref" / "00_environment")
    ref = run_eval_stage(config_from_params(EvalConfig, "smoke", run_dir=str(tmp_path / "ref"),
                                            model_dir=str(run / "01_sft" / "model"), max_steps=6,
                                            max_new_tokens=24))
    ref_lines = (tmp_path / "ref" / "01_eval" / "sft" / "seen.jsonl").read_text().splitlines()
    out.mkdir(parents=True)
    (out / "seen.jsonl").write_text("\n".join(ref_lines[:2]) + "\n")
    summary = run_eval_stage(cfg)
    seen = [json.loads(line) for line in (out / "seen.jsonl").read_text().splitlines()]
    assert len(seen) == summary["seen"]["n"] == 18 and len({r["id"] for r in seen}) == 18
    assert summary["seen"]["success"] == ref["seen"]["success"]
    assert {r["id"]: r for r in seen} == {json.loads(x)["id"]: json.loads(x) for x in ref_lines}
    r = seen[0]
    assert set(r["meta"]) == {"steps", "reward", "finished", "success", "terminate_reason", "error"}
    assert r["conversations"][0]["from"] == "human" and r["conversations"][1]["value"] == "OK"
    assert run_eval_stage(cfg) == summary  # finished: skipped
    first = run_eval_stage(config_from_params(EvalConfig, "smoke", run_dir=str(work), max_steps=6, max_new_tokens=24,
                                              max_tasks=3, label="first3", splits=("seen",)))
    assert first["seen"]["n"] == 3 and "unseen" not in first
    ids = {json.loads(x)["id"] for x in (work / "01_eval" / "first3" / "seen.jsonl").read_text().splitlines()}
    assert ids == {t.task_id for t in load_tasks(work, "seen")[:3]}


def _stub_server(responses):
    """A local OpenAI-compatible endpoint answering /chat/completions from a list of (status, body)."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            status, body = responses.pop(0) if responses else (200, None)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def _completion(text):
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "stub",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}


def test_openai_compatible_backend_against_a_local_stub(monkeypatch):
    server, seen = _stub_server([(500, {"error": "busy"}), (200, _completion("Thought: t\nAction: look\nObservation: x"))])
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    try:
        backend = OpenAIChatBackend(model="stub", base_url=f"http://127.0.0.1:{server.server_port}/v1",
                                    max_retries=2, timeout=5)
        out = backend.generate([[{"role": "user", "content": "hi"}]], Sampling(max_new_tokens=16))
    finally:
        server.shutdown()
    assert out == ["Thought: t\nAction: look"]
    assert len(seen) == 2 and seen[-1]["model"] == "stub" and seen[-1]["max_tokens"] == 16
