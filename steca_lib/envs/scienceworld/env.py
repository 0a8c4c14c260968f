"""ScienceWorld's simulator behind :class:`AgentEnv`, with the environment's own gold action sequences as expert.

Success is ScienceWorld's score reaching 100 (the task completed); the score itself (0–100, -100 for a failed
task, e.g. focusing on the wrong object) stays in ``info["score"]`` and ends the episode when negative. Unknown
commands get the simulator's own answer (``No known action matches that input.``).

The state lives in a JVM, so an episode is its action list plus a simulator borrowed from
:data:`~steca_lib.envs.scienceworld.simulators.POOL` while it runs: :meth:`ScienceWorldEnv.clone` copies the list
and the copy borrows a simulator (restart + replay, ~0.1–0.5 s) only when it is stepped; a finished episode gives
its simulator back. Splits: ScienceWorld gives every task train / dev / test *variations*; the kit's ``seen``
split uses the dev variations and ``unseen`` the test variations (:data:`SPLIT_VARIATIONS`).
"""

from __future__ import annotations

from steca_lib.envs.base import StepResult
from steca_lib.envs.scienceworld.simulators import POOL, Simulator, SimulatorPool

SPLIT_VARIATIONS = {"train": "train", "seen": "dev", "unseen": "test"}


def task_variations(task_name: str, split: str, pool: SimulatorPool = POOL) -> list[int]:
    """The variation indices of one task in a kit split (``train``, ``seen``, ``unseen``)."""
    if split not in SPLIT_VARIATIONS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_VARIATIONS)}")
    sim = pool.acquire((task_name, 0, "easy"))
    try:
        return sim.variations(SPLIT_VARIATIONS[split])
    finally:
        pool.release(sim)


class ScienceWorldEnv:
    """One episode of one ScienceWorld task variation, implementing :class:`steca_lib.envs.base.AgentEnv`."""

    def __init__(self, task_name: str, variation: int, split: str = "", max_steps: int = 40,
                 simplification: str = "easy", pool: SimulatorPool = POOL):
        self.task_name, self.variation, self.simplification = task_name, int(variation), simplification
        self.task_id = f"{task_name}_{variation}"
        self.split = split
        self.max_steps = max_steps
        self.pool = pool
        self._sim: Simulator | None = None
        self._actions: list[str] = []
        self.score = 0

    def reset(self) -> str:
        self._actions, self.score = [], 0
        if self._sim is None:
            self._sim = self.pool.acquire((self.task_name, self.variation, self.simplification))
        return self._sim.start()

    def step(self, action: str) -> StepResult:
        if self.done:
            return StepResult("Nothing happens.", float(self.won), True, self._info("already_done"))
        sim = self._attach()
        action = " ".join(str(action).split())
        observation, self.score = sim.step(action)
        self._actions.append(action)
        over = self.score < 0  # ScienceWorld marks a failed task with a negative score
        reason = ("success" if self.won else "failed" if over
                  else "max_steps" if self.steps >= self.max_steps else None)
        if reason is not None:
            self.close()
        return StepResult(observation, float(self.won), reason is not None, self._info(reason))

    def clone(self) -> "ScienceWorldEnv":
        """The same episode state without a simulator: it borrows one (restart + replay) when first stepped."""
        twin = ScienceWorldEnv(self.task_name, self.variation, self.split, self.max_steps, self.simplification,
                               self.pool)
        twin._actions, twin.score = list(self._actions), self.score
        return twin

    def close(self) -> None:
        """Give the simulator back to the pool (the episode's state stays readable)."""
        if self._sim is not None:
            self.pool.release(self._sim)
            self._sim = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the pool may be gone
            pass

    def gold_actions(self) -> list[str]:
        """ScienceWorld's own gold action sequence for this variation (the expert trajectory)."""
        return self._attach().gold_actions()

    def _attach(self) -> Simulator:
        """This episode's simulator, borrowed and brought to the episode's state (restart + replay) if needed."""
        if self._sim is None:
            self._sim = self.pool.acquire((self.task_name, self.variation, self.simplification))
            self._sim.start()
            for action in self._actions:
                self._sim.step(action)
        return self._sim

    @property
    def steps(self) -> int:
        return len(self._actions)

    @property
    def done(self) -> bool:
        return self.won or self.score < 0 or self.steps >= self.max_steps

    @property
    def won(self) -> bool:
        return self.score >= 100

    def _info(self, reason: str | None) -> dict:
        return {"won": self.won, "steps": self.steps, "terminate_reason": reason, "score": self.score}


def expert_actions(task_name: str, variation: int) -> list[str]:
    """The gold action sequence of one variation."""
    env = ScienceWorldEnv(task_name, variation)
    try:
        return env.gold_actions()
    finally:
        env.close()
