"""ScienceWorld tasks as the pipeline's task objects, and expert ReAct trajectories from the gold action sequences.

A task is one variation of one task type; its ``family`` is the task type. The gold sequences carry no thoughts,
so the expert's thought for each action is written from the action's verb (seeded wording, like the household
expert's): enough for the ReAct format, without knowledge the gold path does not contain.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import asdict, dataclass

from steca_lib.envs.scienceworld.env import ScienceWorldEnv

#: The instruction turn of ScienceWorld conversations (the kit's wording; same information as the paper's prompt).
INSTRUCTION = (
    "Interact with a simulated world of rooms, objects, plants and animals to solve a science task. You will be "
    "given the surroundings and the task. Each turn, think about the situation, then give one action. Answer as:\n"
    "Thought: <your thoughts>\nAction: <your next action>\n\n"
    "Actions: look around; look at OBJ; open OBJ; close OBJ; go to LOC; pick up OBJ; move OBJ to OBJ; "
    "focus on OBJ; wait; wait1; inventory. Focusing on the wrong object fails the task."
)


@dataclass(frozen=True)
class ScienceWorldTask:
    """One ScienceWorld variation in a kit split."""

    task_id: str
    split: str
    task_name: str
    variation: int
    simplification: str = "easy"

    @property
    def family(self) -> str:
        return self.task_name

    @property
    def game_file(self) -> str:
        """A path-like name in the place ALFWorld records keep their game file."""
        return f"scienceworld/{self.split}/{self.task_name}/variation_{self.variation}"

    def make_env(self, max_steps: int = 40) -> ScienceWorldEnv:
        return ScienceWorldEnv(self.task_name, self.variation, self.split, max_steps, self.simplification)

    def to_dict(self) -> dict:
        return {"benchmark": "scienceworld", **asdict(self), "game_file": self.game_file}

    @classmethod
    def from_dict(cls, d: dict) -> "ScienceWorldTask":
        return cls(task_id=d["task_id"], split=d["split"], task_name=d["task_name"], variation=int(d["variation"]),
                   simplification=d.get("simplification", "easy"))


_THOUGHTS = [
    (r"look around$", ["I look around to see what is here.", "First I check what this place holds."]),
    (r"open door to (.+)", ["The door to the {0} is in my way; I open it.", "I need the way to the {0} open."]),
    (r"go to (.+)", ["Now I go to the {0}.", "The {0} is where I should be next."]),
    (r"focus on (.+)", ["The {0} is the one the task is about, so I focus on it.",
                        "Of what I see, the {0} answers the task: I focus on it."]),
    (r"pick up (.+)", ["I take the {0} with me.", "I pick up the {0} to carry it."]),
    (r"move (.+) to (.+)", ["I put the {0} in the {1}, as the task asks.", "The {1} is where the {0} must go."]),
    (r"wait\d*$", ["I wait for the task to register.", "Now I let a moment pass."]),
    (r"(.+)", ["Next: {0}.", "I {0} now."]),
]


def expert_thought(action: str, key: str) -> str:
    """A short thought for a gold action, its wording picked by a hash of ``key`` (task, step and seed)."""
    for pattern, variants in _THOUGHTS:
        m = re.match(pattern, action)
        if m:
            groups = [g.replace(" in inventory", "") for g in m.groups()]
            return variants[zlib.crc32(key.encode()) % len(variants)].format(*groups)
    raise AssertionError("the last pattern matches every action")


def expert_turns(task: ScienceWorldTask, seed: int = 0,
                 max_steps: int = 40) -> tuple[str, list[tuple[str, str, str]], ScienceWorldEnv]:
    """Play the gold path: the opening text, (thought, action, observation) per step, and the finished episode."""
    env = task.make_env(max_steps)
    opening = env.reset()
    turns = []
    for k, action in enumerate(env.gold_actions()):
        if env.done:
            break
        result = env.step(action)
        turns.append((expert_thought(action, f"{task.task_id}/{k}/{seed}"), action, result.observation))
    env.close()
    return opening, turns, env
