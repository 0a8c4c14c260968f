"""Run many agent episodes at once: the backend answers every live episode's prompt together.

A reply steps its episode at once; finished episodes leave and queued ones join (continuous batching). Used by
evaluation, and by the exploration and Monte Carlo stages, which start episodes from expert prefixes instead of
from the task start.
"""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

from tqdm.auto import tqdm

from steca_lib.data import fastchat_turns
from steca_lib.envs.base import AgentEnv
from steca_lib.generation import GenerationBackend, Messages, Request, Sampling, serving
from steca_lib.prompts import NO_ACTION_OBSERVATION, observation_turn, parse_react_action


@dataclass
class Episode:
    """A live episode: its environment, the chat history the agent sees, and how it ended."""

    key: str
    env: AgentEnv
    messages: Messages
    meta: dict[str, Any] = field(default_factory=dict)
    reward: float = 0.0
    done: bool = False
    terminate_reason: str | None = None
    agent_turns: int = 0
    sampling: Sampling | None = None
    """This episode's decoding setting (None: the run's)."""

    def record(self) -> dict:
        """The evaluation record (the paper's ``{meta, conversations}`` plus the key and the caller's meta)."""
        return {"id": self.key, **self.meta,
                "meta": {"steps": self.env.steps, "reward": self.reward, "finished": self.done,
                         "success": self.reward >= 1.0, "terminate_reason": self.terminate_reason, "error": None},
                "conversations": fastchat_turns(self.messages)}


def advance(ep: Episode, reply: str | None) -> None:
    """Apply one agent reply: parse the action, step the environment, append the turn (paper's protocol)."""
    if reply is None:
        ep.done, ep.terminate_reason = True, "context_limit"
        return
    ep.agent_turns += 1
    action = parse_react_action(reply)
    result = ep.env.step(action if action is not None else "")
    observation = result.observation if action is not None else NO_ACTION_OBSERVATION
    ep.messages.append({"role": "assistant", "content": reply})
    ep.reward = result.reward
    if result.done:
        ep.done = True
        ep.terminate_reason = result.info.get("terminate_reason") or "done"
    else:
        ep.messages.append({"role": "user", "content": observation_turn(observation)})


def turn_seed(base: int, key: str, turn: int) -> int:
    """A per-episode, per-turn sampling seed: samples do not depend on which episodes share a batch, so a
    resumed or sharded run draws the same samples as an uninterrupted one."""
    return zlib.crc32(f"{base}/{key}/{turn}".encode())


def run_episodes(episodes: Iterable[Episode], backend: GenerationBackend, sampling: Sampling, batch_size: int,
                 on_finish: Callable[[Episode], None] | None = None, total: int | None = None,
                 desc: str = "episodes",
                 after_turn: Callable[[Episode], Iterable[Episode]] | None = None) -> list[Episode]:
    """Play every episode to its end with at most ``batch_size`` live episodes; returns them in finish order.

    The backend answers every live episode's prompt together (:func:`~steca_lib.generation.serving`: the engine
    at the token level, other backends one turn at a time), each with its own decoding setting and a seed from
    :func:`turn_seed`. A reply steps its episode at once. ``after_turn`` may return new episodes (e.g. Monte Carlo
    continuations branched from the state just reached); they start before queued ones, while their shared prefix
    is cached. Episodes that arrive already finished are passed to ``on_finish`` without generating. ``episodes``
    is read lazily, one episode per free slot, so a generator keeps only the live pool in memory (environments such
    as ScienceWorld hold a simulator per live episode).
    """
    source = iter(episodes)
    ready: deque[Episode] = deque()  # live episodes waiting for their next reply
    spawned: deque[Episode] = deque()  # continuations not started yet
    finished: list[Episode] = []
    live = 0
    bar = tqdm(total=total if total is not None else len(episodes), desc=desc, unit="episode", leave=False)

    def finish(ep: Episode) -> None:
        finished.append(ep)
        bar.update(1)
        if on_finish:
            on_finish(ep)

    def start() -> Episode | None:
        """The next episode to start (spawned ones first), passing finished ones straight through."""
        nonlocal live
        while (ep := spawned.popleft() if spawned else next(source, None)) is not None:
            if not ep.done:
                live += 1
                return ep
            finish(ep)
        return None

    def take(n: int) -> list[Request]:
        out = []
        while len(out) < n and (ep := ready.popleft() if ready else (start() if live < batch_size else None)):
            setting = ep.sampling or sampling
            out.append(Request(ep.messages, replace(setting, seed=turn_seed(setting.seed, ep.key, ep.agent_turns)),
                               ep))
        return out

    def on_reply(req: Request, reply: str | None) -> None:
        nonlocal live
        ep = req.tag
        advance(ep, reply)
        if after_turn is not None:
            spawned.extendleft(reversed(list(after_turn(ep))))
        if ep.done:
            live -= 1
            finish(ep)
        else:
            ready.append(ep)

    serving(backend)(take, on_reply, batch_size)
    bar.close()
    return finished
