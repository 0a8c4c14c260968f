"""The embedded household world: ALFWorld's action grammar and observation text over a small state machine.

Every action string is answered: an action that does not parse, names something absent, or is impossible in
the current state gets ALFWorld's ``Nothing happens.`` and still counts as a step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

from steca_lib.envs.base import StepResult
from steca_lib.envs.household.catalog import OPENABLE, TRANSFORM_APPLIANCE, type_of

if TYPE_CHECKING:  # the world plays a task; tasks.py makes the world for a task (Task.make_env)
    from steca_lib.envs.household.tasks import Task

NOTHING = "Nothing happens."

_ENTITY = r"([a-z]+ \d+)"
#: The action grammar: verb -> compiled pattern. ``put`` keeps ALFWorld's literal ``in/on``.
ACTION_PATTERNS: dict[str, re.Pattern] = {
    "go": re.compile(rf"go to {_ENTITY}"),
    "open": re.compile(rf"open {_ENTITY}"),
    "close": re.compile(rf"close {_ENTITY}"),
    "take": re.compile(rf"take {_ENTITY} from {_ENTITY}"),
    "put": re.compile(rf"put {_ENTITY} in/on {_ENTITY}"),
    "clean": re.compile(rf"clean {_ENTITY} with {_ENTITY}"),
    "heat": re.compile(rf"heat {_ENTITY} with {_ENTITY}"),
    "cool": re.compile(rf"cool {_ENTITY} with {_ENTITY}"),
    "use": re.compile(rf"(?:use|toggle) {_ENTITY}"),
    "examine": re.compile(rf"examine {_ENTITY}"),
    "look": re.compile(r"look"),
    "inventory": re.compile(r"inventory"),
}


def parse_action(action: str) -> tuple[str, tuple[str, ...]] | None:
    """``(verb, arguments)`` for a well-formed action, else None. Case, extra spaces and a final period are
    forgiven (as a text parser would); anything else must match the grammar exactly."""
    text = " ".join(str(action).strip().lower().split()).rstrip(".")
    for verb, pattern in ACTION_PATTERNS.items():
        m = pattern.fullmatch(text)
        if m:
            return verb, m.groups()
    return None


def list_things(names) -> str:
    """ALFWorld's enumeration: ``a apple 1``, ``a apple 1, and a knife 2``, ``a x 1, a y 2, and a z 3``."""
    items = [f"a {n}" for n in names]
    if not items:
        return "nothing"
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + ", and " + items[-1]


def intro_text(task: Task) -> str:
    """The opening observation: the room at a glance, then the goal."""
    return (f"You are in the middle of a room. Looking quickly around you, you see "
            f"{list_things(task.scene.receptacles)}.\n\nYour task is to: {task.goal.text}")


@dataclass
class HouseholdState:
    """Everything that changes during an episode. Small on purpose: branching copies it at every step."""

    location: str | None
    holding: str | None
    contents: dict[str, list[str]]
    opened: set[str]
    transformed: dict[str, set[str]] = field(default_factory=lambda: {"clean": set(), "heat": set(), "cool": set()})
    lamp_on: bool = False
    steps: int = 0

    def copy(self) -> "HouseholdState":
        """A deep copy, written out because ``copy.deepcopy`` is several times slower on this shape."""
        return HouseholdState(self.location, self.holding, {k: list(v) for k, v in self.contents.items()},
                              set(self.opened), {k: set(v) for k, v in self.transformed.items()},
                              self.lamp_on, self.steps)


class HouseholdEnv:
    """One episode of one household task, implementing :class:`steca_lib.envs.base.AgentEnv`."""

    def __init__(self, task: Task, max_steps: int = 40):
        self.task = task
        self.task_id = task.task_id
        self.split = task.split
        self.max_steps = max_steps
        self._receptacles = frozenset(task.scene.receptacles)
        self.state = self._initial_state()

    def _initial_state(self) -> HouseholdState:
        return HouseholdState(location=None, holding=None,
                              contents={r: list(self.task.scene.contents.get(r, ())) for r in self.task.scene.receptacles},
                              opened=set())

    # ----- protocol -------------------------------------------------------------------------------------
    def reset(self) -> str:
        self.state = self._initial_state()
        return intro_text(self.task)

    def step(self, action: str) -> StepResult:
        if self.done:
            return StepResult(NOTHING, float(self.won), True, self._info("already_done"))
        self.state.steps += 1
        parsed = parse_action(action)
        observation = NOTHING if parsed is None else getattr(self, f"_do_{parsed[0]}")(*parsed[1])
        won = self.won
        reason = "success" if won else ("max_steps" if self.state.steps >= self.max_steps else None)
        return StepResult(observation, float(won), reason is not None, self._info(reason))

    def clone(self) -> "HouseholdEnv":
        twin = object.__new__(HouseholdEnv)
        twin.__dict__.update(self.__dict__)
        twin.state = self.state.copy()
        return twin

    @property
    def steps(self) -> int:
        return self.state.steps

    @property
    def done(self) -> bool:
        return self.won or self.state.steps >= self.max_steps

    @property
    def won(self) -> bool:
        g, s = self.task.goal, self.state
        if g.family == "look_at_obj_in_light":
            return (s.lamp_on and s.holding is not None and type_of(s.holding) == g.obj
                    and s.location is not None and any(type_of(o) == g.lamp for o in s.contents[s.location]))
        placed = 0
        for recep, objs in s.contents.items():
            if type_of(recep) != g.recep:
                continue
            placed += sum(1 for o in objs if type_of(o) == g.obj and (g.transform is None or o in s.transformed[g.transform]))
        return placed >= g.count

    def _info(self, reason: str | None) -> dict:
        return {"won": self.won, "steps": self.state.steps, "terminate_reason": reason}

    # ----- what the agent can see ----------------------------------------------------------------------
    def _visible(self, recep: str) -> bool:
        return type_of(recep) not in OPENABLE or recep in self.state.opened

    def _describe(self, recep: str) -> str:
        things = list_things(self.state.contents[recep])
        if type_of(recep) not in OPENABLE:
            return f"On the {recep}, you see {things}."
        if recep not in self.state.opened:
            return f"The {recep} is closed."
        return f"The {recep} is open. In it, you see {things}."

    def _here(self, recep: str) -> bool:
        return recep in self._receptacles and self.state.location == recep

    def admissible_actions(self) -> list[str]:
        """Every action that would change something or give information now (ALFWorld's admissible commands)."""
        s = self.state
        acts = [f"go to {r}" for r in self.task.scene.receptacles if r != s.location]
        acts += ["look", "inventory"]
        if s.location is not None:
            r = s.location
            acts.append(f"examine {r}")
            if type_of(r) in OPENABLE:
                acts.append(f"close {r}" if r in s.opened else f"open {r}")
            if self._visible(r):
                for o in s.contents[r]:
                    if type_of(o) == "desklamp":
                        acts.append(f"use {o}")
                    elif s.holding is None:
                        acts.append(f"take {o} from {r}")
                if s.holding is not None:
                    acts.append(f"put {s.holding} in/on {r}")
            if s.holding is not None:
                for verb, appliances in TRANSFORM_APPLIANCE.items():
                    if type_of(r) in appliances:
                        acts.append(f"{verb} {s.holding} with {r}")
        if s.holding is not None:
            acts.append(f"examine {s.holding}")
        return acts

    # ----- actions -------------------------------------------------------------------------------------
    def _do_go(self, recep: str) -> str:
        if recep not in self._receptacles or recep == self.state.location:
            return NOTHING
        self.state.location = recep
        return self._describe(recep)

    def _do_open(self, recep: str) -> str:
        if not self._here(recep) or type_of(recep) not in OPENABLE or recep in self.state.opened:
            return NOTHING
        self.state.opened.add(recep)
        return f"You open the {recep}. The {recep} is open. In it, you see {list_things(self.state.contents[recep])}."

    def _do_close(self, recep: str) -> str:
        if not self._here(recep) or recep not in self.state.opened:
            return NOTHING
        self.state.opened.discard(recep)
        return f"You close the {recep}."

    def _do_take(self, obj: str, recep: str) -> str:
        s = self.state
        if (not self._here(recep) or not self._visible(recep) or obj not in s.contents[recep]
                or s.holding is not None or type_of(obj) == "desklamp"):
            return NOTHING
        s.contents[recep].remove(obj)
        s.holding = obj
        return f"You pick up the {obj} from the {recep}."

    def _do_put(self, obj: str, recep: str) -> str:
        s = self.state
        if s.holding != obj or not self._here(recep) or not self._visible(recep):
            return NOTHING
        s.contents[recep].append(obj)
        s.holding = None
        return f"You put the {obj} in/on the {recep}."

    def _transform(self, verb: str, obj: str, recep: str) -> str:
        if self.state.holding != obj or not self._here(recep) or type_of(recep) not in TRANSFORM_APPLIANCE[verb]:
            return NOTHING
        self.state.transformed[verb].add(obj)
        return f"You {verb} the {obj} using the {recep}."

    def _do_clean(self, obj: str, recep: str) -> str:
        return self._transform("clean", obj, recep)

    def _do_heat(self, obj: str, recep: str) -> str:
        return self._transform("heat", obj, recep)

    def _do_cool(self, obj: str, recep: str) -> str:
        return self._transform("cool", obj, recep)

    def _do_use(self, lamp: str) -> str:
        s = self.state
        if type_of(lamp) != "desklamp" or s.location is None or not self._visible(s.location) \
                or lamp not in s.contents[s.location]:
            return NOTHING
        s.lamp_on = True
        return f"You turn on the {lamp}."

    def _do_examine(self, name: str) -> str:
        s = self.state
        if self._here(name):
            return self._describe(name)
        if name == s.holding or (s.location is not None and self._visible(s.location) and name in s.contents[s.location]):
            return f"There's nothing special about {name}."
        return NOTHING

    def _do_look(self) -> str:
        if self.state.location is None:
            return "You are in the middle of a room. Looking quickly around you, you see nothing."
        return f"You are facing the {self.state.location}. Next to it, you see nothing."

    def _do_inventory(self) -> str:
        if self.state.holding is None:
            return "You are not carrying anything."
        return f"You are carrying: a {self.state.holding}."
