"""ALFWorld's real text engine: an adapter, a compiler from embedded tasks to ALFWorld games, and the released
data's game collector. Needs the ``alfworld`` extra; importing this package does not import it."""

from steca_lib.envs.alfworld.compile import problem_pddl, write_games
from steca_lib.envs.alfworld.env import AlfworldEnv, from_engine, to_engine
from steca_lib.envs.alfworld.games import GameRef, collect_games, locate_data, released_games

__all__ = ["AlfworldEnv", "GameRef", "collect_games", "from_engine", "locate_data", "problem_pddl",
           "released_games", "to_engine", "write_games"]
