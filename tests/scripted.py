"""A scripted agent behind the generation-backend interface: it follows the expert's actions but makes mistakes,
so stages 02–04 get varied step rewards, deviations, successes and failures in a second, without a model.

Mistakes: a detour (``go to`` a receptacle the expert does not need next; recoverable) or a derailment (``look``,
after which the agent only ever says ``look`` and fails). Greedy decoding makes them at fixed (task, step)
positions; sampled decoding draws them from the per-turn seed.
"""

from __future__ import annotations

import random
import re
import zlib

from steca_lib.data import chat_messages
from steca_lib.expert_data import load_expert
from steca_lib.generation import per_prompt
from steca_lib.prompts import parse_react_action, react_turn

RECEPS = re.compile(r"you see (.*)\.\n", re.S)


class ScriptedBackend:
    def __init__(self, run_dir, mistake_rate: float = 0.3):
        self.expert = {}
        for split in ("train", "seen", "unseen"):
            for rec in load_expert(run_dir, split):
                msgs = chat_messages(rec["conversations"])
                self.expert[msgs[2]["content"]] = [parse_react_action(m["content"]) for m in msgs[3::2]]
        self.rate = mistake_rate
        self.calls = 0

    def _reply(self, messages, sampling) -> str:
        actions = self.expert[messages[2]["content"]]
        taken = [parse_react_action(m["content"]) for m in messages[3::2]]
        if "look" in taken:
            return react_turn("I am lost.", "look")
        done = 0
        for a in taken:
            if done < len(actions) and a == actions[done]:
                done += 1
        if sampling.temperature == 0:
            u = (zlib.crc32(f"{messages[2]['content']}/{len(taken)}".encode()) % 1000) / 1000
        else:
            u = random.Random(sampling.seed).random()
        nxt = actions[min(done, len(actions) - 1)]
        if u < self.rate * 0.25:
            return react_turn("Let me look around.", "look")
        if u < self.rate:
            receps = [r.strip().removeprefix("and ").removeprefix("a ") for r in
                      RECEPS.search(messages[2]["content"]).group(1).split(",")]
            wrong = [r for r in receps if r not in nxt]
            return react_turn("Maybe over there.", f"go to {wrong[int(u * 1000) % len(wrong)]}")
        return react_turn("Following the plan.", nxt)

    def generate(self, prompts, sampling):
        self.calls += 1
        return [self._reply(m, s) for m, s in zip(prompts, per_prompt(sampling, len(prompts)))]
