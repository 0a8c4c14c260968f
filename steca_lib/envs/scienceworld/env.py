"""ScienceWorld's simulator behind :class:`AgentEnv`, with the environment's own gold action sequences as expert.

Success is ScienceWorld's score reaching 100 (the task completed); the score itself (0–100, -100 for a failed
task) stays in ``info["score"]``. Unknown commands get the simulator's own answer (``No known action matches that
input.``). The simulator runs in a Java process, so its state cannot be copied: :meth:`ScienceWorldEnv.clone`
starts a second simulator and replays the episode's actions (about 3 s plus the steps).

Splits: ScienceWorld gives every task train / dev / test *variations*; the kit's ``seen`` split uses the dev
variations and ``unseen`` the test variations (:data:`SPLIT_VARIATIONS`).
"""

from __future__ import annotations

from steca_lib.envs.base import StepResult, replay

SPLIT_VARIATIONS = {"train": "train", "seen": "dev", "unseen": "test"}


def _simulator(step_limit: int):
    try:
        from scienceworld import ScienceWorldEnv as Simulator
    except ImportError as err:
        raise ImportError("ScienceWorld needs the `scienceworld` extra: pip install -e '.[scienceworld]' "
                          "(scienceworld==1.2.3) and a Java 17 runtime") from err
    return Simulator("", envStepLimit=step_limit)


def task_variations(task_name: str, split: str) -> list[int]:
    """The variation indices of one task in a kit split (``train``, ``seen``, ``unseen``)."""
    if split not in SPLIT_VARIATIONS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_VARIATIONS)}")
    sim = _simulator(10)
    try:
        sim.load(task_name, 0, "easy")
        return list(getattr(sim, f"get_variations_{SPLIT_VARIATIONS[split]}")())
    finally:
        sim.close()


class ScienceWorldEnv:
    """One episode of one ScienceWorld task variation, implementing :class:`steca_lib.envs.base.AgentEnv`."""

    def __init__(self, task_name: str, variation: int, split: str = "", max_steps: int = 40,
                 simplification: str = "easy"):
        self.task_name, self.variation, self.simplification = task_name, int(variation), simplification
        self.task_id = f"{task_name}_{variation}"
        self.split = split
        self.max_steps = max_steps
        self._sim = None
        self._actions: list[str] = []
        self.score = 0

    def reset(self) -> str:
        if self._sim is None:
            self._sim = _simulator(self.max_steps + 10)
            self._sim.load(self.task_name, self.variation, self.simplification, generateGoldPath=True)
        observation, info = self._sim.reset()
        self._actions, self.score = [], int(info["score"])
        return f"{observation.strip()}\n\n{self._sim.get_task_description().strip()}"

    def step(self, action: str) -> StepResult:
        if self.done:
            return StepResult("Nothing happens.", float(self.won), True, self._info("already_done"))
        self._actions.append(action)
        observation, _, _, info = self._sim.step(" ".join(str(action).split()))
        self.score = int(info["score"])
        over = self.score < 0  # ScienceWorld marks a failed task with -100
        reason = ("success" if self.won else "failed" if over
                  else "max_steps" if self.steps >= self.max_steps else None)
        return StepResult(observation.strip(), float(self.won), reason is not None, self._info(reason))

    def clone(self) -> "ScienceWorldEnv":
        """A second simulator brought to the same state by replaying this episode's actions."""
        return replay(ScienceWorldEnv(self.task_name, self.variation, self.split, self.max_steps,
                                      self.simplification), self._actions)

    def close(self) -> None:
        """Stop the Java simulator."""
        if self._sim is not None:
            self._sim.close()
            self._sim = None

    def gold_actions(self) -> list[str]:
        """ScienceWorld's own gold action sequence for this variation (the expert trajectory)."""
        if self._sim is None:
            self.reset()
        return list(self._sim.get_gold_action_sequence())

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
    """The gold action sequence of one variation (starts and stops a simulator)."""
    env = ScienceWorldEnv(task_name, variation)
    try:
        return env.gold_actions()
    finally:
        env.close()
