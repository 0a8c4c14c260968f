"""Stage 00: the benchmark's tasks (train / seen / unseen) and the expert's ReAct trajectories.

``benchmark="household"`` generates the embedded world's tasks and runs its planner expert;
``benchmark="scienceworld"`` takes variations of the configured ScienceWorld task types (train / dev / test
variations) and plays their gold action sequences, with thoughts written from each action
(:mod:`steca_lib.envs.scienceworld.tasks`).

Artifacts in ``<run>/00_environment/``: ``tasks_<split>.jsonl`` (one task per row), ``expert_<split>.json``
(FastChat conversations, the SFT data of stage 01), ``expert_stats.jsonl`` (one row per task) and the manifest.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Iterator

from tqdm.auto import tqdm

from steca_lib.artifacts import finished_summary, load_manifest, stage_dir, write_manifest
from steca_lib.config import EnvironmentConfig
from steca_lib.data import load_trajectories, read_jsonl, save_trajectories, write_jsonl_atomic
from steca_lib.envs import BenchmarkTask, task_from_dict
from steca_lib.envs.household import HouseholdEnv, HouseholdExpert
from steca_lib.envs.household.generator import generate_split, generate_task_counted
from steca_lib.envs.household.world import intro_text
from steca_lib.errors import ConfigError, StageNotFinished
from steca_lib.prompts import INSTRUCTION, observation_turn, react_turn

STAGE = "00_environment"
log = logging.getLogger(__name__)


def expert_conversation(task: BenchmarkTask, opening: str, turns: list[tuple[str, str, str]],
                        instruction: str = INSTRUCTION) -> dict:
    """A FastChat record of an expert run: instruction, OK, the task's opening text, then action/observation turns
    (ends on gpt)."""
    conv = [{"from": "human", "value": instruction}, {"from": "gpt", "value": "OK"},
            {"from": "human", "value": opening}]
    for k, (thought, action, observation) in enumerate(turns):
        conv.append({"from": "gpt", "value": react_turn(thought, action)})
        if k < len(turns) - 1:
            conv.append({"from": "human", "value": observation_turn(observation)})
    return {"id": task.task_id, "game_file": task.game_file, "family": task.family, "conversations": conv}


def household_split(cfg: EnvironmentConfig, split: str, n: int) -> Iterator[tuple[dict, dict, dict, float]]:
    """The embedded world's tasks of a split with the planner expert's runs: (task row, record, stats row,
    expert seconds) per task."""
    spec = cfg.world_spec()
    for i in tqdm(range(n), desc=f"{split} tasks", leave=False):
        task, draws = generate_task_counted(spec, split, i)
        env = HouseholdEnv(task, max_steps=cfg.max_steps)
        t0 = time.perf_counter()
        turns, env = HouseholdExpert(task, seed=cfg.seed).run(env)
        seconds = time.perf_counter() - t0
        stats = {"task_id": task.task_id, "split": split, "family": task.family, "room": task.scene.room,
                 "steps": len(turns), "success": env.won, "draws": draws}
        yield task.to_dict(), expert_conversation(task, intro_text(task), turns), stats, seconds


def scienceworld_split(cfg: EnvironmentConfig, split: str, n: int) -> Iterator[tuple[dict, dict, dict, float]]:
    """``n`` variations of a split, taken in turn from each task type in variation order; a variation whose gold
    path is longer than ``max_expert_steps`` or does not win is passed over (counted in ``draws``)."""
    from steca_lib.envs.scienceworld import task_variations
    from steca_lib.envs.scienceworld.tasks import INSTRUCTION as SW_INSTRUCTION
    from steca_lib.envs.scienceworld.tasks import ScienceWorldTask, expert_turns

    pending = {t: iter(task_variations(t, split)) for t in cfg.task_types}
    bar = tqdm(total=n, desc=f"{split} tasks", leave=False)
    made = 0
    while made < n and pending:
        for task_name in list(pending):
            if made == n:
                break
            for draws, variation in enumerate(pending[task_name], 1):
                task = ScienceWorldTask(f"{task_name}_{variation}", split, task_name, variation)
                t0 = time.perf_counter()
                opening, turns, env = expert_turns(task, cfg.seed, cfg.max_steps)
                seconds = time.perf_counter() - t0
                if env.won and len(turns) <= cfg.max_expert_steps:
                    stats = {"task_id": task.task_id, "split": split, "family": task.family, "room": "",
                             "steps": len(turns), "success": env.won, "draws": draws}
                    yield task.to_dict(), expert_conversation(task, opening, turns, SW_INSTRUCTION), stats, seconds
                    made += 1
                    bar.update(1)
                    break
            else:
                del pending[task_name]  # no variation left
    bar.close()
    if made < n:
        raise ConfigError(f"only {made} usable {split} variations of {cfg.task_types}; asked for {n}")


def run_environment_stage(cfg: EnvironmentConfig) -> dict:
    """Generate every split and its expert trajectories; skip when the run folder already holds them."""
    out = stage_dir(cfg.path, STAGE)
    done = finished_summary(out, cfg)
    if done is not None:
        log.info("stage %s already complete in %s", STAGE, out)
        return done
    started = time.time()
    benchmarks = {"household": household_split, "scienceworld": scienceworld_split}
    stats_rows = []
    env_time, env_steps = 0.0, 0
    for split, n in cfg.split_sizes().items():
        tasks, records = [], []
        for task, record, stats, seconds in benchmarks[cfg.benchmark](cfg, split, n):
            env_time += seconds
            env_steps += stats["steps"]
            tasks.append(task)
            records.append(record)
            stats_rows.append(stats)
        write_jsonl_atomic(tasks, out / f"tasks_{split}.jsonl")
        save_trajectories(records, out / f"expert_{split}.json")
    write_jsonl_atomic(stats_rows, out / "expert_stats.jsonl")
    summary = summarize_expert(stats_rows)
    summary["expert_steps_per_s"] = round(env_steps / env_time, 1) if env_time else None
    write_manifest(out, STAGE, cfg, summary, started)
    return summary


def summarize_expert(rows: list[dict]) -> dict:
    """Split sizes, expert success and steps per family, and how often generation drew again."""
    summary: dict = {"splits": {}, "families": {}}
    for split in sorted({r["split"] for r in rows}):
        sr = [r for r in rows if r["split"] == split]
        summary["splits"][split] = {"tasks": len(sr), "expert_success": sum(r["success"] for r in sr) / len(sr),
                                    "redraw_rate": sum(r["draws"] > 1 for r in sr) / len(sr)}
    for fam in sorted({r["family"] for r in rows}):
        steps = [r["steps"] for r in rows if r["family"] == fam]
        summary["families"][fam] = {"tasks": len(steps), "mean_steps": round(statistics.mean(steps), 2),
                                    "max_steps": max(steps)}
    return summary


#: Size of the ``dev`` split: tasks drawn like ``seen`` ones (training floorplans and goal combinations) after the
#: seen split's indices, for choosing settings without looking at the test splits.
DEV_TASKS = 60


def load_tasks(run_dir: Path, split: str) -> list[BenchmarkTask]:
    """The tasks of a split written by this stage; the household ``dev`` split is generated on demand from the
    stage's world spec."""
    if split == "dev":
        manifest = load_manifest(Path(run_dir) / STAGE)
        if manifest is None:
            raise StageNotFinished(f"stage {STAGE} has not finished in {run_dir}; run it first")
        cfg = EnvironmentConfig(**manifest["config"])
        if cfg.benchmark != "household":
            raise ConfigError(f"the dev split exists for the household benchmark only, not {cfg.benchmark!r}")
        return generate_split(cfg.world_spec(), "seen", DEV_TASKS, start=cfg.n_seen)
    return [task_from_dict(d) for d in read_jsonl(stage_file(run_dir, f"tasks_{split}.jsonl"))]


def run_instruction(run_dir: Path) -> str:
    """The instruction turn of the run's expert data: the agent is prompted at test time as it was trained."""
    return load_expert(run_dir)[0]["conversations"][0]["value"]


def load_expert(run_dir: Path, split: str = "train") -> list[dict]:
    """The expert trajectories of a split written by this stage (FastChat records)."""
    return load_trajectories(stage_file(run_dir, f"expert_{split}.json"))


def stage_file(run_dir: Path, name: str) -> Path:
    """A file this stage wrote into ``run_dir``; :class:`StageNotFinished` when it is not there."""
    path = Path(run_dir) / STAGE / name
    if not path.exists():
        raise StageNotFinished(f"{path} does not exist: stage {STAGE} has not run in {run_dir}; run it first "
                               f"(notebook 00 or python -m steca_lib.expert_data)")
    return path


if __name__ == "__main__":
    from steca_lib.config import stage_main

    raise SystemExit(stage_main(EnvironmentConfig, run_environment_stage,
                                "Stage 00: the benchmark's tasks and the expert trajectories."))
