"""Compile embedded household tasks into real ALFWorld games (a PDDL problem over ALFWorld's own domain).

ALFWorld's engine (TextWorld + Fast Downward) plays any ``game.tw-pddl`` file: ALFWorld's PDDL domain, its text
grammar and a problem. The released games are built from ALFRED scenes; here the problem comes from an embedded
scene instead, so the real engine runs offline on the kit's own splits. What this module must get right:

* object ids in ALFRED's mangled form (``Mug_bar__plus_01_dot_00_...``), ordered so that ALFWorld's demangler
  numbers them exactly as the embedded world does (``mug 1`` stays ``mug 1``); basins carry ALFRED's
  ``Sink_bar_..._bar_SinkBasin`` form, which the demangler reads as ``sinkbasin``;
* one location per receptacle (the embedded world has no distances), and the agent starts at a location of its own;
* affordances from the embedded catalog (openable, pickupable, cleanable/heatable/coolable, toggleable lamps) and
  ``canContain`` for every (receptacle type, object type) pair, since the embedded world lets anything go anywhere;
* a goal with the embedded world's success semantics (see :func:`goal_pddl`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from steca_lib.envs.household.catalog import OPENABLE, TRANSFORMABLE, camel, type_of
from steca_lib.envs.household.tasks import Task
from steca_lib.errors import MissingExtra

#: ALFRED ids of the two basin types: ``<Sink>_bar_<coords>_bar_<SinkBasin>``.
_BASINS = {"sinkbasin": ("Sink", "SinkBasin"), "bathtubbasin": ("Bathtub", "BathtubBasin")}
#: ALFWorld's task type ids (``TASK_TYPES`` in alfworld.agents.environment.alfred_tw_env).
TASK_TYPE_IDS = {"pick_and_place_simple": 1, "look_at_obj_in_light": 2, "pick_clean_then_place_in_recep": 3,
                 "pick_heat_then_place_in_recep": 4, "pick_cool_then_place_in_recep": 5,
                 "pick_two_obj_and_place": 6}
START = "loc_bar_0_bar_0_bar_0_bar_0"
EXTRA_HELP = ("The real ALFWorld engine needs the `alfworld` extra: "
              "pip install -e '.[alfworld]' (alfworld==0.4.2, textworld==1.7.0)")


def type_symbol(name: str) -> str:
    """PDDL type constant of an entity type: ``sinkbasin`` -> ``SinkBasinType``."""
    return camel(name) + "Type"


def mangle(name: str, count: int) -> str:
    """ALFRED-style id of ``"<type> <k>"`` among ``count`` instances of its type.

    ALFWorld's demangler sorts ids and gives the first one the highest number, so instance k gets the
    (count - k)-th id in sorted order; the zero-padded first coordinate makes that order explicit."""
    kind, k = type_of(name), int(name.rsplit(" ", 1)[1])
    coords = f"_bar__plus_{count - k:02d}_dot_00_bar__plus_00_dot_00_bar__plus_00_dot_00"
    if kind in _BASINS:
        head, tail = _BASINS[kind]
        return f"{head}{coords}_bar_{tail}"
    return camel(kind) + coords


def _location(index: int) -> str:
    return f"loc_bar_{index + 1}_bar_0_bar_0_bar_0"


def goal_pddl(task: Task) -> str:
    """The goal, with the embedded world's semantics (:attr:`HouseholdEnv.won`).

    Two-object goals accept the two objects in any receptacles of the target type (ALFWorld's own games ask for
    one receptacle); the light goal asks for the lamp on, in the receptacle where the agent stands, while the
    agent holds the object."""
    g = task.goal
    obj = type_symbol(g.obj)
    if g.family == "look_at_obj_in_light":
        return ("(exists (?o - object ?d - object ?r - receptacle ?l - location) (and "
                f"(objectType ?o {obj}) (holds agent1 ?o) (objectType ?d {type_symbol(g.lamp)}) (isToggled ?d) "
                "(inReceptacle ?d ?r) (receptacleAtLocation ?r ?l) (atLocation agent1 ?l)))")
    recep = type_symbol(g.recep)
    if g.family == "pick_two_obj_and_place":
        return ("(exists (?o1 - object ?o2 - object ?r1 - receptacle ?r2 - receptacle) (and "
                f"(not (= ?o1 ?o2)) (objectType ?o1 {obj}) (objectType ?o2 {obj}) "
                f"(receptacleType ?r1 {recep}) (receptacleType ?r2 {recep}) "
                "(inReceptacle ?o1 ?r1) (inReceptacle ?o2 ?r2)))")
    done = {"clean": "(isClean ?o) ", "heat": "(isHot ?o) ", "cool": "(isCool ?o) "}.get(g.transform, "")
    return ("(exists (?o - object ?r - receptacle) (and "
            f"(objectType ?o {obj}) (receptacleType ?r {recep}) {done}(inReceptacle ?o ?r)))")


def problem_pddl(task: Task) -> str:
    """The PDDL problem of one task (objects, initial facts, goal) over ALFWorld's ``alfred`` domain."""
    scene = task.scene
    receps = list(scene.receptacles)
    objects = [o for r in receps for o in scene.contents.get(r, ())]
    counts: dict[str, int] = {}
    for name in receps + objects:
        counts[type_of(name)] = counts.get(type_of(name), 0) + 1
    ids = {name: mangle(name, counts[type_of(name)]) for name in receps + objects}
    rtypes = sorted({type_of(r) for r in receps})
    otypes = sorted({type_of(o) for o in objects} | {task.goal.obj})
    decl = ["agent1 - agent", f"{START} - location"]
    decl += [f"{type_symbol(t)} - rtype" for t in rtypes] + [f"{type_symbol(t)} - otype" for t in otypes]
    decl += [f"{ids[r]} - receptacle" for r in receps] + [f"{ids[o]} - object" for o in objects]
    decl += [f"{_location(i)} - location" for i in range(len(receps))]
    facts = [f"(atLocation agent1 {START})"]
    facts += [f"(canContain {type_symbol(rt)} {type_symbol(ot)})" for rt in rtypes for ot in otypes
              if ot != "desklamp"]
    for i, r in enumerate(receps):
        facts += [f"(receptacleType {ids[r]} {type_symbol(type_of(r))})",
                  f"(receptacleAtLocation {ids[r]} {_location(i)})"]
        if type_of(r) in OPENABLE:
            facts.append(f"(openable {ids[r]})")
        for o in scene.contents.get(r, ()):
            kind = type_of(o)
            facts += [f"(objectType {ids[o]} {type_symbol(kind)})", f"(inReceptacle {ids[o]} {ids[r]})",
                      f"(wasInReceptacle {ids[o]} {ids[r]})", f"(objectAtLocation {ids[o]} {_location(i)})"]
            if kind == "desklamp":
                facts.append(f"(toggleable {ids[o]})")
                continue
            facts.append(f"(pickupable {ids[o]})")
            facts += [f"({verb}able {ids[o]})" for verb in ("clean", "heat", "cool") if kind in TRANSFORMABLE[verb]]
    lines = "\n        ".join
    return (f"(define (problem {task.task_id})\n    (:domain alfred)\n    (:objects\n        {lines(decl)}\n    )\n"
            f"    (:init\n        {lines(facts)}\n    )\n    (:goal {goal_pddl(task)})\n)\n")


@lru_cache(maxsize=1)
def alfworld_resources() -> tuple[str, str]:
    """ALFWorld's PDDL domain and text grammar, read from the installed package."""
    try:
        import alfworld
    except ImportError as err:
        raise MissingExtra(EXTRA_HELP) from err
    data = Path(alfworld.__file__).parent / "data"
    return (data / "alfred.pddl").read_text(), (data / "alfred.twl2").read_text()


def game_data(task: Task) -> dict:
    """The JSON of a ``game.tw-pddl`` file, with the goal text in the grammar as ALFWorld writes it."""
    domain, grammar = alfworld_resources()
    text = task.goal.text.rstrip(".")
    return {"pddl_domain": domain, "grammar": grammar.replace("UNKNOWN GOAL", text),
            "pddl_problem": problem_pddl(task), "solvable": True}


def traj_data(task: Task) -> dict:
    """A minimal ``traj_data.json`` beside the game, with the fields ALFWorld's game collector reads."""
    g = task.goal
    return {"task_type": g.family, "task_id": task.task_id, "split": task.split,
            "pddl_params": {"object_target": camel(g.obj), "parent_target": camel(g.recep) if g.recep else "",
                            "toggle_target": camel(g.lamp) if g.lamp else "", "object_sliced": False},
            "turk_annotations": {"anns": [{"task_desc": g.text}]}}


def write_games(tasks: list[Task], root: Path) -> list[Path]:
    """Write each task as ``<root>/<game_file>/game.tw-pddl`` (+ ``traj_data.json``); return the game paths.
    An existing, identical file is left alone, so recompiling is cheap and idempotent."""
    paths = []
    for task in tasks:
        folder = Path(root) / task.game_file
        folder.mkdir(parents=True, exist_ok=True)
        for name, payload in (("game.tw-pddl", game_data(task)), ("traj_data.json", traj_data(task))):
            text = json.dumps(payload, indent=1)
            target = folder / name
            if not target.exists() or target.read_text() != text:
                target.write_text(text)
        paths.append(folder / "game.tw-pddl")
    return paths
