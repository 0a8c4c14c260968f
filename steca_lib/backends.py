"""Open a generation backend by name, so configs and notebooks choose one with a string parameter."""

from __future__ import annotations

from dataclasses import dataclass

from steca_lib.config import check_config
from steca_lib.errors import ConfigError
from steca_lib.generation import GenerationBackend

#: ``cached``: the kit's prefix-caching engine (default); ``hf``: plain batched ``generate`` on full prompts;
#: ``vllm``: vLLM in a child process (GPU, extra); ``openai``: an OpenAI-compatible endpoint (model from env).
BACKENDS = ("cached", "hf", "vllm", "openai")
#: Model dtypes a config may name (``torch`` attribute names).
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class GenerationSettings:
    """How a stage plays episodes with a model (a group the exploration and evaluation configs compose)."""

    max_steps: int = 40
    """Episode step limit, counted from the task start (the paper's configs: 40; exploration does not branch at
    j ≥ max_steps − 1)."""
    max_new_tokens: int = 96
    """Generation budget per agent turn (paper: 512)."""
    batch_size: int = 48
    """Live episodes advanced together by the backend."""
    backend: str = "cached"
    """:data:`BACKENDS`: ``cached`` (the kit's prefix-caching engine), ``hf``, ``vllm`` or ``openai``."""
    dtype: str = "float32"
    """Model dtype for generation (:data:`DTYPES`)."""

    def check_generation(self) -> None:
        check_config(self, counts=("max_steps", "max_new_tokens", "batch_size"),
                     choices={"backend": BACKENDS, "dtype": DTYPES})


def open_backend(kind: str, model_dir: str, dtype: str = "float32", cache_rows: int = 128) -> GenerationBackend:
    """The backend ``kind`` serving the model in ``model_dir`` (ignored by ``openai``)."""
    if kind not in BACKENDS:
        raise ConfigError(f"unknown backend {kind!r}; choose one of {', '.join(BACKENDS)}")
    if kind == "openai":
        from steca_lib.generation import OpenAIChatBackend

        return OpenAIChatBackend()
    if kind == "vllm":
        from steca_lib.generation import VLLMBackend

        return VLLMBackend(model_dir, dtype=dtype if dtype != "float32" else "bfloat16")
    from steca_lib.models import load_model, load_tokenizer

    model, tokenizer = load_model(model_dir, dtype), load_tokenizer(model_dir)
    if kind == "hf":
        from steca_lib.generation import HFBackend

        return HFBackend(model, tokenizer)
    from steca_lib.kv_engine import CachedHFBackend

    return CachedHFBackend(model, tokenizer, cache_rows=cache_rows)
