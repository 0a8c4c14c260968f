"""ALFWorld's real text engine (TextWorld + Fast Downward) behind the kit's :class:`AgentEnv` protocol.

The adapter plays any ALFWorld game file: the released games or the embedded tasks compiled by
:mod:`steca_lib.envs.alfworld.compile`. It speaks the command grammar of the paper's data, which ALFWorld 0.4
changed in one place: ``put X in/on Y`` is sent as the engine's ``move X to Y``, and its answer
``You move the X to the Y.`` is returned as ``You put the X in/on the Y.``. Everything else is the engine's own
text, except the ``-= Welcome to TextWorld, ALFRED! =-`` banner, which the paper's prompts drop too.

The engine's state lives in C (Fast Downward), so it cannot be copied: :meth:`AlfworldEnv.clone` replays the
actions taken so far on a fresh engine (what the official pipeline does for every rollout).
"""

from __future__ import annotations

import re
from pathlib import Path

from steca_lib.envs.alfworld.compile import EXTRA_HELP
from steca_lib.envs.base import StepResult, replay
from steca_lib.errors import MissingExtra

BANNER = "-= Welcome to TextWorld, ALFRED! =-"
_ARRIVAL = re.compile(r"^You arrive at [a-z]+ \d+\. ")
_PUT = re.compile(r"put (.+?) in/on (.+)")
_MOVED = re.compile(r"You move the (.+?) to the (.+?)\.")
_HELP_MOVE = re.compile(r"move \(object\) to \(receptacle\):(\s*)")


def _engine_modules():
    try:
        import textworld
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos
    except ImportError as err:
        raise MissingExtra(EXTRA_HELP) from err
    return textworld, AlfredDemangler, AlfredInfos


def to_engine(action: str) -> str:
    """The paper-era command as ALFWorld 0.4 spells it (only ``put ... in/on ...`` differs)."""
    text = " ".join(str(action).strip().split())
    m = _PUT.fullmatch(text)
    return f"move {m.group(1)} to {m.group(2)}" if m else text


def from_engine(observation: str, arrival_prefix: bool = True) -> str:
    """The engine's text as the paper's data spell it: no banner, ``put`` feedback (and the ``help`` listing) in the
    old wording; without
    ``arrival_prefix`` also no ``You arrive at X.`` (the embedded world's wording, for diagnosing text shift)."""
    text = observation.replace(BANNER, "").strip()
    if not arrival_prefix:
        text = _ARRIVAL.sub("", text)
    text = _HELP_MOVE.sub(lambda m: "put (object) in/on (receptacle):" + " " * max(1, len(m.group(1)) - 4), text)
    return _MOVED.sub(r"You put the \1 in/on the \2.", text)


class AlfworldEnv:
    """One episode of one ALFWorld game, implementing :class:`steca_lib.envs.base.AgentEnv`."""

    def __init__(self, game_file: str | Path, task_id: str = "", split: str = "", max_steps: int = 40,
                 arrival_prefix: bool = True):
        self.game_file = str(game_file)
        if not Path(self.game_file).is_file():
            raise FileNotFoundError(f"ALFWorld game file not found: {self.game_file}")
        self.task_id = task_id or Path(self.game_file).resolve().parent.name
        self.split = split
        self.max_steps = max_steps
        self.arrival_prefix = arrival_prefix
        self._engine = None
        self._actions: list[str] = []
        self._won = False

    def _start(self):
        textworld, demangler, infos_wrapper = _engine_modules()
        infos = textworld.EnvInfos(won=True, admissible_commands=True)
        return textworld.start(self.game_file, infos, wrappers=[demangler(), infos_wrapper])

    # ----- protocol -------------------------------------------------------------------------------------
    def reset(self) -> str:
        if self._engine is None:
            self._engine = self._start()
        state = self._engine.reset()
        self._actions, self._won = [], bool(state["won"])
        self._admissible = list(state["admissible_commands"])
        return from_engine(state.feedback, self.arrival_prefix)

    def step(self, action: str) -> StepResult:
        if self.done:
            return StepResult("Nothing happens.", float(self._won), True, self._info("already_done"))
        self._actions.append(action)
        state, _, _ = self._engine.step(to_engine(action))
        self._won = bool(state["won"])
        self._admissible = list(state["admissible_commands"])
        reason = "success" if self._won else ("max_steps" if self.steps >= self.max_steps else None)
        observation = from_engine(state.feedback, self.arrival_prefix)
        return StepResult(observation, float(self._won), reason is not None, self._info(reason))

    def clone(self) -> "AlfworldEnv":
        """A fresh engine brought to the same state by replaying this episode's actions."""
        return replay(AlfworldEnv(self.game_file, self.task_id, self.split, self.max_steps, self.arrival_prefix),
                      self._actions)

    @property
    def steps(self) -> int:
        return len(self._actions)

    @property
    def done(self) -> bool:
        return self._won or self.steps >= self.max_steps

    @property
    def won(self) -> bool:
        return self._won

    def admissible_actions(self) -> list[str]:
        """The engine's admissible commands, in the paper's grammar."""
        return [f"put {m.group(1)} in/on {m.group(2)}" if (m := re.fullmatch(r"move (.+?) to (.+)", c)) else c
                for c in self._admissible]

    def _info(self, reason: str | None) -> dict:
        return {"won": self._won, "steps": self.steps, "terminate_reason": reason}
