"""Seeded generation of household rooms and tasks, with ALFWorld-like train / seen / unseen splits.

* Floorplans: per room type, ``n_floorplans`` layouts drawn from the world seed; the last
  ``unseen_floorplan_fraction`` of them are reserved for the ``unseen`` split.
* Goal combinations: per family, about ``unseen_combo_fraction`` of the (object, receptacle) pairs are
  reserved for ``unseen``; ``train`` and ``seen`` never use them.
* ``seen`` = new tasks in training floorplans with training combinations (ALFWorld's in-distribution set);
  ``unseen`` = held-out floorplans *and* held-out combinations (its out-of-distribution set).
Objects are placed by the catalog's commonsense priors, with probability ``noise`` anywhere instead.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

from steca_lib.envs.household.catalog import (FAMILIES, FAMILY_TRANSFORM, LIT_ROOMS, LOOKABLE, OBJECT_PRIORS,
                                              PLACEABLE_TARGETS, ROOM_OBJECTS, ROOM_RECEPTACLES, TRANSFORM_APPLIANCE,
                                              TRANSFORMABLE, type_of)
from steca_lib.envs.household.tasks import Goal, Scene, Task

SPLITS = ("train", "seen", "unseen")
#: Receptacles where almost anything may be put as a goal, beside the object's own usual places.
GENERIC_TARGETS = frozenset({"countertop", "diningtable", "shelf", "cabinet", "drawer", "sidetable", "coffeetable",
                             "dresser", "desk", "garbagecan", "safe", "armchair", "sofa", "bed", "toilet"})


@dataclass(frozen=True)
class WorldSpec:
    """The knobs of the generated benchmark (not of training). Same spec and seed -> identical tasks."""

    world_seed: int = 0
    n_floorplans: int = 30
    unseen_floorplan_fraction: float = 0.2
    unseen_combo_fraction: float = 0.25
    noise: float = 0.15
    min_distractors: int = 6
    max_distractors: int = 12
    max_expert_steps: int = 20


def _rng(*parts) -> random.Random:
    return random.Random("/".join(str(p) for p in parts))


def floorplan(spec: WorldSpec, room: str, index: int) -> tuple[str, ...]:
    """The receptacles of one floorplan, in ALFWorld's listing order (types A-Z, numbers descending)."""
    rng = _rng("floorplan", spec.world_seed, room, index)
    names = []
    for rtype in sorted(ROOM_RECEPTACLES[room]):
        lo, hi = ROOM_RECEPTACLES[room][rtype]
        names += [f"{rtype} {k}" for k in range(rng.randint(lo, hi), 0, -1)]
    return tuple(names)


def floorplans_for(spec: WorldSpec, split: str) -> range:
    """Indices of the floorplans a split draws from."""
    n_unseen = max(1, round(spec.n_floorplans * spec.unseen_floorplan_fraction))
    cut = spec.n_floorplans - n_unseen
    return range(cut, spec.n_floorplans) if split == "unseen" else range(0, cut)


def is_unseen_combo(spec: WorldSpec, family: str, obj: str, target: str) -> bool:
    """Whether the (family, object, target) combination is reserved for the unseen split (stable hash)."""
    h = zlib.crc32(f"{spec.world_seed}/{family}/{obj}/{target}".encode()) / 2**32
    return h < spec.unseen_combo_fraction


def goal_candidates(family: str, room: str, receptacles: tuple[str, ...]) -> list[tuple[str, str]]:
    """Valid (object, target) pairs of a family in a room; target is a receptacle type (or the lamp type)."""
    objs = ROOM_OBJECTS[room]
    if family == "look_at_obj_in_light":
        return [(o, "desklamp") for o in objs if o in LOOKABLE] if room in LIT_ROOMS else []
    present = {type_of(r) for r in receptacles}
    verb = FAMILY_TRANSFORM.get(family)
    if verb is not None:
        if not present & set(TRANSFORM_APPLIANCE[verb]):
            return []
        objs = [o for o in objs if o in TRANSFORMABLE[verb]]
    pairs = []
    for o in objs:
        for t in sorted(present & PLACEABLE_TARGETS):
            if verb is not None and t in TRANSFORM_APPLIANCE[verb]:
                continue
            if t in GENERIC_TARGETS or OBJECT_PRIORS[o].get(t, 0) > 0:
                pairs.append((o, t))
    return pairs


def _place(rng: random.Random, obj_type: str, receptacles: tuple[str, ...], noise: float,
           forbidden: str | None) -> str:
    allowed = [r for r in receptacles if type_of(r) != forbidden and type_of(r) in PLACEABLE_TARGETS]
    prior = OBJECT_PRIORS[obj_type]
    counts: dict[str, int] = {}
    for r in allowed:
        counts[type_of(r)] = counts.get(type_of(r), 0) + 1
    weights = [prior.get(type_of(r), 0.0) / counts[type_of(r)] for r in allowed]
    if rng.random() < noise or sum(weights) == 0:
        return rng.choice(allowed)
    return rng.choices(allowed, weights=weights)[0]


def _draw(spec: WorldSpec, split: str, index: int, attempt: int) -> Task | None:
    rng = _rng("task", spec.world_seed, split, index, attempt)
    family = list(FAMILIES)[index % len(FAMILIES)]
    room = rng.choice(FAMILIES[family]["rooms"])
    fp = rng.choice(floorplans_for(spec, split))
    receptacles = floorplan(spec, room, fp)
    want_unseen = split == "unseen"
    pairs = [p for p in goal_candidates(family, room, receptacles)
             if is_unseen_combo(spec, family, *p) == want_unseen]
    if not pairs:
        return None
    obj, target = rng.choice(pairs)
    lamp = "desklamp" if family == "look_at_obj_in_light" else None
    recep = None if lamp else target

    contents: dict[str, list[str]] = {r: [] for r in receptacles}
    numbers: dict[str, int] = {}

    def add(obj_type: str, forbidden: str | None) -> None:
        numbers[obj_type] = numbers.get(obj_type, 0) + 1
        contents[_place(rng, obj_type, receptacles, spec.noise, forbidden)].append(f"{obj_type} {numbers[obj_type]}")

    n_goal = rng.randint(2, 3) if family == "pick_two_obj_and_place" else rng.randint(1, 2)
    for _ in range(n_goal):
        add(obj, recep)
    others = [o for o in ROOM_OBJECTS[room] if o != obj]
    for _ in range(rng.randint(spec.min_distractors, spec.max_distractors)):
        add(rng.choice(others), recep)
    if room in LIT_ROOMS:
        add("desklamp", None)
    template = rng.choice(FAMILIES[family]["templates"])
    text = template.format(obj=obj, recep=recep, lamp=lamp)
    scene = Scene(room=room, floorplan=fp, receptacles=receptacles,
                  contents={r: tuple(v) for r, v in contents.items() if v})
    goal = Goal(family=family, obj=obj, recep=recep, lamp=lamp, text=text)
    return Task(task_id=f"{split}_{index}", split=split, index=index, world_seed=spec.world_seed,
                scene=scene, goal=goal)


def generate_task(spec: WorldSpec, split: str, index: int) -> Task:
    """Task ``index`` of ``split`` (see :func:`generate_task_counted`)."""
    return generate_task_counted(spec, split, index)[0]


def generate_task_counted(spec: WorldSpec, split: str, index: int) -> tuple[Task, int]:
    """Task ``index`` of ``split`` and the number of draws it took. Draws again (deterministically) until the
    expert solves it within ``spec.max_expert_steps`` steps, as the paper's data keep plans of at most 20 turns."""
    from steca_lib.envs.household.expert import HouseholdExpert

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    for attempt in range(1000):
        task = _draw(spec, split, index, attempt)
        if task is None:
            continue
        turns, env = HouseholdExpert(task).run()
        if env.won and len(turns) <= spec.max_expert_steps:
            return task, attempt + 1
    raise RuntimeError(f"could not generate {split} task {index} within 1000 draws; loosen the WorldSpec")


def generate_split(spec: WorldSpec, split: str, n: int, start: int = 0) -> list[Task]:
    """Tasks ``start .. start+n-1`` of a split."""
    return [generate_task(spec, split, i) for i in range(start, start + n)]
