"""The rollout engine: prefix-cached generation equals the naive path, Monte Carlo records resume after a kill and
merge from shards, and the step rewards follow Eq. 1."""

import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from steca_lib.config import config_from_params
from steca_lib.data import chat_messages, recover_jsonl
from steca_lib.expert_data import load_expert
from steca_lib.generation import HFBackend, Request, Sampling
from steca_lib import kv_engine
from steca_lib.kv_engine import CachedHFBackend, gumbel_block
from steca_lib.models import load_model, load_tokenizer
from steca_lib.rollouts import RolloutConfig, load_rollouts, merge_shards, run_rollouts, turn_index
from steca_lib.step_rewards import mc_reward, step_reward_rows

REPO = Path(__file__).resolve().parent.parent


def fresh_run(smoke_run, tmp_path, name: str) -> Path:
    """A run folder holding the smoke run's stages 00 and 01 only."""
    src, _ = smoke_run
    dst = tmp_path / name
    for stage in ("00_environment", "01_sft"):
        shutil.copytree(src / stage, dst / stage)
    return dst


def comparable(records: list[dict]) -> dict:
    return {r["id"]: (r["meta"], r["conversations"]) for r in records}


@pytest.fixture(scope="module")
def model_and_tokenizer(smoke_run):
    path = smoke_run[0] / "01_sft" / "model"
    return load_model(path, device="cpu"), load_tokenizer(path)


def history_prompts(run: Path, n: int) -> list[list[dict]]:
    """Expert histories cut after 0, 2 and 4 actions: prompts that share long prefixes, like rollouts."""
    out = []
    for rec in load_expert(run)[:n]:
        msgs = chat_messages(rec["conversations"])
        out += [msgs[:3 + 2 * j] for j in (0, 2, 4) if 3 + 2 * j <= len(msgs)]
    return out


def test_cached_engine_equals_plain_generate(smoke_run, model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompts = history_prompts(smoke_run[0], 4)
    greedy = Sampling(max_new_tokens=40)
    plain = [HFBackend(model, tok).generate([p], greedy)[0] for p in prompts]
    engine = CachedHFBackend(model, tok)
    first = engine.generate(prompts, greedy)
    encoded_first = engine.encoded_tokens
    again = engine.generate(prompts, greedy)
    assert first == plain and again == plain
    # the second call finds every prompt cached and encodes one token per prompt (for its next-token logits)
    assert engine.encoded_tokens - encoded_first == len(prompts)


def test_cached_engine_samples_per_row_seeds(smoke_run, model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompts = history_prompts(smoke_run[0], 2)
    engine = CachedHFBackend(model, tok)
    settings = [Sampling(temperature=1.0, max_new_tokens=24, seed=s) for s in range(len(prompts))]
    batched = engine.generate(prompts, settings)
    alone = [CachedHFBackend(model, tok).generate([p], s)[0] for p, s in zip(prompts, settings)]
    assert batched == alone  # a row's sample does not depend on its batch neighbours
    assert engine.generate(prompts, [Sampling(temperature=1.0, max_new_tokens=24, seed=99)] * len(prompts)) != batched


def test_engine_hands_replies_back_as_they_end(smoke_run, model_and_tokenizer, monkeypatch):
    """Token-level continuous batching: a short reply comes back while a long one is still decoding, a prompt the
    caller readies in ``on_reply`` joins at once, and every reply equals plain ``generate`` on its own, through
    joins, packing and reframes of the key/value buffers."""
    model, tok = model_and_tokenizer
    prompts = history_prompts(smoke_run[0], 8)
    budgets = [4 if i % 3 else 40 for i in range(len(prompts))]
    settings = [Sampling(max_new_tokens=b, stop=()) for b in budgets]
    plain = [HFBackend(model, tok).generate([p], s)[0] for p, s in zip(prompts, settings)]
    reframes = []
    real_reframe = kv_engine._Slots.reframe
    monkeypatch.setattr(kv_engine._Slots, "reframe", lambda self, *a: reframes.append(a) or real_reframe(self, *a))
    waiting = [Request(p, s, i) for i, (p, s) in enumerate(zip(prompts, settings))]
    order, got = [], {}

    def take(n):
        batch, waiting[:] = waiting[:min(n, 1)], waiting[min(n, 1):]  # one request ready at a time
        return batch

    def on_reply(req, text):
        order.append(req.tag)
        got[req.tag] = text

    CachedHFBackend(model, tok).serve(take, on_reply, slots=3)
    assert [got[i] for i in range(len(prompts))] == plain
    assert order != sorted(order)  # short replies overtook the long first one
    assert reframes  # the shared clock ran past the buffers at least once


def test_lane_attention_equals_attention_over_the_longest_row():
    """Each lane attends over its own longest row's columns; masked columns before them change nothing."""
    import torch

    torch.manual_seed(0)
    rows, width = 6, 20
    q, k, v = torch.randn(rows, 4, 1, 8), torch.randn(rows, 2, width, 8), torch.randn(rows, 2, width, 8)
    held = [20, 3, 12, 5, 9, 1]  # columns each row holds, ending at the last one
    mask = torch.full((rows, 1, 1, width), torch.finfo(torch.float32).min)
    for r, n in enumerate(held):
        mask[r, ..., width - n:] = 0
    lanes = [(0, 2, 0), (2, 4, width - 12), (4, 6, width - 9)]
    out, _ = kv_engine.lane_attention(q, k, v, mask, 0.5, lanes)
    full = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.5, enable_gqa=True)
    torch.testing.assert_close(out, full.transpose(1, 2))


def test_packed_pass_attends_like_each_row_alone():
    """One pass packs a joining row's prompt tokens before the decode tokens: every decode token attends over its
    own row's columns up to the clock, and each prompt token over its row's columns up to itself."""
    import torch

    torch.manual_seed(0)
    cap, width, c = 4, 20, 15
    k, v = torch.randn(cap, 2, width, 8), torch.randn(cap, 2, width, 8)
    held = [10, 4, 7]  # columns before the clock of slots 0-2; slot 1 is joining: 1 cached column, 3 prompt tokens
    e = 3
    q = torch.randn(1, 4, e + len(held), 8)
    span = max(held) + 1
    mask = torch.full((len(held), 1, 1, span), torch.finfo(torch.float32).min)
    for r, n in enumerate(held):
        mask[r, ..., span - n - 1:] = 0
    cols = torch.arange(held[1])
    engine_pass = kv_engine._Pass(len(held), c, c + 1 - span, [(0, len(held), 0)],
                                  [(1, c - held[1], e, cols[None, :] <= cols[held[1] - e:, None])],
                                  torch.tensor([1] * e), torch.arange(c - e, c))
    out, _ = kv_engine.slot_attention(None, q, k, v, mask, 0.5, engine_pass=engine_pass)

    def alone(query, slot, first, last):  # attention over the slot's columns first..last
        return torch.nn.functional.scaled_dot_product_attention(
            query, k[slot:slot + 1, :, first:last + 1], v[slot:slot + 1, :, first:last + 1], scale=0.5,
            enable_gqa=True).transpose(1, 2)[0, 0]

    for i in range(e):
        torch.testing.assert_close(out[0, i], alone(q[:, :, i:i + 1], 1, c - held[1], c - e + i))
    for r, n in enumerate(held):
        torch.testing.assert_close(out[0, e + r], alone(q[:, :, e + r:e + r + 1], r, c - n, c))


def test_joining_prompts_go_to_the_lane_of_their_length(model_and_tokenizer):
    model, tok = model_and_tokenizer
    slots = kv_engine._Slots(CachedHFBackend(model, tok), cap=8, width=16)  # 4 lanes of 2 slots
    def occupied():
        return kv_engine._Slot(Request([], Sampling()), np.zeros(0, dtype=np.int64), None, None, None, 8)

    for s, n in ((0, 900), (2, 500), (4, 300), (6, 100)):  # one live row per lane, longest first
        slots.slots[s], slots.length[s] = occupied(), n
    assert slots.place([950, 120, 520]) == [1, 7, 3]
    slots.slots[7] = occupied()
    assert slots.place([80]) == [5]  # its lane is full: the nearest lane with a free slot


def test_cached_engine_reports_prompts_beyond_context(model_and_tokenizer):
    model, tok = model_and_tokenizer
    small = CachedHFBackend(model, tok, max_context=64)
    long = [{"role": "user", "content": "go to cabinet 1 " * 40}]
    assert small.generate([long, [{"role": "user", "content": "go"}]], Sampling(max_new_tokens=8))[0] is None


def test_engine_records_equal_naive_path(smoke_run, tmp_path):
    params = dict(n_tasks=1, max_steps=5, n_samples=3, max_new_tokens=32)
    run_a, run_b = fresh_run(smoke_run, tmp_path, "engine"), fresh_run(smoke_run, tmp_path, "naive")
    summary = run_rollouts(config_from_params(RolloutConfig, "smoke", run_dir=str(run_a), **params))
    run_rollouts(config_from_params(RolloutConfig, "smoke", run_dir=str(run_b), backend="hf", batch_size=1,
                                    **params))
    a, b = comparable(load_rollouts(run_a)), comparable(load_rollouts(run_b))
    assert a.keys() == b.keys() and len(a) == summary["expected"] > 0
    greedy = [k for k in a if k.endswith("/-1")]
    assert all(a[k] == b[k] for k in greedy)
    # sampled continuations (other random streams): the agent's sampled turns have the same length distribution up to
    # sampling noise, pooled over every continuation (3 standard errors; the sampler's distribution itself is tested
    # below). The smoke agent rarely succeeds, so turn lengths are the statistic that varies.
    def sampled_turn_lengths(run):
        return [len(t["value"]) for r in load_rollouts(run) if r["sample"] != -1
                for t in r["conversations"][turn_index(r["step"]) + 1:] if t["from"] == "gpt"]

    x, y = sampled_turn_lengths(run_a), sampled_turn_lengths(run_b)
    assert statistics.pstdev(x) > 0 and statistics.pstdev(y) > 0  # sampling, not the greedy answer repeated
    se = math.sqrt(statistics.pvariance(x) / len(x) + statistics.pvariance(y) / len(y))
    assert abs(statistics.mean(x) - statistics.mean(y)) <= 3 * se, (statistics.mean(x), statistics.mean(y), se)


def test_engine_sampler_draws_from_the_softmax():
    """The engine samples by Gumbel-max; with greedy outputs equal (same logits), this makes its continuations
    follow the naive path's distribution softmax(logits / T)."""
    import torch

    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
    for temperature in (1.0, 0.5):
        gen = torch.Generator().manual_seed(0)
        draws = torch.cat([(logits / temperature + gumbel_block(gen, 5, "cpu")).argmax(-1) for _ in range(1500)])
        freq = torch.bincount(draws, minlength=5).float() / len(draws)
        assert (freq - torch.softmax(logits / temperature, -1)).abs().sum() < 0.03


@pytest.fixture(scope="module")
def uninterrupted(smoke_run, tmp_path_factory):
    run = fresh_run(smoke_run, tmp_path_factory.mktemp("ref"), "ref")
    summary = run_rollouts(config_from_params(RolloutConfig, "smoke", run_dir=str(run), n_tasks=2))
    assert summary["records"] == summary["expected"]
    return comparable(load_rollouts(run))


def test_killed_run_resumes_to_the_same_records(smoke_run, tmp_path, uninterrupted):
    run = fresh_run(smoke_run, tmp_path, "killed")
    out = run / "02_rollouts" / "rollouts.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "steca_lib.rollouts", "--profile", "smoke", "--run-dir",
                             str(run), "--n-tasks", "2"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 12:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(recover_jsonl(out))
    assert 12 <= partial < len(uninterrupted), "the kill must land midway"
    summary = run_rollouts(config_from_params(RolloutConfig, "smoke", run_dir=str(run), n_tasks=2))
    assert summary["new_records"] == len(uninterrupted) - partial
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == len({r["id"] for r in lines})  # nothing duplicated
    assert comparable(load_rollouts(run)) == uninterrupted


def test_shards_merge_to_the_unsharded_records(smoke_run, tmp_path, uninterrupted):
    run = fresh_run(smoke_run, tmp_path, "sharded")
    cfgs = [config_from_params(RolloutConfig, "smoke", run_dir=str(run), n_tasks=2, shard=f"{i}/2") for i in (0, 1)]
    run_rollouts(cfgs[0])
    with pytest.raises(RuntimeError, match="missing"):
        merge_shards(cfgs[0])
    run_rollouts(cfgs[1])
    merge_shards(cfgs[0])
    assert comparable(load_rollouts(run)) == uninterrupted


def test_bad_shard_is_rejected():
    with pytest.raises(ValueError, match="i/n"):
        config_from_params(RolloutConfig, "smoke", shard="2").shard_index()
    with pytest.raises(ValueError, match="0 <= i < n"):
        config_from_params(RolloutConfig, "smoke", shard="2/2").shard_index()


def _rec(step, branch, sample, success, action="go to desk 1"):
    return {"id": f"t/{step}/{branch}/{sample}", "task_id": "t", "family": "f", "step": step, "branch": branch,
            "sample": sample, "expert_action": "go to desk 1", "action": action,
            "meta": {"success": success, "reward": float(success)}, "conversations": []}


def test_step_reward_is_the_mean_success_of_the_samples():
    records = [_rec(0, "explored", -1, False, "go to bed 1"), _rec(0, "explored", 0, True, "go to bed 1"),
               _rec(0, "explored", 1, False, "go to bed 1"), _rec(0, "explored", 2, False, "go to bed 1"),
               _rec(0, "expert", 0, True), _rec(0, "expert", 1, True), _rec(0, "expert", 2, False)]
    (row,) = step_reward_rows(records)
    assert row["explored_reward"] == pytest.approx(1 / 3) and row["expert_reward"] == pytest.approx(2 / 3)
    assert row["explored_action"] == "go to bed 1" and not row["same_action"] and not row["greedy_success"]
    assert mc_reward(records[4:6]) == 1.0


def test_recover_jsonl_drops_a_cut_last_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"id": 1}\n{"id": 2}\n{"id": 3, "cut')
    assert recover_jsonl(p) == [{"id": 1}, {"id": 2}]
    assert p.read_text() == '{"id": 1}\n{"id": 2}\n'
