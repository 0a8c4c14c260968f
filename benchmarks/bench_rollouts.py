"""Rollout engine vs the naive path vs the hardware limit, measured side by side in one run.

    .venv/bin/python benchmarks/bench_rollouts.py --run-dir runs/cpu-seed0 [--tasks 4] [--samples 5]

Needs stages 00 and 01 of that run. On the same model, tasks and N it runs stage 02's work twice:
(a) naive: one ``generate`` call per episode per turn on the full history, episodes one after another (what the
paper's pipeline does per worker request); (b) the engine: prefix-cached generation with token-level continuous
batching. The naive path runs until ``--naive-budget`` seconds and is measured on the episodes it finished in that
time. (c) limit: tokens/s of a bare batched forward pass (one new token per row, KV cache of the engine's
mean prompt length) at the engine's batch size. Prints env-steps/s and generated tokens/s of each, then
``speedup: <engine/naive>`` and ``limit_fraction: <engine/limit>``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from steca_lib.config import config_from_params
from steca_lib.generation import HFBackend, serving
from steca_lib.kv_engine import CachedHFBackend
from steca_lib.models import load_model, load_tokenizer
from steca_lib.rollouts import RolloutConfig, run_rollouts
from steca_lib.artifacts import require_model
from steca_lib.errors import run_cli
from steca_lib.sft import model_dir as sft_model_dir


class OutOfTime(Exception):
    pass


class Counting:
    """Wraps a backend to count replies (= environment steps taken by the agent) and stop after ``budget_s``."""

    def __init__(self, backend, budget_s: float | None):
        self.backend, self.replies, self.budget_s = backend, 0, budget_s
        self.start = time.perf_counter()

    @property
    def generated_tokens(self) -> int:
        return self.backend.generated_tokens

    def serve(self, take, on_reply, slots):
        def timed_take(n):
            if self.budget_s is not None and time.perf_counter() - self.start > self.budget_s:
                raise OutOfTime
            return take(n)

        def counted(req, reply):
            self.replies += 1
            on_reply(req, reply)

        serving(self.backend)(timed_take, counted, slots)


def measure(cfg: RolloutConfig, backend, budget_s: float | None = None) -> dict:
    """Run stage 02's work (all of it, or what fits in ``budget_s``) and return its rates."""
    counting = Counting(backend, budget_s)
    tokens0 = backend.generated_tokens
    try:
        run_rollouts(cfg, counting)
        complete = True
    except OutOfTime:
        complete = False
    wall = time.perf_counter() - counting.start
    episodes = sum(1 for _ in open(cfg.path / "02_rollouts" / "rollouts.jsonl"))
    return {"wall_s": wall, "episodes": episodes, "complete": complete,
            "env_steps_per_s": counting.replies / wall, "tokens_per_s": (backend.generated_tokens - tokens0) / wall}


def forward_limit(model, batch: int, context: int, steps: int = 32, repeats: int = 5) -> float:
    """Tokens/s of bare one-token forward passes for ``batch`` rows over a ``context``-token static KV cache: the
    median of ``repeats`` runs of ``steps`` passes (single runs varied by ±10% on a 2-core machine)."""
    return statistics.median(_forward_rate(model, batch, context, steps) for _ in range(repeats))


def _forward_rate(model, batch: int, context: int, steps: int) -> float:
    from transformers import StaticCache

    cache = StaticCache(config=model.config, max_cache_len=context + steps + 1)
    mask = torch.ones(batch, context + steps + 1, dtype=torch.long)
    with torch.inference_mode():
        model(input_ids=torch.ones(batch, context, dtype=torch.long), attention_mask=mask[:, :context],
              cache=cache, use_cache=True)
        tok = torch.ones(batch, 1, dtype=torch.long)
        t0 = time.perf_counter()
        for t in range(steps):
            pos = torch.full((batch, 1), context + t)
            model(input_ids=tok, attention_mask=mask[:, :context + t + 1], position_ids=pos, cache=cache,
                  use_cache=True)
        return batch * steps / (time.perf_counter() - t0)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default="runs/cpu-seed0")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--naive-budget", type=float, default=300.0,
                    help="seconds the naive path may run (it measures rates on the episodes it finishes)")
    args = ap.parse_args(argv)
    src = Path(args.run_dir)
    model_dir = require_model(sft_model_dir(src), "run stages 00 and 01 of that run first: python -m "
                              f"steca_lib.reproduce --profile {args.profile} --seeds 0 --only 00 01")
    model, tok = load_model(model_dir, device="cpu"), load_tokenizer(model_dir)
    print(f"model {model_dir}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"torch threads {torch.get_num_threads()}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, backend, batch in (("naive", HFBackend(model, tok), 1),
                                     ("engine", CachedHFBackend(model, tok), args.batch_size)):
            run = Path(tmp) / name
            shutil.copytree(src / "00_environment", run / "00_environment")
            cfg = config_from_params(RolloutConfig, args.profile, run_dir=str(run), n_tasks=args.tasks,
                                     n_samples=args.samples, batch_size=batch, model_dir=str(model_dir))
            results[name] = measure(cfg, backend, args.naive_budget if name == "naive" else None)
            if name == "engine":
                engine_batch = cfg.batch_size
                mean_prompt = backend.prompt_tokens / max(backend.prompts_served, 1)
    limit = forward_limit(model, engine_batch, int(mean_prompt))
    for name, r in results.items():
        budget = "" if r["complete"] else " (time budget)"
        print(f"{name:>7}: {r['episodes']} episodes{budget} in {r['wall_s']:.1f} s, "
              f"{r['env_steps_per_s']:.1f} env-steps/s, {r['tokens_per_s']:.1f} generated tokens/s")
    print(f"  limit: {limit:.1f} tokens/s (bare forward, batch {engine_batch}, KV cache {int(mean_prompt)} tokens)")
    print(f"speedup: {results['engine']['tokens_per_s'] / results['naive']['tokens_per_s']:.2f}")
    print(f"limit_fraction: {results['engine']['tokens_per_s'] / limit:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
