"""Generation backends behind one interface: a batch of chat histories in, one assistant reply each out.

* :class:`HFBackend` (default): Hugging Face batched ``generate`` with left padding and KV cache, greedy or
  sampled, seeded per call;
* :class:`VLLMBackend` (extra ``vllm``, GPU): vLLM in a separate process, so its GPU memory is released when the
  backend closes, also inside a notebook kernel;
* :class:`OpenAIChatBackend` (extra ``openai``): any OpenAI-compatible chat endpoint (GPT-4o, GPT-3.5, a vLLM
  server), for prompting baselines; base URL, model and key come from the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from steca_lib.prompt_ids import PromptEncoder

Messages = list[dict[str, str]]

#: The paper's stop strings (its FastChat worker stops there); the reply is cut before them.
STOP_STRINGS = ("\nObservation:", "\nTask:", "\n---")


@dataclass(frozen=True)
class Sampling:
    """Decoding settings. ``temperature == 0`` means greedy (exploration, evaluation); the paper samples Monte
    Carlo rollouts at temperature 1 with top_p 1."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    stop: tuple[str, ...] = STOP_STRINGS
    seed: int = 0


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """The text before the first stop string."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut].strip()


def per_prompt(sampling: Sampling | list[Sampling], n: int) -> list[Sampling]:
    """One decoding setting per prompt: a single ``Sampling`` applies to all ``n`` prompts."""
    if isinstance(sampling, Sampling):
        return [sampling] * n
    if len(sampling) != n:
        raise ValueError(f"{len(sampling)} sampling settings for {n} prompts")
    return list(sampling)


def grouped(prompts: list, sampling: Sampling | list[Sampling]) -> dict[Sampling, list[int]]:
    """Prompt indices by decoding setting, for backends that decode one setting per call."""
    groups: dict[Sampling, list[int]] = {}
    for i, s in enumerate(per_prompt(sampling, len(prompts))):
        groups.setdefault(s, []).append(i)
    return groups


class GenerationBackend(Protocol):
    """What the episode runner needs from a model."""

    def generate(self, prompts: list[Messages], sampling: Sampling | list[Sampling]) -> list[str | None]:
        """One reply per prompt (one ``Sampling`` for all, or one each); None where the prompt no longer fits
        the model's context."""


@dataclass
class Request:
    """One prompt for :func:`serving`: the chat history, its decoding setting, and the caller's handle."""

    messages: Messages
    sampling: Sampling
    tag: Any = None


Take = Callable[[int], list[Request]]
OnReply = Callable[[Request, "str | None"], None]


def serving(backend: GenerationBackend) -> Callable[[Take, OnReply, int], None]:
    """The backend's ``serve(take, on_reply, slots)``: ``take(n)`` hands over up to ``n`` requests that are ready,
    ``on_reply`` gets each reply and may ready new requests. Backends with their own (token-level) ``serve`` use
    it; the others answer one batch per ``generate`` call, i.e. one agent turn of every live episode."""
    if hasattr(backend, "serve"):
        return backend.serve

    def by_turns(take: Take, on_reply: OnReply, slots: int) -> None:
        while batch := take(slots):
            for req, reply in zip(batch, backend.generate([r.messages for r in batch], [r.sampling for r in batch])):
                on_reply(req, reply)

    return by_turns


def require(module: str, install: str):
    """Import an optional dependency, or fail saying how to install it."""
    import importlib

    from steca_lib.errors import MissingExtra

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(f"{module} is not installed; {install}") from e


class HFBackend:
    """Batched generation with a transformers model (left padding, KV cache)."""

    def __init__(self, model, tokenizer, max_context: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.max_context = max_context or getattr(model.config, "max_position_embeddings", None)
        self.generated_tokens = 0
        self.encode = PromptEncoder(tokenizer)
        """Token ids of chat histories with the assistant prompt appended (each text piece tokenised once)."""

    def fits(self, ids: list[int], sampling: Sampling) -> bool:
        """Whether a prompt of these token ids and its longest reply fit the model's context."""
        return self.max_context is None or len(ids) + sampling.max_new_tokens <= self.max_context

    def generate(self, prompts: list[Messages], sampling: Sampling | list[Sampling]) -> list[str | None]:
        replies: list[str | None] = [None] * len(prompts)
        for setting, idx in grouped(prompts, sampling).items():
            for i, reply in zip(idx, self._generate_one_setting([prompts[i] for i in idx], setting)):
                replies[i] = reply
        return replies

    def _generate_one_setting(self, prompts: list[Messages], sampling: Sampling) -> list[str | None]:
        import torch

        ids = self.encode(prompts)
        fits = [self.fits(x, sampling) for x in ids]
        batch = [x for x, ok in zip(ids, fits) if ok]
        replies: list[str | None] = [None] * len(prompts)
        if not batch:
            return replies
        width = max(len(x) for x in batch)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in batch], device=self.model.device)
        attention = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch], device=self.model.device)
        kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=pad,
                      eos_token_id=self.tokenizer.eos_token_id)
        if sampling.stop:  # stop where the paper's worker stops instead of running to max_new_tokens
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        torch.manual_seed(sampling.seed)
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
        new = out[:, width:]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        self.generated_tokens += int((new != pad).sum())
        it = iter(texts)
        for i, ok in enumerate(fits):
            if ok:
                replies[i] = cut_at_stop(next(it), sampling.stop)
        return replies


@dataclass
class OpenAIChatBackend:
    """An OpenAI-compatible chat endpoint. ``OPENAI_BASE_URL``, ``OPENAI_API_KEY`` and ``STECA_OPENAI_MODEL``
    (or the arguments) say where and what; keys are never written to artifacts."""

    model: str = field(default_factory=lambda: os.environ.get("STECA_OPENAI_MODEL", "gpt-4o"))
    base_url: str | None = field(default_factory=lambda: os.environ.get("OPENAI_BASE_URL"))
    timeout: float = 60.0
    max_retries: int = 5

    def __post_init__(self):
        openai = require("openai", "install the extra: pip install -e '.[openai]'")
        self._client = openai.OpenAI(base_url=self.base_url, api_key=os.environ.get("OPENAI_API_KEY", "none"),
                                     timeout=self.timeout, max_retries=self.max_retries)

    def generate(self, prompts: list[Messages], sampling: Sampling | list[Sampling]) -> list[str | None]:
        replies = []
        for messages, sampling in zip(prompts, per_prompt(sampling, len(prompts))):
            resp = self._client.chat.completions.create(
                model=self.model, messages=messages, temperature=sampling.temperature, top_p=sampling.top_p,
                max_tokens=sampling.max_new_tokens, stop=list(sampling.stop)[:4], seed=sampling.seed)
            replies.append(cut_at_stop(resp.choices[0].message.content or "", sampling.stop))
        return replies


class VLLMBackend:
    """vLLM in a child process (``spawn``), driven through a pipe; ``close()`` ends it and frees the GPU."""

    def __init__(self, model_path: str, dtype: str = "bfloat16", gpu_memory_utilization: float = 0.85,
                 max_model_len: int = 4096):
        import multiprocessing as mp

        require("vllm", "on a GPU machine, pip install vllm (a build matching your CUDA and torch)")
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_vllm_worker, args=(child, model_path, dtype, gpu_memory_utilization,
                                                            max_model_len), daemon=True)
        self._proc.start()
        status = self._conn.recv()
        if status != "ready":
            raise RuntimeError(f"vLLM worker failed to start: {status}")

    def generate(self, prompts: list[Messages], sampling: Sampling | list[Sampling]) -> list[str | None]:
        settings = per_prompt(sampling, len(prompts))
        self._conn.send((prompts, settings))
        result = self._conn.recv()
        if isinstance(result, Exception):
            raise result
        return [cut_at_stop(r, s.stop) for r, s in zip(result, settings)]

    def close(self) -> None:
        if self._proc.is_alive():
            self._conn.send(None)
            self._proc.join(timeout=60)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _vllm_worker(conn, model_path, dtype, gpu_memory_utilization, max_model_len):  # pragma: no cover - GPU only
    try:
        from vllm import LLM, SamplingParams

        llm = LLM(model=model_path, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
                  max_model_len=max_model_len, enable_prefix_caching=True)
        conn.send("ready")
    except Exception as e:  # report start-up failures to the parent
        conn.send(repr(e))
        return
    while (msg := conn.recv()) is not None:
        prompts, settings = msg
        try:
            params = [SamplingParams(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_new_tokens,
                                     stop=list(s.stop), seed=s.seed) for s in settings]
            outs = llm.chat(prompts, params, use_tqdm=False)
            conn.send([o.outputs[0].text for o in outs])
        except Exception as e:
            conn.send(e)
