"""VirtualHome's evolving-graph simulator behind the kit's :class:`AgentEnv` protocol.

The simulator is pure Python but ships only with VirtualHome's source (``simulation/evolving_graph``) and its
``resources/*.json``; the PyPI wheel lacks the resources and does not install on Python 3.11. So the adapter
imports it from a folder the user gives (:func:`load_simulator`), and everything else (parsing, grounding,
success conditions, step limit, branching) is the kit's and runs on any object with the :class:`Simulator` shape.
Branching is cheap here: the whole state is the graph, and :meth:`VirtualHomeEnv.clone` copies it.
Observations are the kit's wording (``Done: [Walk] <kitchen> (11).`` or ``Nothing happens.``).
"""

from __future__ import annotations

import copy
import json
import random
import sys
from pathlib import Path
from typing import Protocol

from steca_lib.data import format_error, read_records
from steca_lib.envs.base import StepResult
from steca_lib.envs.virtualhome.actions import ground, parse_action, script_line
from steca_lib.envs.virtualhome.conditions import goal_reached

NOTHING = "Nothing happens."


class Simulator(Protocol):
    """Runs one script line on a graph: ``(succeeded, new graph, message)``; never mutates its input."""

    def execute(self, graph: dict, line: str) -> tuple[bool, dict, str]: ...


class EvolvingGraphSimulator:
    """VirtualHome's own executor (``evolving_graph``), imported from a VirtualHome source checkout."""

    def __init__(self, source: str | Path):
        root = Path(source).expanduser()
        simulation = root / "simulation" if (root / "simulation").is_dir() else root
        if not (simulation / "evolving_graph").is_dir() or not (root / "resources").is_dir() and \
                not (simulation.parent / "resources").is_dir():
            raise FileNotFoundError(
                f"{root} is not a VirtualHome source folder (need simulation/evolving_graph and resources/). "
                "Clone https://github.com/xavierpuigf/virtualhome on a machine with network access, copy it here "
                "and pass its path as virtualhome_source.")
        if str(simulation) not in sys.path:
            sys.path.insert(0, str(simulation))
        from evolving_graph import utils
        from evolving_graph.environment import EnvironmentGraph
        from evolving_graph.execution import ScriptExecutor
        from evolving_graph.scripts import read_script_from_list_string

        self._graph_cls, self._executor_cls, self._read = EnvironmentGraph, ScriptExecutor, read_script_from_list_string
        self._names = utils.load_name_equivalence()

    def execute(self, graph: dict, line: str) -> tuple[bool, dict, str]:
        try:
            script = self._read([line])
        except Exception as err:  # the simulator's parser raises its own exception types
            return False, graph, f"cannot parse {line!r}: {err}"
        executor = self._executor_cls(self._graph_cls(copy.deepcopy(graph)), self._names)
        ok, state, _ = executor.execute(script)
        if not ok or state is None:
            return False, graph, executor.info.get_error_string() if hasattr(executor, "info") else "failed"
        return True, state.to_dict(), ""


def load_simulator(source: str | Path) -> EvolvingGraphSimulator:
    """The real simulator from a VirtualHome source folder (clear error when the folder is not one)."""
    return EvolvingGraphSimulator(source)


def character_id(graph: dict) -> int:
    """The id of the (first) character node."""
    return min(int(n["id"]) for n in graph["nodes"] if n["class_name"].lower() == "character")


def task_text(record: dict) -> str:
    """The opening of an episode, as the paper's VirtualHome data phrase tasks."""
    return f"The task is {record['task']}({record.get('description', '')})."


def read_tasks(path: str | Path) -> list[dict]:
    """VirtualHome task records (the released ``*.jsonl`` test/train files), checked for the fields the adapter
    uses: ``task``, ``revised_graph`` (with ``nodes``, ``revised_nodes``, ``revised_add_edges``) and ``path``."""
    path = Path(path)
    records = read_records(path)
    for i, rec in enumerate(records):
        for field in ("task", "revised_graph", "path"):
            if not isinstance(rec, dict) or field not in rec:
                raise format_error(path, i, rec, field, "missing")
        for key in ("nodes", "revised_nodes", "revised_add_edges"):
            if not isinstance(rec["revised_graph"].get(key, []), list):
                raise format_error(path, i, rec, f"revised_graph.{key}", "expected a list")
    return records


def initial_graph(record: dict, graph_root: str | Path | None = None) -> dict:
    """A task's starting graph: inline (``init_graph``) or read from ``<graph_root>/<path>`` (``init_graph`` key)."""
    if "init_graph" in record:
        return record["init_graph"]
    path = Path(graph_root or ".") / record["path"]
    if not path.is_file():
        raise FileNotFoundError(f"VirtualHome graph file not found: {path} (task {record.get('id')})")
    return json.loads(path.read_text())["init_graph"]


class VirtualHomeEnv:
    """One episode of one VirtualHome task record, implementing :class:`steca_lib.envs.base.AgentEnv`."""

    def __init__(self, record: dict, simulator: Simulator, graph: dict | None = None, split: str = "",
                 max_steps: int = 40, seed: int = 0):
        self.record = record
        self.task_id = str(record.get("id", record.get("path", "")))
        self.split = split
        self.max_steps = max_steps
        self.seed = seed
        self.simulator = simulator
        self._start = graph if graph is not None else initial_graph(record)
        self.reset()

    def reset(self) -> str:
        self.graph = copy.deepcopy(self._start)
        self._steps, self._won = 0, goal_reached(self.graph, self.record["revised_graph"])
        self._rng = random.Random(f"{self.seed}/{self.task_id}")
        return task_text(self.record)

    def step(self, action: str) -> StepResult:
        if self.done:
            return StepResult(NOTHING, float(self._won), True, self._info("already_done"))
        self._steps += 1
        observation = self._apply(action)
        self._won = goal_reached(self.graph, self.record["revised_graph"])
        reason = "success" if self._won else ("max_steps" if self._steps >= self.max_steps else None)
        return StepResult(observation, float(self._won), reason is not None, self._info(reason))

    def _apply(self, action: str) -> str:
        parsed = parse_action(action)
        if parsed is None:
            return NOTHING
        me = character_id(self.graph)
        ids = [ground(self.graph, name, given, self.record.get("object_id_dict", {}), me, self._rng)
               for name, given in parsed.args]
        if any(i is None for i in ids):
            return NOTHING
        line = script_line(parsed, ids)
        ok, graph, _ = self.simulator.execute(self.graph, line)
        if not ok:
            return NOTHING
        self.graph = graph
        return f"Done: {line}."

    def clone(self) -> "VirtualHomeEnv":
        twin = object.__new__(VirtualHomeEnv)
        twin.__dict__.update(self.__dict__)
        twin.graph = copy.deepcopy(self.graph)
        twin._rng = random.Random()
        twin._rng.setstate(self._rng.getstate())
        return twin

    @property
    def steps(self) -> int:
        return self._steps

    @property
    def done(self) -> bool:
        return self._won or self._steps >= self.max_steps

    @property
    def won(self) -> bool:
        return self._won

    def _info(self, reason: str | None) -> dict:
        return {"won": self._won, "steps": self._steps, "terminate_reason": reason}
