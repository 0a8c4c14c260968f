"""The interface every environment implements (:class:`AgentEnv`), run as one suite on each world the kit drives.

* embedded: the hand-made kitchen task;
* alfworld: the same task compiled into an ALFWorld game, played in the real engine;
* virtualhome: a small graph and the test simulator of ``test_virtualhome.py`` (the real one cannot run here);
* scienceworld: the real simulator, task ``find-living-thing`` variation 0, with its gold action sequence.
"""

import importlib.util
import os
import shutil
from dataclasses import dataclass
from typing import Callable

import pytest

from steca_lib.envs.base import AgentEnv
from steca_lib.envs.household import HouseholdEnv

KITCHEN_PLAN = ["go to fridge 1", "open fridge 1", "take apple 1 from fridge 1", "go to sinkbasin 1",
                "clean apple 1 with sinkbasin 1", "go to microwave 1", "open microwave 1",
                "put apple 1 in/on microwave 1"]
HAVE_ALFWORLD = importlib.util.find_spec("alfworld") is not None or bool(os.environ.get("CI"))
HAVE_SCIENCEWORLD = importlib.util.find_spec("scienceworld") is not None and shutil.which("java") is not None


@dataclass
class World:
    """How to make a fresh episode, a plan that wins it, and how the world answers an unknown command."""

    make: Callable[[int], AgentEnv]
    plan: list[str]
    invalid_answer: str


def _embedded(kitchen_task, tmp_path):
    return World(lambda n: HouseholdEnv(kitchen_task, max_steps=n), KITCHEN_PLAN, "Nothing happens.")


def _alfworld(kitchen_task, tmp_path):
    from steca_lib.envs.alfworld import AlfworldEnv, write_games

    [path] = write_games([kitchen_task], tmp_path)
    return World(lambda n: AlfworldEnv(path, kitchen_task.task_id, kitchen_task.split, n), KITCHEN_PLAN,
                 "Nothing happens.")


def _virtualhome(kitchen_task, tmp_path):
    from test_virtualhome import PLAN, TinySimulator, _graph, _record

    from steca_lib.envs.virtualhome import VirtualHomeEnv

    return World(lambda n: VirtualHomeEnv(_record(), TinySimulator(), graph=_graph(), max_steps=n), PLAN,
                 "Nothing happens.")


def _scienceworld(kitchen_task, tmp_path):
    from steca_lib.envs.scienceworld import ScienceWorldEnv, expert_actions

    plan = expert_actions("find-living-thing", 0)
    return World(lambda n: ScienceWorldEnv("find-living-thing", 0, "seen", n), plan,
                 "No known action matches that input.")


WORLDS = [
    pytest.param(_embedded, id="embedded"),
    pytest.param(_alfworld, id="alfworld", marks=pytest.mark.skipif(
        not HAVE_ALFWORLD, reason="ALFWorld's engine needs the extra: pip install -e '.[alfworld]'")),
    pytest.param(_virtualhome, id="virtualhome"),
    pytest.param(_scienceworld, id="scienceworld", marks=pytest.mark.skipif(
        not HAVE_SCIENCEWORLD, reason="ScienceWorld needs the extra (pip install -e '.[scienceworld]') and Java 17")),
]


@pytest.fixture(params=WORLDS)
def world(request, kitchen_task, tmp_path):
    made = []
    spec = request.param(kitchen_task, tmp_path)
    original = spec.make

    def make(max_steps=40):
        env = original(max_steps)
        made.append(env)
        return env

    spec.make = make
    yield spec
    for env in made:  # simulators in other processes are stopped
        getattr(env, "close", lambda: None)()


def test_protocol_and_opening(world):
    env = world.make()
    assert isinstance(env, AgentEnv)
    opening = env.reset()
    assert isinstance(opening, str) and ("Your task is" in opening or opening.startswith("The task is"))
    assert env.steps == 0 and not env.won


def test_winning_episode(world):
    env = world.make()
    env.reset()
    results = [env.step(a) for a in world.plan]
    assert [r.done for r in results] == [False] * (len(world.plan) - 1) + [True]
    last = results[-1]
    assert last.reward == 1.0 and last.info["won"] and last.info["terminate_reason"] == "success" and env.won
    assert env.step(world.plan[0]).done  # a finished episode stays finished


def test_invalid_actions_are_answered_and_counted(world):
    env = world.make()
    env.reset()
    for bad in ["", "fly to the moon", "Thought: hmm", "🍎"]:
        result = env.step(bad)
        assert result.observation == world.invalid_answer and result.reward == 0.0 and not result.done, bad
    assert env.steps == 4


def test_step_limit(world):
    env = world.make(3)
    env.reset()
    results = [env.step("fly to the moon") for _ in range(3)]
    assert [r.done for r in results] == [False, False, True]
    assert results[-1].info["terminate_reason"] == "max_steps"


def test_clone_is_independent_and_reset_restores(world):
    env = world.make()
    opening = env.reset()
    for action in world.plan[:2]:
        env.step(action)
    twin = env.clone()
    assert twin.steps == 2
    after = [twin.step(a) for a in world.plan[2:]]
    assert twin.won and not env.won and env.steps == 2
    assert env.step(world.plan[2]).observation == after[0].observation
    assert env.reset() == opening and env.steps == 0 and not env.won
