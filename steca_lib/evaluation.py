"""Stage 01b (and 06): evaluate an agent on the seen / unseen splits with batched episodes.

Per-task records follow the paper's evaluation output (``meta`` with steps, reward, success, termination reason,
plus the full conversation) and are appended to JSONL as episodes finish, so an interrupted evaluation resumes.
Success rates come with percentile-bootstrap 95% confidence intervals.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, ClassVar

from steca_lib.artifacts import (discard_if_inputs_changed, finished_summary, model_inputs, stage_dir, upstream,
                                 write_manifest)
from steca_lib.backends import GenerationSettings, open_backend
from steca_lib.config import RunSettings, check_config, reject
from steca_lib.data import append_jsonl, chat_messages, read_jsonl, recover_jsonl
from steca_lib.envs import BenchmarkTask
from steca_lib.errors import DegenerateOutput
from steca_lib.episodes import Episode, run_episodes
from steca_lib.expert_data import load_expert, load_tasks, run_instruction
from steca_lib.generation import GenerationBackend, Sampling
from steca_lib.metrics import bootstrap_ci
from steca_lib.prompts import INSTRUCTION
from steca_lib.sft import model_dir as sft_model_dir
from steca_lib.sft import require_sft_model


#: Where episodes can play, and the task splits an evaluation can name (``dev``: carved from training floorplans).
ENGINES = ("embedded", "alfworld")
SPLITS = ("seen", "unseen", "dev", "train")


@dataclass
class EvalConfig(RunSettings, GenerationSettings):
    """How to evaluate one model on the test splits."""

    PROFILE_DEFAULTS: ClassVar[dict[str, dict]] = {
        "smoke": {"max_new_tokens": 32, "batch_size": 18, "max_steps": 8},
        "cpu": {"max_new_tokens": 128, "batch_size": 48, "max_tasks": 70},
        "cpu-llm": {"max_new_tokens": 128, "batch_size": 16, "max_tasks": 30},
        "paper": {"max_new_tokens": 512, "batch_size": 64, "icl_num": 1, "dtype": "bfloat16"},
        "cpu-scienceworld": {"max_new_tokens": 64, "batch_size": 20, "max_steps": 20},
    }

    label: str = "sft"
    """Name of the evaluated agent; results go to ``<stage>/<label>/``."""
    model_dir: str = ""
    """Model folder; empty = ``<run>/01_sft/model``."""
    splits: tuple[str, ...] = ("seen", "unseen")
    """Which splits to evaluate."""
    max_tasks: int | None = None
    """Evaluate the first N tasks of each split (None = all; cpu: 70, half of each test split, families balanced, so
    that a seed fits in an hour on 2 cores; cpu-llm: 30, as a 135M model plays slowly on a CPU)."""
    temperature: float = 0.0
    """0 = greedy, as in the paper's evaluation."""
    icl_num: int = 0
    """In-context examples between ``OK`` and the task (paper: 1; the embedded model is trained without)."""
    engine: str = "embedded"
    """Where episodes play: ``embedded`` (the kit's world) or ``alfworld`` (ALFWorld's real engine, extra needed)."""
    alfworld_data: str = ""
    """With engine ``alfworld``: the released data folder (empty = the run's tasks compiled into ALFWorld games)."""
    alfworld_arrival_prefix: bool = True
    """With engine ``alfworld``: keep the engine's ``You arrive at X.``; False drops it (a text-shift diagnostic)."""
    n_bootstrap: int = 10_000
    """Bootstrap resamples for the confidence intervals."""

    def __post_init__(self):
        self.check_generation()
        check_config(self, counts=("n_bootstrap",), optional_counts=("max_tasks",),
                     non_negative=("temperature", "icl_num"), choices={"engine": ENGINES}, folder_names=("label",))
        self.splits = tuple(self.splits) if isinstance(self.splits, (list, tuple)) else self.splits
        if not isinstance(self.splits, tuple) or not self.splits or not set(self.splits) <= set(SPLITS):
            raise reject(self, "splits", f"a non-empty list of {', '.join(SPLITS)}")

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, max_new_tokens=self.max_new_tokens, seed=self.seed)


def icl_messages(run_dir: Path, n: int) -> list[dict]:
    """The first ``n`` training expert trajectories as in-context example turns (task ... last action)."""
    records = load_expert(run_dir)[:n] if n else []
    return [m for r in records for m in chat_messages(r["conversations"][2:])]


def initial_messages(opening: str, icl: list[dict], instruction: str = INSTRUCTION) -> list[dict]:
    """The paper's prompt layout: instruction, ``OK``, in-context example turns, then the task."""
    return [{"role": "user", "content": instruction}, {"role": "assistant", "content": "OK"}, *icl,
            {"role": "user", "content": opening}]


def task_episode(task: BenchmarkTask, max_steps: int, icl: list[dict], instruction: str = INSTRUCTION) -> Episode:
    """A fresh episode of a task, ready for the agent's first turn."""
    env = task.make_env(max_steps)
    return Episode(key=task.task_id, env=env, messages=initial_messages(env.reset(), icl, instruction),
                   meta={"split": task.split, "family": task.family, "game_file": task.game_file})


def alfworld_episode(key: str, path: Path, family: str, split: str, cfg: EvalConfig, icl: list[dict]) -> Episode:
    """A fresh episode of one game in ALFWorld's real engine."""
    from steca_lib.envs.alfworld import AlfworldEnv

    env = AlfworldEnv(path, key, split, cfg.max_steps, cfg.alfworld_arrival_prefix)
    return Episode(key=key, env=env, messages=initial_messages(env.reset(), icl),
                   meta={"split": split, "family": family, "game_file": str(path)})


def alfworld_episodes(cfg: EvalConfig, split: str, icl: list[dict]) -> dict[str, Callable[[], Episode]]:
    """Episodes in ALFWorld's real engine: the released games of ``split``, or the run's own tasks compiled."""
    from steca_lib.envs.alfworld import released_games, write_games

    if cfg.alfworld_data:
        games = [(g.game_id, g.path, g.family) for g in released_games(cfg.alfworld_data, split)[:cfg.max_tasks]]
    else:
        tasks = load_tasks(cfg.path, split)[:cfg.max_tasks]
        paths = write_games(tasks, cfg.path / "00_environment" / "alfworld")
        games = [(t.task_id, p, t.family) for t, p in zip(tasks, paths)]
    return {key: partial(alfworld_episode, key, path, family, split, cfg, icl) for key, path, family in games}


def split_episodes(cfg: EvalConfig, split: str, icl: list[dict]) -> dict[str, Callable[[], Episode]]:
    """How to start each task of a split (the first ``max_tasks``) in the configured engine, by task id. Episodes
    start when they join the pool: an environment may hold a simulator from its reset on."""
    if cfg.engine == "alfworld":
        return alfworld_episodes(cfg, split, icl)
    instruction = run_instruction(cfg.path)
    return {t.task_id: partial(task_episode, t, cfg.max_steps, icl, instruction)
            for t in load_tasks(cfg.path, split)[:cfg.max_tasks]}


def play_and_record(episodes: dict[str, Episode | Callable[[], Episode]], backend: GenerationBackend,
                    cfg: EvalConfig, out_file: Path, n_icl: int = 0, desc: str = "") -> list[dict]:
    """Play every episode (or episode factory) whose key is not yet in ``out_file`` (JSONL, appended as episodes
    finish), then return the records of all ``episodes`` in their order. In-context example turns are left out of
    the records."""
    done_ids = {r["id"] for r in recover_jsonl(out_file)}
    keys = [key for key in episodes if key not in done_ids]
    todo = (episodes[key]() if callable(episodes[key]) else episodes[key] for key in keys)

    with out_file.open("a", encoding="utf-8") as f:
        def save(ep: Episode) -> None:
            rec = ep.record()
            rec["conversations"] = rec["conversations"][:2] + rec["conversations"][2 + n_icl:]  # drop ICL turns
            append_jsonl(f, rec)

        run_episodes(todo, backend, cfg.sampling(), cfg.batch_size, on_finish=save, total=len(keys),
                     desc=desc or f"eval {out_file.stem}")
    order = {key: i for i, key in enumerate(episodes)}
    records = [r for r in read_jsonl(out_file) if r["id"] in order]
    return sorted(records, key=lambda r: order[r["id"]])


def evaluate_split(backend: GenerationBackend, split: str, cfg: EvalConfig, out_file: Path,
                   icl: list[dict]) -> list[dict]:
    """Play every task of a split from its start (resuming ``out_file``); return all records in task order."""
    return play_and_record(split_episodes(cfg, split, icl), backend, cfg, out_file, len(icl))


def summarize(records: list[dict], n_bootstrap: int = 10_000, seed: int = 0) -> dict:
    """Success rate with a bootstrap 95% CI, average reward, steps, termination reasons, per-family success."""
    success = [float(r["meta"]["success"]) for r in records]
    mean, low, high = bootstrap_ci(success, n_bootstrap, seed=seed)
    families = sorted({r["family"] for r in records})
    return {
        "n": len(records), "success": mean, "ci_low": low, "ci_high": high,
        "avg_reward": sum(r["meta"]["reward"] for r in records) / max(len(records), 1),
        "mean_steps": sum(r["meta"]["steps"] for r in records) / max(len(records), 1),
        "terminate_reasons": dict(Counter(r["meta"]["terminate_reason"] for r in records)),
        "by_family": {f: sum(r["meta"]["success"] for r in records if r["family"] == f)
                      / sum(r["family"] == f for r in records) for f in families},
    }


def eval_folder_name(cfg: EvalConfig) -> str:
    """``<label>`` in the embedded world; ``<label>-alfworld`` (compiled) or ``<label>-alfworld-released``, plus
    ``-noarrival`` when the arrival prefix is dropped."""
    if cfg.engine == "embedded":
        return cfg.label
    return (f"{cfg.label}-{cfg.engine}" + ("-released" if cfg.alfworld_data else "")
            + ("" if cfg.alfworld_arrival_prefix else "-noarrival"))


def eval_inputs(run_dir: Path, model: str | Path, alfworld_data: str = "") -> dict[str, str] | None:
    """What an evaluation is made from: stage 00's tasks (not for released ALFWorld games) and the stage that made
    the model (see :func:`~steca_lib.artifacts.upstream`)."""
    tasks = {} if alfworld_data else upstream(run_dir, "00_environment")
    return {**tasks, **(model_inputs(model) or {})} or None


def run_eval_stage(cfg: EvalConfig, stage: str = "01_eval", backend: GenerationBackend | None = None) -> dict:
    """Evaluate ``cfg.model_dir`` (default: the SFT model) on ``cfg.splits``; one summary per split."""
    model = cfg.model_dir or str(sft_model_dir(cfg.path))
    if backend is None:
        require_sft_model(model, "model_dir")
    if cfg.alfworld_data:  # released games: no stage 00; their folders are checked before anything is written
        from steca_lib.envs.alfworld.games import locate_data, split_folder

        locate_data(cfg.alfworld_data, tuple(split_folder(s) for s in cfg.splits))
    inputs = eval_inputs(cfg.path, model, cfg.alfworld_data)
    out = stage_dir(cfg.path, f"{stage}/{eval_folder_name(cfg)}")
    done = finished_summary(out, cfg, inputs=inputs)
    if done is not None:
        return done
    started = time.time()
    discard_if_inputs_changed(out, inputs)
    if backend is None:
        backend = open_backend(cfg.backend, model, cfg.dtype)
    icl = icl_messages(cfg.path, cfg.icl_num)
    summary: dict = {}
    tokens_before = getattr(backend, "generated_tokens", 0)
    t0 = time.time()
    for split in cfg.splits:
        records = evaluate_split(backend, split, cfg, out / f"{split}.jsonl", icl)
        if not records:
            raise DegenerateOutput(f"the {split} split of {cfg.path} has no task to evaluate")
        summary[split] = summarize(records, cfg.n_bootstrap, cfg.seed)
    elapsed = time.time() - t0
    generated = getattr(backend, "generated_tokens", 0) - tokens_before
    summary["generation"] = {"wall_s": round(elapsed, 1), "generated_tokens": generated,
                             "tokens_per_s": round(generated / elapsed, 1) if elapsed and generated else None}
    write_manifest(out, f"{stage}/{eval_folder_name(cfg)}", cfg, summary, started, inputs)
    return summary


if __name__ == "__main__":
    from steca_lib.config import stage_main

    raise SystemExit(stage_main(EvalConfig, run_eval_stage,
                                "Evaluate a model on the test splits (default: the run's SFT model), "
                                "e.g. --set splits='[\"dev\"]' --set label=sft-dev."))
