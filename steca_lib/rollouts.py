"""Stage 02: exploration along expert trajectories and Monte Carlo rollouts (the paper's §3.2, Eq. 1).

For training task i and step j (0 ≤ j < T_i), the expert prefix a_1..a_j is replayed and two branches start:

* ``explored``: the agent's greedy action â_{j+1}, then greedy to the end (``sample = -1``; j = 0 is a full greedy
  episode, reused later as an explored trajectory), plus N sampled continuations after â_{j+1};
* ``expert``: the expert's action a_{j+1}, plus N sampled continuations after it.

r(s_j, a) = mean final success of the N continuations after a (computed in :mod:`steca_lib.step_rewards`).
Every episode is one record keyed ``<task>/<j>/<branch>/<sample>``, appended to JSONL as it finishes; a rerun
skips finished keys (a kill loses only the episodes in flight), ``shard="i/n"`` takes every n-th task, and
:func:`merge_shards` joins shard files. Sampled continuations branch by copying the live environment.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator

from steca_lib.artifacts import (discard_if_inputs_changed, finished_summary, model_inputs, stage_dir, upstream,
                                 write_manifest)
from steca_lib.backends import GenerationSettings, open_backend
from steca_lib.config import RunSettings, check_config, reject, stage_main
from steca_lib.data import append_jsonl, chat_messages, read_jsonl, recover_jsonl, write_jsonl_atomic
from steca_lib.envs import AgentEnv, BenchmarkTask
from steca_lib.envs.base import replay
from steca_lib.errors import DegenerateOutput, StageNotFinished
from steca_lib.episodes import Episode, advance, run_episodes
from steca_lib.expert_data import load_expert, load_tasks
from steca_lib.generation import GenerationBackend, Sampling
from steca_lib.prompts import parse_react_action
from steca_lib.sft import model_dir as sft_model_dir
from steca_lib.sft import require_sft_model

STAGE = "02_rollouts"
GREEDY = -1
EXECUTORS = ("local", "ray")
#: Settings that do not change the records: where and how the work runs (the finished check leaves them out).
HOW_IT_RUNS = ("run_dir", "extra", "shard", "backend", "batch_size", "executor", "ray_shards", "ray_cpus",
               "ray_address")
log = logging.getLogger(__name__)


@dataclass
class RolloutConfig(RunSettings, GenerationSettings):
    """Stage 02: which tasks to explore and how many Monte Carlo continuations per branch."""

    PROFILE_DEFAULTS: ClassVar[dict[str, dict]] = {
        "smoke": {"n_tasks": 3, "n_samples": 2, "max_steps": 8, "max_new_tokens": 48, "batch_size": 24},
        "cpu": {"n_tasks": 16, "n_samples": 5, "max_steps": 40, "max_new_tokens": 64, "batch_size": 96},
        "cpu-llm": {"n_tasks": 24, "n_samples": 5, "max_steps": 40, "max_new_tokens": 128, "batch_size": 32},
        "paper": {"n_tasks": None, "n_samples": 5, "max_steps": 40, "max_new_tokens": 512, "batch_size": 256,
                  "backend": "vllm", "dtype": "bfloat16"},
        "cpu-scienceworld": {"n_tasks": 18, "max_steps": 20, "batch_size": 24},
    }

    model_dir: str = ""
    """Policy that explores and rolls out; empty = ``<run>/01_sft/model`` (the paper's π_base)."""
    n_tasks: int | None = None
    """Explore the first N training tasks (None = all)."""
    n_samples: int = 5
    """Monte Carlo continuations per branch (paper: N = 5)."""
    temperature: float = 1.0
    """Sampling temperature of the continuations (paper: 1)."""
    top_p: float = 1.0
    """Nucleus sampling of the continuations (paper: 1)."""
    shard: str = "0/1"
    """``i/n``: this process explores tasks k with k % n == i; join shards with ``merge_shards``."""
    executor: str = "local"
    """``local`` (this process) or ``ray``: the shards run as Ray tasks on the cluster ``ray.init`` reaches, then
    merge (:mod:`steca_lib.ray_exploration`; the ``ray`` extra)."""
    ray_shards: int = 0
    """With ``executor="ray"``: how many shards (0 = one per ``ray_cpus`` CPUs of the cluster)."""
    ray_cpus: int = 1
    """With ``executor="ray"``: CPUs (torch threads) per shard."""
    ray_address: str = ""
    """With ``executor="ray"``: the cluster (empty = ``$RAY_ADDRESS``, else a local Ray on this machine)."""

    def __post_init__(self):
        self.check_generation()
        check_config(self, counts=("n_samples", "ray_cpus"), optional_counts=("n_tasks",),
                     non_negative=("temperature", "ray_shards"), choices={"executor": EXECUTORS})
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise reject(self, "top_p", "a number in (0, 1]")
        self.shard_index()

    def shard_index(self) -> tuple[int, int]:
        try:
            i, n = (int(x) for x in str(self.shard).split("/"))
        except ValueError:
            raise reject(self, "shard", "'i/n'") from None
        if not 0 <= i < n:
            raise reject(self, "shard", "'i/n' with 0 <= i < n")
        return i, n

    def policy_dir(self) -> str:
        """The model that explores and rolls out."""
        return self.model_dir or str(sft_model_dir(self.path))

    def greedy(self) -> Sampling:
        return Sampling(temperature=0.0, max_new_tokens=self.max_new_tokens, seed=self.seed)

    def sampled(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens,
                        seed=self.seed)


def rollout_key(task_id: str, step: int, branch: str, sample: int) -> str:
    return f"{task_id}/{step}/{branch}/{sample}"


def turn_index(step: int) -> int:
    """Position of the agent turn that takes action ``step + 1``: after the instruction, ``OK`` and the task,
    each step adds an agent turn and an observation."""
    return 3 + 2 * step


@dataclass
class ExpertPath:
    """A training task with its expert conversation (role/content) and actions."""

    task: BenchmarkTask
    messages: list[dict]
    actions: list[str]

    def prefix(self, j: int, max_steps: int) -> tuple[AgentEnv, list[dict]]:
        """The environment after the expert's first j actions, and the history the agent sees there."""
        env = replay(self.task.make_env(max_steps), self.actions[:j])
        return env, copy.deepcopy(self.messages[:turn_index(j)])

    def reply(self, j: int) -> str:
        """The expert's (j+1)-th turn (thought and action)."""
        return self.messages[turn_index(j)]["content"]


def first_action(messages: list[dict], step: int) -> str | None:
    """The action of the branch's first turn (None when the episode ended before it, e.g. context limit)."""
    turn = turn_index(step)
    return parse_react_action(messages[turn]["content"]) if len(messages) > turn else None


def expert_paths(run_dir: Path, n_tasks: int | None, split: str = "train") -> list[ExpertPath]:
    """The first ``n_tasks`` expert trajectories of a split (None = all) with their tasks and parsed actions."""
    tasks = {t.task_id: t for t in load_tasks(run_dir, split)}
    paths = []
    for rec in load_expert(run_dir, split)[:n_tasks]:
        messages = chat_messages(rec["conversations"])
        actions = [parse_react_action(m["content"]) for m in messages[3::2]]
        paths.append(ExpertPath(tasks[rec["id"]], messages, actions))
    return paths


class RolloutPlan:
    """Creates the episodes of one shard, skipping keys already on disk, and writes each finished one."""

    def __init__(self, cfg: RolloutConfig, paths: list[ExpertPath], done: dict[str, dict], sink):
        self.cfg, self.paths, self.done, self.sink = cfg, paths, done, sink

    def steps(self, p: ExpertPath) -> range:
        """Branch points of a task: every expert step whose action still fits the step limit."""
        return range(min(len(p.actions), self.cfg.max_steps - 1))

    def expected_keys(self) -> list[str]:
        keys = []
        for p in self.paths:
            for j in self.steps(p):
                for branch in ("explored", "expert"):
                    samples = range(self.cfg.n_samples) if branch == "expert" else range(-1, self.cfg.n_samples)
                    keys += [rollout_key(p.task.task_id, j, branch, s) for s in samples]
        return keys

    def _episode(self, p: ExpertPath, j: int, branch: str, sample: int) -> Episode:
        env, messages = p.prefix(j, self.cfg.max_steps)
        meta = {"task_id": p.task.task_id, "family": p.task.family, "step": j, "branch": branch,
                "sample": sample, "expert_action": p.actions[j]}
        return Episode(key=rollout_key(p.task.task_id, j, branch, sample), env=env, messages=messages,
                       meta=meta, sampling=self.cfg.greedy() if sample == GREEDY else self.cfg.sampled())

    def _branch_copies(self, parent: Episode, branch: str) -> list[Episode]:
        """The N sampled continuations after ``parent``'s first action: copies of its state (finished at
        once when that action ended the episode)."""
        m = parent.meta
        action = first_action(parent.messages, m["step"])
        out = []
        for s in range(self.cfg.n_samples):
            key = rollout_key(m["task_id"], m["step"], branch, s)
            if key not in self.done:
                out.append(Episode(key=key, env=parent.env.clone(), messages=copy.deepcopy(parent.messages),
                                   meta={**m, "branch": branch, "sample": s, "action": action},
                                   reward=parent.reward, done=parent.done, terminate_reason=parent.terminate_reason,
                                   agent_turns=parent.agent_turns, sampling=self.cfg.sampled()))
        return out

    def episodes(self) -> Iterator[Episode]:
        """Greedy explored episodes (their copies spawn after the first turn) and expert-action copies."""
        for p in self.paths:
            for j in self.steps(p):
                greedy = rollout_key(p.task.task_id, j, "explored", GREEDY)
                if greedy not in self.done:
                    yield self._episode(p, j, "explored", GREEDY)
                else:  # rebuild the state after the recorded explored action, for missing copies
                    turns = self.done[greedy]["conversations"]
                    ep = self._episode(p, j, "explored", GREEDY)
                    advance(ep, turns[turn_index(j)]["value"] if len(turns) > turn_index(j) else None)
                    yield from self._branch_copies(ep, "explored")
                ep = self._episode(p, j, "expert", 0)
                advance(ep, p.reply(j))
                yield from self._branch_copies(ep, "expert")

    def after_turn(self, ep: Episode) -> list[Episode]:
        """After the greedy explored episode's first turn, branch its N sampled continuations."""
        if ep.meta["sample"] == GREEDY and "action" not in ep.meta:
            ep.meta["action"] = first_action(ep.messages, ep.meta["step"])
            return self._branch_copies(ep, "explored")
        return []

    def finish(self, ep: Episode) -> None:
        rec = ep.record()
        self.done[ep.key] = rec
        self.sink(rec)


def shard_file(out: Path, i: int, n: int) -> Path:
    return out / ("rollouts.jsonl" if n == 1 else f"rollouts.shard-{i}-of-{n}.jsonl")


def rollout_inputs(cfg: RolloutConfig) -> dict[str, str]:
    """What the rollouts are made from: stage 00's tasks and expert paths, and the exploring model's stage."""
    return {**upstream(cfg.path, "00_environment"), **(model_inputs(cfg.policy_dir()) or {})}


def run_rollouts(cfg: RolloutConfig, backend: GenerationBackend | None = None) -> dict:
    """Explore and roll out this shard's tasks; resumes from the records on disk. Returns a summary; writes the
    manifest when the whole stage (an unsharded run) is complete."""
    i, n = cfg.shard_index()
    if backend is None:
        require_sft_model(cfg.policy_dir(), "model_dir")
    inputs = rollout_inputs(cfg)
    compare = tuple(k for k in vars(cfg) if k not in HOW_IT_RUNS)
    if cfg.executor == "ray" and n == 1:  # the shards run as Ray tasks, each through this function
        from steca_lib.ray_exploration import run_on_ray

        done_summary = finished_summary(stage_dir(cfg.path, STAGE), cfg, compare, inputs=inputs)
        return done_summary if done_summary is not None else run_on_ray(cfg)
    paths = expert_paths(cfg.path, cfg.n_tasks)[i::n]
    if not paths and n == 1:
        raise DegenerateOutput(f"{cfg.path} has no training task to explore (n_tasks = {cfg.n_tasks}); run stage 00 "
                               "with n_train ≥ 1")
    out = stage_dir(cfg.path, STAGE)
    done_summary = finished_summary(out, cfg, compare, inputs=inputs)
    if done_summary is not None:
        return done_summary
    started = time.time()
    discard_if_inputs_changed(out, inputs)
    target = shard_file(out, i, n)
    done = {r["id"]: r for r in recover_jsonl(target)}
    before = len(done)
    with target.open("a", encoding="utf-8") as f:
        plan = RolloutPlan(cfg, paths, done, lambda rec: append_jsonl(f, rec))
        expected = plan.expected_keys()
        missing = sum(k not in done for k in expected)
        if missing:
            if backend is None:
                backend = open_backend(cfg.backend, cfg.policy_dir(), cfg.dtype)
            tokens_before = getattr(backend, "generated_tokens", 0)
            t0 = time.time()
            run_episodes(plan.episodes(), backend, cfg.greedy(), cfg.batch_size, on_finish=plan.finish,
                         total=missing, desc=f"rollouts {cfg.shard}", after_turn=plan.after_turn)
            elapsed = time.time() - t0
            generated = getattr(backend, "generated_tokens", 0) - tokens_before
        else:
            elapsed, generated = 0.0, 0
    summary = {"shard": cfg.shard, "tasks": len(paths), "records": sum(k in done for k in expected),
               "expected": len(expected), "new_records": len(done) - before, "wall_s": round(elapsed, 1),
               "generated_tokens": generated,
               "tokens_per_s": round(generated / elapsed, 1) if elapsed and generated else None}
    if n == 1 and summary["records"] == summary["expected"]:
        write_manifest(out, STAGE, cfg, summary, started, inputs)
    return summary


def merge_shards(cfg: RolloutConfig) -> dict:
    """Join ``rollouts.shard-*-of-n.jsonl`` into ``rollouts.jsonl`` (one record per key, in plan order) once
    every expected key is there, and mark the stage complete."""
    started = time.time()
    out = stage_dir(cfg.path, STAGE)
    shards = sorted(out.glob("rollouts.shard-*-of-*.jsonl"))
    if not shards:
        raise StageNotFinished(f"no shard files in {out}; run the shards first (--shard i/n)")
    records = {r["id"]: r for s in shards for r in read_jsonl(s)}
    expected = RolloutPlan(cfg, expert_paths(cfg.path, cfg.n_tasks), {}, None).expected_keys()
    missing = [k for k in expected if k not in records]
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(expected)} rollouts missing (e.g. {missing[0]}); "
                           f"finish the shards first")
    write_jsonl_atomic([records[k] for k in expected], out / "rollouts.jsonl")
    summary = {"tasks": len({k.split('/')[0] for k in expected}), "records": len(expected),
               "merged_from": [s.name for s in shards]}
    write_manifest(out, STAGE, cfg, summary, started, rollout_inputs(cfg))
    return summary


def load_rollouts(run_dir: Path) -> list[dict]:
    """The finished stage's rollout records."""
    return read_jsonl(Path(run_dir) / STAGE / "rollouts.jsonl")


def main(argv: list[str] | None = None) -> int:
    return stage_main(RolloutConfig, run_rollouts, "Stage 02: exploration and Monte Carlo rollouts (after stage 01).",
                      argv, options=(("--n-tasks", "n_tasks", {"type": int, "help": "explore the first N tasks"}),
                                     ("--shard", "shard", {"help": "i/n: run every n-th task starting at i"})),
                      actions={"--merge": ("join finished shards into rollouts.jsonl", merge_shards)})


if __name__ == "__main__":
    raise SystemExit(main())
