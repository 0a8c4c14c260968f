"""ScienceWorld (the `scienceworld` package: a bundled jar on Java 17) behind the kit's environment protocol."""

from steca_lib.envs.scienceworld.env import SPLIT_VARIATIONS, ScienceWorldEnv, expert_actions, task_variations

__all__ = ["SPLIT_VARIATIONS", "ScienceWorldEnv", "expert_actions", "task_variations"]
