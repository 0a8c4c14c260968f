"""The ReAct prompt protocol of the paper's code: instruction, ``OK``, task, then Thought/Action turns.

The instruction wording is the kit's own (the official text is unlicensed); it carries the same information:
the turn format and the action grammar. Released data keep their own first turn when loaded.
"""

from __future__ import annotations

import re

INSTRUCTION = (
    "Interact with a household to solve a task. You will be given the room and a goal. Each turn, think about "
    "the situation, then give one action. Answer as:\nThought: <your thoughts>\nAction: <your next action>\n\n"
    "Actions: go to {recep}; open {recep}; close {recep}; take {obj} from {recep}; put {obj} in/on {recep}; "
    "use {lamp}; clean {obj} with {recep}; heat {obj} with {recep}; cool {obj} with {recep}. "
    "If the environment says \"Nothing happens.\", the action was invalid."
)

#: The observation the paper's environments give to a turn without ``Action:`` (the step still counts).
NO_ACTION_OBSERVATION = "Error Input. Your input must contains 'Action: '"

_ACTION = re.compile(r"Action:\s?(.*)", re.DOTALL)


def react_turn(thought: str, action: str) -> str:
    """One assistant turn in the ReAct format."""
    return f"Thought: {thought}\nAction: {action}"


def parse_react_action(text: str) -> str | None:
    """The action of an assistant turn, as the paper's code extracts it (first ``Action:``, rest of text,
    stripped), or None when the turn has no ``Action:``."""
    m = _ACTION.search(text)
    if m is None:
        return None
    return m.group(1).strip()


def observation_turn(observation: str) -> str:
    """The user turn that carries an observation back to the agent."""
    return f"Observation: {observation}"
