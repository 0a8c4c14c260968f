"""VirtualHome actions: the agent's ``[verb] <object> ...`` text, grounded to graph node ids as a script line.

The agent names objects by class (``<cup>``) and may add an id (``<cup> (12)``). Grounding tries, in order: the
id the agent gave, the task's ``object_id_dict`` (the ids its expert program used), a node of that class next to
the character, then any node of that class. The official code breaks the last tie with an unseeded
``random.choice``, so its evaluation is not repeatable; here the choice comes from a seeded generator.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

#: ``[verb] <obj> (id)? <obj> (id)?`` with any case and spacing.
_ACTION = re.compile(r"\[\s*(\w+)\s*\]((?:\s*<[^<>]+>\s*(?:\(\s*\d+(?:\.\d+)?\s*\))?){0,2})\s*")
_ARG = re.compile(r"<([^<>]+)>\s*(?:\(\s*(\d+)(?:\.\d+)?\s*\))?")


@dataclass(frozen=True)
class ParsedAction:
    """A verb and up to two (class name, id or None) arguments."""

    verb: str
    args: tuple[tuple[str, int | None], ...]


def parse_action(text: str) -> ParsedAction | None:
    """The action in ``text`` (``[walk] <kitchen>``, ``[put] <cup> (3) <table>``), or None if malformed."""
    m = _ACTION.fullmatch(str(text).strip())
    if not m:
        return None
    args = tuple((name.strip().lower().replace(" ", "_"), int(i) if i else None)
                 for name, i in _ARG.findall(m.group(2)))
    return ParsedAction(m.group(1).lower(), args)


def close_to(graph: dict, node_id: int) -> set[int]:
    """Ids of nodes with a ``CLOSE`` edge from ``node_id`` (what the character can reach)."""
    return {int(e["to_id"]) for e in graph["edges"]
            if int(e["from_id"]) == node_id and str(e["relation_type"]).upper() == "CLOSE"}


def ground(graph: dict, name: str, given: int | None, object_ids: dict, character: int,
           rng: random.Random) -> int | None:
    """The node id an argument refers to (see the module docstring for the order), or None if no node matches."""
    candidates = sorted(int(n["id"]) for n in graph["nodes"] if n["class_name"].lower() == name)
    if given is not None and given in candidates:
        return given
    known = object_ids.get(name)
    if known is not None and int(known) in candidates:
        return int(known)
    if not candidates:
        return None
    near = [c for c in candidates if c in close_to(graph, character)]
    return (near or candidates)[0] if len(near or candidates) == 1 else rng.choice(near or candidates)


#: Script spellings of the verbs whose name has two words (the rest are capitalised).
SCRIPT_VERBS = {"switchon": "SwitchOn", "switchoff": "SwitchOff", "putin": "PutIn", "putback": "PutBack",
                "putobjback": "PutObjBack", "lookat": "LookAt", "turnto": "TurnTo", "pointat": "PointAt",
                "standup": "StandUp", "plugin": "PlugIn", "plugout": "PlugOut", "puton": "PutOn", "putoff": "PutOff"}


def script_line(action: ParsedAction, ids: list[int]) -> str:
    """VirtualHome's script syntax: ``[Walk] <kitchen> (11)``."""
    verb = SCRIPT_VERBS.get(action.verb, action.verb.capitalize())
    return f"[{verb}] " + " ".join(f"<{name}> ({i})" for (name, _), i in zip(action.args, ids))
