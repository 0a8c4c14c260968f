"""VirtualHome success conditions: the task file's ``revised_graph`` checked against the current graph.

A task is done when every listed node state holds, every edge in ``revised_nodes`` (the edges the task removes)
is gone, and every edge in ``revised_add_edges`` exists, as the paper's evaluation checks after each step.
Graphs are VirtualHome's JSON: ``{"nodes": [{"id", "class_name", "states", ...}], "edges": [{"from_id",
"relation_type", "to_id"}]}``.
"""

from __future__ import annotations


def _edge(e: dict) -> tuple[int, str, int]:
    return int(e["from_id"]), str(e["relation_type"]).upper(), int(e["to_id"])


def unmet_conditions(graph: dict, revised: dict) -> list[str]:
    """Every condition of ``revised`` that ``graph`` does not meet, in words (empty = success)."""
    states = {int(n["id"]): {s.upper() for s in n.get("states", ())} for n in graph["nodes"]}
    edges = {_edge(e) for e in graph["edges"]}
    unmet = []
    for node in revised.get("nodes", ()):
        missing = {s.upper() for s in node.get("states", ())} - states.get(int(node["id"]), set())
        unmet += [f"node {node['id']} ({node.get('class_name', '?')}) is not {s}" for s in sorted(missing)]
    unmet += [f"edge {e} should be gone" for e in map(_edge, revised.get("revised_nodes", ())) if e in edges]
    unmet += [f"edge {e} is missing" for e in map(_edge, revised.get("revised_add_edges", ())) if e not in edges]
    return unmet


def goal_reached(graph: dict, revised: dict) -> bool:
    """Whether every success condition holds."""
    return not unmet_conditions(graph, revised)
