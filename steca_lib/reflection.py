"""Reflection on a deviated step (the paper's §3.2, Eq. 6): a thought that notices the mistake and leads back to
the expert's next action.

Reflectors share one interface, ``reflect(requests) -> raw texts``:

* :class:`ChatReflector`: any OpenAI-compatible chat endpoint (GPT-4o in the paper, or a vLLM server). Model and
  endpoint come from stage 04's settings, else ``STECA_REFLECT_MODEL`` and ``STECA_REFLECT_BASE_URL`` (else
  ``OPENAI_BASE_URL``); the key from ``OPENAI_API_KEY``. Neither the key nor the address is written to artifacts
  (the address only as a digest, in the reflector's name). Timeouts, 429 and 5xx are retried with backoff by the
  ``openai`` client; malformed and empty answers are retried here.
* :class:`LocalReflector`: a local Hugging Face model (the paper's self-reflection ablation uses the agent).
* :class:`RuleReflector`: an offline stand-in for GPT-4o on the embedded world, from templates.

:func:`reflect_all` logs every raw answer on disk, keyed by reflector and prompt, as soon as it arrives; for model
reflectors it is also a cache: a rerun costs nothing and a failure loses nothing already collected.
:func:`postprocess` then forces the expert action.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from steca_lib.data import append_jsonl, recover_jsonl
from steca_lib.errors import ConfigError, StecaError
from steca_lib.generation import Sampling, require
from steca_lib.prompts import parse_react_action

REFLECTORS = ("rule", "chat", "self")


@dataclass
class ReflectionRequest:
    """One deviated branch: the history up to the deviated step's observation and the expert's next action."""

    key: str
    history: list[dict]
    """FastChat turns: instruction, ``OK``, task, expert steps, then the deviated action and its observation."""
    expert_action: str

    @property
    def deviated_action(self) -> str:
        return parse_react_action(self.history[-2]["value"]) or ""

    @property
    def deviated_observation(self) -> str:
        return self.history[-1]["value"].removeprefix("Observation:").strip()

    @property
    def goal(self) -> str:
        m = re.search(r"Your task is to:\s*(.*)", self.history[2]["value"])
        return m.group(1).strip().rstrip(".") if m else "the task"


def render_history(turns: list[dict]) -> str:
    """Turns as ``Human: …`` / ``Gpt: …`` blocks separated by blank lines (the official rendering)."""
    return "\n\n".join(f"{t['from'].capitalize()}: {t['value']}" for t in turns)


def reflection_prompt(req: ReflectionRequest) -> str:
    """The reflection prompt: the history, the fact that its last step was a poor choice, and the expert's next
    action. The wording is the kit's own and carries the information of the paper's Fig. 7."""
    return (f"{render_history(req.history)}\n\n"
            "The conversation above is an agent's interaction so far. Its most recent step was a poor choice and "
            f"may take the agent away from the goal. The correct next action is: {req.expert_action}. Write the "
            "thought that the agent should have now: it should notice what was wrong with the most recent step and "
            "lead to the correct next action. Answer in the format of the agent's turns above "
            "(Thought: ... then Action: ...).")


def postprocess(raw: str, expert_action: str) -> str:
    """A clean agent turn from a raw reflection: text from the first ``Thought``, cut before any ``Action:`` or
    stray ``Observation:``/``Human:``/``Gpt:`` line, then ``Action: <expert action>`` (the action is forced)."""
    start = raw.find("Thought")
    body = raw[start:] if start >= 0 else "Thought: " + raw.strip()
    thought = re.split(r"\s*\bAction:", body, maxsplit=1)[0]
    thought = re.split(r"\n\s*(?:Observation|Human|Gpt)\s*:", thought, maxsplit=1)[0]
    thought = " ".join(thought.split())
    return f"{thought}\nAction: {expert_action}"


class Reflector(Protocol):
    name: str
    batch_size: int
    """Requests per ``reflect`` call; answers are cached after each call."""
    cached: bool
    """Whether answers are reused from the on-disk cache (False for the instant rule-based stand-in, so that a
    change to its templates takes effect)."""

    def reflect(self, requests: list[ReflectionRequest]) -> list[str]:
        """One raw answer per request."""


_MISTAKE_INVALID = (
    "My last action, {a}, did nothing: it was not possible here.",
    "Nothing happened after \"{a}\", so that move was wrong.",
    "\"{a}\" had no effect; I picked an action that does not apply here.",
)
_MISTAKE_DETOUR = (
    "\"{a}\" showed me: {o} That does not bring me closer to the goal, {g}.",
    "The last step, {a}, was a detour: {o} It does not help to {g}.",
    "I chose to {a}, but this is off the path to {g}. What I saw: {o}",
)
_LEAD = (
    "The right next step is to {e}.",
    "I should {e} instead.",
    "To get back on track, I will {e}.",
    "Instead, I need to {e}.",
)


def _clip(text: str, n: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 1].rstrip() + "…"


@dataclass
class RuleReflector:
    """Offline stand-in for GPT-4o on the embedded world (label every result with it): names the mistake from
    the observation the deviated action caused and leads to the expert's next action; wording varies by branch."""

    name: str = "rule-based stand-in for GPT-4o"
    batch_size: int = 256
    cached: bool = False

    def reflect(self, requests: list[ReflectionRequest]) -> list[str]:
        out = []
        for req in requests:
            h = zlib.crc32(req.key.encode())
            a, o = req.deviated_action, _clip(req.deviated_observation)
            if not a:
                mistake = "My last reply had no action, so nothing changed."
            elif o.startswith("Nothing happens"):
                mistake = _MISTAKE_INVALID[h % len(_MISTAKE_INVALID)].format(a=a)
            else:
                o = o[:1].lower() + o[1:]
                mistake = _MISTAKE_DETOUR[h % len(_MISTAKE_DETOUR)].format(a=a, o=o, g=req.goal)
            lead = _LEAD[(h // 7) % len(_LEAD)].format(e=req.expert_action)
            out.append(f"Thought: {mistake} {lead}\nAction: {req.expert_action}")
        return out


class ReflectionError(StecaError, RuntimeError):
    """The reflection endpoint kept failing; answers received before the failure are in the cache."""


def chat_endpoint(model: str | None = None, base_url: str | None = None) -> tuple[str, str | None]:
    """The chat reflector's model and endpoint: the arguments, else ``STECA_REFLECT_MODEL`` (default ``gpt-4o``) and
    ``STECA_REFLECT_BASE_URL``, else ``OPENAI_BASE_URL`` (None: the openai client's default)."""
    return (model or os.environ.get("STECA_REFLECT_MODEL") or "gpt-4o",
            base_url or os.environ.get("STECA_REFLECT_BASE_URL") or os.environ.get("OPENAI_BASE_URL") or None)


def chat_name(model: str, base_url: str | None) -> str:
    """The chat reflector's name: its model and a digest of its endpoint (an address may carry a secret, so it is
    never written down); the name keys the reflection cache and the stage's finished check."""
    where = hashlib.sha256(base_url.encode()).hexdigest()[:12] if base_url else "default"
    return f"chat:{model}@{where}"


class ChatReflector:
    """An OpenAI-compatible chat endpoint (one user message, no system prompt, as the official code)."""

    batch_size = 1
    cached = True

    def __init__(self, model: str | None = None, base_url: str | None = None, timeout: float = 60.0,
                 max_retries: int = 5, temperature: float | None = None, max_tokens: int = 512):
        openai = require("openai", "install the extra: pip install -e '.[openai]'")
        self.model, url = chat_endpoint(model, base_url)
        self.name = chat_name(self.model, url)
        self.temperature, self.max_tokens, self.max_retries = temperature, max_tokens, max_retries
        self._openai = openai
        self._client = openai.OpenAI(base_url=url, api_key=os.environ.get("OPENAI_API_KEY", "none"),
                                     timeout=timeout, max_retries=max_retries)

    def _ask(self, prompt: str) -> str:
        """One answer; the client retries timeouts, 429 and 5xx, this loop retries malformed answers."""
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            try:
                resp = self._client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": prompt}], max_tokens=self.max_tokens,
                    **({} if self.temperature is None else {"temperature": self.temperature}))
                text = resp.choices[0].message.content
                if isinstance(text, str) and text.strip():
                    return text
                last = ValueError("empty answer")
            except (self._openai.APIResponseValidationError, json.JSONDecodeError, AttributeError, IndexError,
                    TypeError, ValueError) as e:
                last = e
            except self._openai.APIError as e:  # already retried by the client
                raise ReflectionError(f"reflection endpoint failed after {self.max_retries} retries: {e}") from e
            time.sleep(min(0.5 * 2 ** attempt, 8.0))
        raise ReflectionError(f"reflection endpoint gave no usable answer in {self.max_retries + 1} tries: {last}")

    def reflect(self, requests: list[ReflectionRequest]) -> list[str]:
        return [self._ask(reflection_prompt(r)) for r in requests]


class LocalReflector:
    """A local Hugging Face chat model answers the reflection prompt (greedy)."""

    batch_size = 16
    cached = True

    def __init__(self, model_dir: str, backend: str = "cached", max_new_tokens: int = 128, label: str = ""):
        from steca_lib.backends import open_backend

        self.name = f"local:{label or Path(model_dir).name}"
        self._backend = open_backend(backend, model_dir, "float32")
        self._sampling = Sampling(temperature=0.0, max_new_tokens=max_new_tokens,
                                  stop=("\nObservation:", "\nHuman:"))

    def reflect(self, requests: list[ReflectionRequest]) -> list[str]:
        prompts = [[{"role": "user", "content": reflection_prompt(r)}] for r in requests]
        return [text or "" for text in self._backend.generate(prompts, self._sampling)]


def prompt_hash(reflector: str, prompt: str) -> str:
    return hashlib.sha256(f"{reflector}\n{prompt}".encode()).hexdigest()


def reflect_all(requests: list[ReflectionRequest], reflector: Reflector, cache_path: Path) -> tuple[list[dict], int]:
    """Reflections for every request, from the on-disk cache or the reflector (each raw answer is appended to the
    cache when it arrives). Returns one row per request (key, raw, turn) and the number of prompts sent."""
    from tqdm.auto import tqdm

    if not reflector.cached:
        Path(cache_path).unlink(missing_ok=True)
    cache = {r["hash"]: r for r in recover_jsonl(cache_path)}
    hashes = [prompt_hash(reflector.name, reflection_prompt(r)) for r in requests]
    first = {h: i for i, h in reversed(list(enumerate(hashes)))}  # identical prompts share one answer
    todo = sorted(i for h, i in first.items() if h not in cache)
    with Path(cache_path).open("a", encoding="utf-8") as f:
        step = reflector.batch_size
        for start in tqdm(range(0, len(todo), step), desc="reflections", unit="call", leave=False):
            chunk = todo[start:start + step]
            for i, raw in zip(chunk, reflector.reflect([requests[i] for i in chunk])):
                row = {"hash": hashes[i], "reflector": reflector.name, "key": requests[i].key, "raw": raw}
                cache[hashes[i]] = row
                append_jsonl(f, row)
    rows = [{"key": r.key, "reflector": reflector.name, "raw": cache[h]["raw"],
             "turn": postprocess(cache[h]["raw"], r.expert_action)} for r, h in zip(requests, hashes)]
    return rows, len(todo)


def open_reflector(kind: str, run_dir: Path | None = None, model: str = "", base_url: str = "",
                   timeout: float = 60.0, retries: int = 5) -> Reflector:
    """``rule`` (offline stand-in), ``chat`` (OpenAI-compatible endpoint: ``model`` and ``base_url``, else the
    environment; each request waits ``timeout`` seconds and is retried ``retries`` times) or ``self`` (the run's SFT
    agent, or the model folder ``model``)."""
    if kind == "rule":
        return RuleReflector()
    if kind == "chat":
        return ChatReflector(model or None, base_url or None, timeout=timeout, max_retries=retries)
    if kind == "self":
        from steca_lib.sft import model_dir as sft_model_dir

        return LocalReflector(model or str(sft_model_dir(run_dir)), label="self (SFT agent)")
    raise ConfigError(f"unknown reflector {kind!r}; expected one of {', '.join(REFLECTORS)}")
