"""The environment protocol every world implements: the embedded household and the real-benchmark adapters.

Monte Carlo step rewards branch an episode at every step, so besides reset/step an environment must offer a
cheap ``clone()`` of its current state (a copy, not a replay of the action history).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class StepResult:
    """What one ``step`` returns, as in gym text environments."""

    observation: str
    reward: float
    done: bool
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class AgentEnv(Protocol):
    """One episode of one task. ``reset`` returns the task's opening text (room description and goal)."""

    task_id: str
    split: str
    max_steps: int

    def reset(self) -> str:
        """Start (or restart) the episode; return the initial observation including ``Your task is to: ...``."""

    def step(self, action: str) -> StepResult:
        """Apply one action string; malformed or impossible actions are answered, never raised."""

    def clone(self) -> "AgentEnv":
        """An independent copy of the current episode state; stepping the copy leaves this one unchanged."""

    @property
    def won(self) -> bool:
        """Whether the task's goal holds now."""

    @property
    def steps(self) -> int:
        """Actions taken so far in this episode (invalid ones included)."""


def replay(env: AgentEnv, actions: list[str]) -> AgentEnv:
    """Bring a fresh ``env`` to a later state by resetting it and taking ``actions``: how an environment whose state
    lives outside Python (a planner, a JVM) clones itself."""
    env.reset()
    for action in actions:
        env.step(action)
    return env
