"""The household world: every action type, ALFWorld's observation wording, invalid input, branching, limits."""

from steca_lib.envs.base import AgentEnv
from steca_lib.envs.household import Goal, HouseholdEnv, Scene, Task
from steca_lib.envs.household.world import NOTHING, list_things, parse_action


def test_protocol_and_intro(kitchen_task):
    env = HouseholdEnv(kitchen_task)
    assert isinstance(env, AgentEnv)
    assert env.reset() == (
        "You are in the middle of a room. Looking quickly around you, you see a cabinet 1, a countertop 1, "
        "a fridge 1, a microwave 1, and a sinkbasin 1.\n\nYour task is to: put a clean apple in microwave.")


def test_list_things_matches_alfworld():
    assert list_things([]) == "nothing"
    assert list_things(["apple 1"]) == "a apple 1"
    assert list_things(["apple 1", "knife 2"]) == "a apple 1, and a knife 2"
    assert list_things(["a 1", "b 2", "c 3"]) == "a a 1, a b 2, and a c 3"


def test_every_action_type_and_its_observation(kitchen_task):
    env = HouseholdEnv(kitchen_task)
    env.reset()
    script = [
        ("go to countertop 1", "On the countertop 1, you see a knife 1."),
        ("go to fridge 1", "The fridge 1 is closed."),
        ("take apple 1 from fridge 1", NOTHING),  # closed: contents not reachable
        ("open fridge 1", "You open the fridge 1. The fridge 1 is open. In it, you see a apple 1, and a egg 1."),
        ("examine fridge 1", "The fridge 1 is open. In it, you see a apple 1, and a egg 1."),
        ("take apple 1 from fridge 1", "You pick up the apple 1 from the fridge 1."),
        ("take egg 1 from fridge 1", NOTHING),  # hands full
        ("inventory", "You are carrying: a apple 1."),
        ("examine apple 1", "There's nothing special about apple 1."),
        ("cool apple 1 with fridge 1", "You cool the apple 1 using the fridge 1."),
        ("close fridge 1", "You close the fridge 1."),
        ("go to fridge 1", NOTHING),  # already there
        ("look", "You are facing the fridge 1. Next to it, you see nothing."),
        ("go to microwave 1", "The microwave 1 is closed."),
        ("heat apple 1 with microwave 1", "You heat the apple 1 using the microwave 1."),
        ("clean apple 1 with microwave 1", NOTHING),  # wrong appliance
        ("go to sinkbasin 1", "On the sinkbasin 1, you see nothing."),
        ("clean apple 1 with sinkbasin 1", "You clean the apple 1 using the sinkbasin 1."),
        ("go to microwave 1", "The microwave 1 is closed."),
        ("put apple 1 in/on microwave 1", NOTHING),  # closed
        ("open microwave 1", "You open the microwave 1. The microwave 1 is open. In it, you see nothing."),
        ("put apple 1 in/on microwave 1", "You put the apple 1 in/on the microwave 1."),
    ]
    for k, (action, expected) in enumerate(script):
        result = env.step(action)
        assert result.observation == expected, action
        assert result.done == (k == len(script) - 1)
    assert result.reward == 1.0 and result.info["won"] and result.info["terminate_reason"] == "success"
    assert env.step("look").observation == NOTHING  # finished episodes ignore further actions


def test_middle_of_room_look_inventory_and_use(kitchen_task):
    env = HouseholdEnv(kitchen_task)
    env.reset()
    assert env.step("look").observation.startswith("You are in the middle of a room.")
    assert env.step("inventory").observation == "You are not carrying anything."
    assert env.step("use desklamp 1").observation == NOTHING


def test_look_at_object_under_lamp():
    scene = Scene(room="bedroom", floorplan=0, receptacles=("bed 1", "sidetable 1"),
                  contents={"bed 1": ("book 1",), "sidetable 1": ("desklamp 1",)})
    goal = Goal(family="look_at_obj_in_light", obj="book", recep=None, lamp="desklamp",
                text="look at book under the desklamp.")
    env = HouseholdEnv(Task("t", "train", 0, 0, scene, goal))
    env.reset()
    env.step("go to sidetable 1")
    assert env.step("take desklamp 1 from sidetable 1").observation == NOTHING
    assert env.step("use desklamp 1").observation == "You turn on the desklamp 1."
    assert not env.won  # not holding the book yet
    env.step("go to bed 1")
    env.step("take book 1 from bed 1")
    env.step("go to sidetable 1")
    assert env.won
    assert env.step("toggle desklamp 1").done


def test_malformed_actions_answer_nothing_happens(kitchen_task):
    env = HouseholdEnv(kitchen_task)
    env.reset()
    for bad in ["", "   ", "go", "go to", "go to moon 1", "go to fridge", "take apple from fridge 1",
                "put apple 1 in fridge 1", "Thought: hmm", "open fridge 1 now", "\x00\n\t", "🍎", "go to fridge 1 2"]:
        result = env.step(bad)
        assert result.observation == NOTHING, bad
        assert result.reward == 0.0
    assert env.steps == 13  # invalid actions still count


def test_action_parser_forgives_case_spaces_and_period():
    assert parse_action("  Go  To   Fridge 1. ") == ("go", ("fridge 1",))
    assert parse_action("put apple 1 in/on countertop 2") == ("put", ("apple 1", "countertop 2"))
    assert parse_action("toggle desklamp 1") == ("use", ("desklamp 1",))
    assert parse_action("go to fridge 1 and open it") is None


def test_max_steps_ends_the_episode(kitchen_task):
    env = HouseholdEnv(kitchen_task, max_steps=3)
    env.reset()
    results = [env.step("look") for _ in range(3)]
    assert [r.done for r in results] == [False, False, True]
    assert results[-1].info["terminate_reason"] == "max_steps" and results[-1].reward == 0.0


def test_clone_is_independent(kitchen_task):
    env = HouseholdEnv(kitchen_task)
    env.reset()
    env.step("go to fridge 1")
    env.step("open fridge 1")
    twin = env.clone()
    twin.step("take apple 1 from fridge 1")
    twin.step("cool apple 1 with fridge 1")
    assert twin.state.holding == "apple 1" and twin.steps == 4
    assert env.state.holding is None and env.steps == 2
    assert env.state.contents["fridge 1"] == ["apple 1", "egg 1"]
    assert env.state.transformed["cool"] == set()
    # and the other way round
    env.step("close fridge 1")
    assert "fridge 1" in twin.state.opened


def test_reset_restores_the_initial_state(kitchen_task):
    env = HouseholdEnv(kitchen_task)
    first = env.reset()
    env.step("go to fridge 1")
    env.step("open fridge 1")
    env.step("take apple 1 from fridge 1")
    assert env.reset() == first
    assert env.steps == 0 and env.state.holding is None and env.state.contents["fridge 1"] == ["apple 1", "egg 1"]
