"""Agent environments behind one protocol (:class:`steca_lib.envs.base.AgentEnv`), and the tasks of each
benchmark behind another (:class:`BenchmarkTask`), so that every pipeline stage runs on any of them."""

from __future__ import annotations

from typing import Protocol

from steca_lib.envs.base import AgentEnv, StepResult


class BenchmarkTask(Protocol):
    """What the pipeline needs of a task: its id, split, family, a game-file name, a fresh episode, and JSON."""

    task_id: str
    split: str

    @property
    def family(self) -> str: ...

    @property
    def game_file(self) -> str: ...

    def make_env(self, max_steps: int = 40) -> AgentEnv: ...

    def to_dict(self) -> dict: ...


def task_from_dict(d: dict) -> BenchmarkTask:
    """A task read back from stage 00's ``tasks_<split>.jsonl``: ScienceWorld rows say so, the rest are household."""
    if d.get("benchmark") == "scienceworld":
        from steca_lib.envs.scienceworld.tasks import ScienceWorldTask

        return ScienceWorldTask.from_dict(d)
    from steca_lib.envs.household import Task

    return Task.from_dict(d)


__all__ = ["AgentEnv", "BenchmarkTask", "StepResult", "task_from_dict"]
