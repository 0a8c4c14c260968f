"""VirtualHome (evolving-graph simulator): success conditions, action grounding and an adapter that imports the
simulator from a VirtualHome source folder the user provides (it cannot be installed or downloaded here)."""

from steca_lib.envs.virtualhome.actions import ground, parse_action, script_line
from steca_lib.envs.virtualhome.conditions import goal_reached, unmet_conditions
from steca_lib.envs.virtualhome.env import VirtualHomeEnv, initial_graph, load_simulator, read_tasks, task_text

__all__ = ["VirtualHomeEnv", "goal_reached", "ground", "initial_graph", "load_simulator", "parse_action",
           "read_tasks", "script_line", "task_text", "unmet_conditions"]
