"""A rule-based expert that solves household tasks from what it observes, like a careful person would.

It knows only the goal, the receptacle list of the opening text and the observations it receives (never the
hidden contents): it searches receptacles in commonsense order (the catalog's priors), opens what is closed,
remembers what it saw, transforms the object if asked, then places it. Each action comes with a ReAct thought
whose wording varies, as in ALFWorld expert data.
"""

from __future__ import annotations

import random
import re
from collections.abc import Generator

from steca_lib.envs.household.catalog import OBJECT_PRIORS, OPENABLE, TRANSFORM_APPLIANCE, type_of
from steca_lib.envs.household.tasks import Goal, Task
from steca_lib.envs.household.world import HouseholdEnv

#: A step of the expert: (thought, action). The generator receives each action's observation back.
ExpertGen = Generator[tuple[str, str], str, None]

_SEEN = re.compile(r"(?:you see|In it, you see) (.*)\.$")


def seen_objects(observation: str) -> list[str] | None:
    """Object names listed in an arrival/open observation; None when the observation lists nothing."""
    m = _SEEN.search(observation)
    if not m:
        return None
    body = m.group(1)
    if body == "nothing":
        return []
    return [p.strip()[2:] for p in re.split(r", and |, ", body) if p.strip().startswith("a ")]


def search_order(obj_type: str, receptacles: tuple[str, ...]) -> list[str]:
    """Receptacles ordered by how likely each single one holds ``obj_type`` (prior of its type / instances)."""
    prior = OBJECT_PRIORS.get(obj_type, {})
    counts: dict[str, int] = {}
    for r in receptacles:
        counts[type_of(r)] = counts.get(type_of(r), 0) + 1
    ranked = sorted(receptacles, key=lambda r: (-prior.get(type_of(r), 0.0) / counts[type_of(r)],
                                                 int(r.rsplit(" ", 1)[1])))
    return ranked


def _by_number(names) -> list[str]:
    return sorted(names, key=lambda r: (type_of(r), int(r.rsplit(" ", 1)[1])))


class _Memory:
    """What the expert has seen: contents of inspected receptacles, which ones it opened, where it stands."""

    def __init__(self) -> None:
        self.contents: dict[str, list[str]] = {}
        self.opened: set[str] = set()
        self.location: str | None = None

    def arrive(self, recep: str, observation: str) -> None:
        self.location = recep
        objs = seen_objects(observation)
        if objs is not None:
            self.contents[recep] = objs

    def known(self, obj_type: str, skip: set[str]) -> tuple[str, str] | None:
        for recep, objs in self.contents.items():
            for o in objs:
                if type_of(o) == obj_type and o not in skip:
                    return o, recep
        return None


class _Phrases:
    """Seeded choice among several wordings, so thoughts vary like human-written ones."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def __call__(self, *options: str) -> str:
        return self.rng.choice(options)


def _where_hint(obj: str, receptacles: tuple[str, ...], n: int = 4) -> str:
    order, types = search_order(obj, receptacles), []
    for r in order:
        if type_of(r) not in types:
            types.append(type_of(r))
    return ", ".join(types[:n])


class HouseholdExpert:
    """Drives one task to success; :meth:`run` returns the ReAct turns and the final environment."""

    def __init__(self, task: Task, seed: int = 0):
        self.task = task
        self.goal: Goal = task.goal
        self.recs = task.scene.receptacles
        self.say = _Phrases(random.Random(f"expert/{seed}/{task.task_id}/{task.world_seed}"))
        self.mem = _Memory()
        self.placed: set[str] = set()

    # ----- primitive moves --------------------------------------------------------------------------------
    def _go(self, recep: str, thought: str, look_inside: bool = True) -> Generator[tuple[str, str], str, str]:
        obs = yield thought, f"go to {recep}"
        self.mem.arrive(recep, obs)
        if look_inside and type_of(recep) in OPENABLE and recep not in self.mem.opened and obs.endswith("is closed."):
            obs = yield self.say(f"The {recep} is closed. I need to open it to look inside.",
                                 f"The {recep} is closed, so I will open it.",
                                 f"I should open the {recep} to see what is in it."), f"open {recep}"
            self.mem.opened.add(recep)
            self.mem.arrive(recep, obs)
        return obs

    def _find_and_take(self, obj: str, purpose: str) -> Generator[tuple[str, str], str, str]:
        """Search for an ``obj`` (not one already placed), take it, return its name."""
        first = True
        while True:
            hit = self.mem.known(obj, self.placed)
            if hit is not None:
                name, recep = hit
                if self.mem.location != recep:
                    yield from self._go(recep, self.say(f"I remember seeing a {name} at the {recep}. I will go there.",
                                                         f"There was a {name} in the {recep}; let me get it.",
                                                         f"I saw a {name} at the {recep} earlier, so I head there."))
                    continue  # the observation on arrival may have changed what we know
                yield self.say(f"Now I find a {obj} ({name}). Next, I need to take it.",
                               f"There is a {name} here. I will take it {purpose}.",
                               f"I found a {obj}: {name}. Let me pick it up."), f"take {name} from {recep}"
                self.mem.contents[recep].remove(name)
                return name
            unvisited = [r for r in search_order(obj, self.recs) if r not in self.mem.contents]
            if not unvisited:  # pragma: no cover - a generated task always contains its object
                raise RuntimeError(f"expert searched everywhere for {obj} in {self.task.task_id}")
            nxt = unvisited[0]
            if first:
                thought = self.say(
                    f"First I need to find a {obj}. It is likely in {_where_hint(obj, self.recs, 3)}; "
                    f"I start with {nxt}.",
                    f"I look for a {obj}, starting with {nxt}.",
                    f"A {obj} is usually in {_where_hint(obj, self.recs, 3)}. Let me check {nxt}.")
                first = False
            else:
                thought = self.say(f"There is no {obj} here. Next, I will check {nxt}.",
                                   f"No {obj} in sight. I will try {nxt}.",
                                   f"Nothing useful here. Let me look in {nxt}.",
                                   f"The {obj} is not here. {nxt.capitalize()} is the next place to check.")
            yield from self._go(nxt, thought)

    def _place(self, name: str, recep_type: str) -> Generator[tuple[str, str], str, None]:
        target = _by_number(r for r in self.recs if type_of(r) == recep_type)[0]
        if self.mem.location != target:
            yield from self._go(target, self.say(f"Now I put the {name} in/on the {recep_type}. I go to {target}.",
                                                 f"Next, I need to bring the {name} to {target}.",
                                                 f"With the {name} in hand, I will go to {target}."))
        yield self.say(f"I am at {target}. I will put the {name} here.",
                       f"Now I can put the {name} in/on the {target}.",
                       f"This is the {recep_type}; I place the {name}."), f"put {name} in/on {target}"
        self.placed.add(name)
        self.mem.contents.setdefault(target, []).append(name)

    def _transform(self, name: str, verb: str) -> Generator[tuple[str, str], str, None]:
        kinds = TRANSFORM_APPLIANCE[verb]  # in order of preference (the sinkbasin before a bathtub)
        appliance = min((r for r in self.recs if type_of(r) in kinds),
                        key=lambda r: (kinds.index(type_of(r)), int(r.rsplit(" ", 1)[1])))
        adjective = {"clean": "clean", "heat": "hot", "cool": "cool"}[verb]
        yield from self._go(appliance, self.say(f"Next, I need to {verb} the {name}. I go to {appliance}.",
                                                f"The task needs a {adjective} {type_of(name)}, so I take it to {appliance}.",
                                                f"To make the {name} {adjective}, I will use the {appliance}."),
                            look_inside=False)
        yield self.say(f"I can {verb} the {name} with {appliance} now.",
                       f"Now I {verb} the {name} using the {appliance}.",
                       f"Let me {verb} the {name} here."), f"{verb} {name} with {appliance}"

    def _find_lamp_and_use(self, name: str) -> Generator[tuple[str, str], str, None]:
        lamp_type = self.goal.lamp
        while True:
            hit = self.mem.known(lamp_type, set())
            if hit is not None:
                lamp, recep = hit
                if self.mem.location != recep:
                    yield from self._go(recep, self.say(f"I saw the {lamp} at the {recep}. I go there with the {name}.",
                                                        f"The {lamp} is at the {recep}; let me bring the {name} there."))
                yield self.say(f"I have the {name} and the {lamp} is here. I turn it on to look at the {name}.",
                               f"Now I use the {lamp} to examine the {name}."), f"use {lamp}"
                return
            nxt = [r for r in search_order(lamp_type, self.recs) if r not in self.mem.contents][0]
            yield from self._go(nxt, self.say(f"Now I need a {lamp_type}. I will check {nxt}.",
                                              f"I have the {name}; next I look for the {lamp_type}, trying {nxt}.",
                                              f"The {lamp_type} is not here. Let me try {nxt}."))

    # ----- the plan ------------------------------------------------------------------------------------------
    def plan(self) -> ExpertGen:
        g = self.goal
        steps = {"clean": "clean it with the sinkbasin, ", "heat": "heat it with the microwave, ",
                 "cool": "cool it with the fridge, "}
        if g.family == "look_at_obj_in_light":
            opening = f"I need to take a {g.obj}, then use a {g.lamp}. "
        elif g.count == 2:
            opening = f"I need to put two {g.obj} in/on {g.recep}, one at a time. "
        else:
            opening = f"I need to take a {g.obj}, {steps.get(g.transform, '')}then put it in/on {g.recep}. "
        self._opening = opening
        for k in range(g.count):
            name = yield from self._find_and_take(g.obj, "for the task" if k == 0 else "as the second one")
            if g.family == "look_at_obj_in_light":
                yield from self._find_lamp_and_use(name)
                return
            if g.transform:
                yield from self._transform(name, g.transform)
            yield from self._place(name, g.recep)

    def run(self, env: HouseholdEnv | None = None) -> tuple[list[tuple[str, str, str]], HouseholdEnv]:
        """Play the task to the end. Returns ``[(thought, action, observation), ...]`` and the final env."""
        env = env or HouseholdEnv(self.task)
        env.reset()
        gen = self.plan()
        turns: list[tuple[str, str, str]] = []
        try:
            thought, action = next(gen)
            while True:
                if not turns:
                    thought = self._opening + thought
                result = env.step(action)
                turns.append((thought, action, result.observation))
                if result.done:
                    break
                thought, action = gen.send(result.observation)
        except StopIteration:
            pass
        return turns, env
