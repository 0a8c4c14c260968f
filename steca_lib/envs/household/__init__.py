"""The embedded household world: an offline, ALFWorld-compatible text environment that ships with the kit."""

from steca_lib.envs.household.expert import HouseholdExpert
from steca_lib.envs.household.generator import SPLITS, WorldSpec, generate_split, generate_task
from steca_lib.envs.household.tasks import Goal, Scene, Task
from steca_lib.envs.household.world import HouseholdEnv, parse_action

__all__ = ["HouseholdEnv", "HouseholdExpert", "WorldSpec", "SPLITS", "Task", "Goal", "Scene",
           "generate_split", "generate_task", "parse_action"]
