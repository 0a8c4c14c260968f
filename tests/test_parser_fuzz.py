"""Property-based fuzz of the action parser and the world's answer to arbitrary input."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steca_lib.envs.household import HouseholdEnv, generate_task
from steca_lib.envs.household.generator import WorldSpec
from steca_lib.envs.household.world import NOTHING, parse_action

TASKS = [generate_task(WorldSpec(), "train", i) for i in range(12)]
WORDS = st.sampled_from(["go", "to", "take", "from", "put", "in/on", "open", "close", "clean", "heat", "cool",
                         "with", "use", "toggle", "look", "inventory", "examine", "fridge", "apple", "cabinet",
                         "1", "2", "10", "desklamp", ".", "Action:", "in", "on"])


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=60))
def test_any_text_is_answered_never_raised(text):
    env = HouseholdEnv(TASKS[0])
    env.reset()
    result = env.step(text)
    assert isinstance(result.observation, str) and result.observation
    assert env.steps == 1
    if parse_action(text) is None:
        assert result.observation == NOTHING


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(WORDS, min_size=1, max_size=7), st.integers(0, len(TASKS) - 1))
def test_grammar_like_word_salad(words, k):
    env = HouseholdEnv(TASKS[k])
    env.reset()
    text = " ".join(words)
    admissible = env.admissible_actions()
    parsed = parse_action(text)
    result = env.step(text)
    if parsed is None:
        assert result.observation == NOTHING
    else:
        verb, args = parsed
        assert all(a.split()[-1].isdigit() for a in args)
        # a well-formed action does something exactly when the world lists it as admissible here
        normalized = " ".join(text.lower().split()).rstrip(".")
        assert (result.observation == NOTHING) == (normalized not in admissible), (text, result.observation)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(TASKS) - 1), st.lists(st.integers(0, 10_000), min_size=1, max_size=25))
def test_admissible_actions_parse_and_do_something(k, picks):
    """Random walks over admissible actions: each parses, and none is answered with Nothing happens."""
    env = HouseholdEnv(TASKS[k], max_steps=100)
    env.reset()
    for p in picks:
        if env.done:
            break
        actions = env.admissible_actions()
        action = actions[p % len(actions)]
        assert parse_action(action) is not None
        assert env.step(action).observation != NOTHING, action
