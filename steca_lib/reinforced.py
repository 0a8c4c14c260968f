"""Stage 05: reinforced training on the sets of stage 04 (the paper's §3.3, Eq. 7–10).

The official trainer is DPO with an SFT term and per-sample weights r_i; per pair

    loss_i = r_i · ( −log σ(β·Δ_i) − log π(chosen_i) ),
    Δ_i = (log π(c_i) − log π(r_i)) − (log π_ref(c_i) − log π_ref(r_i)),

averaged over the batch, where log π sums over the agent's tokens of ``chosen`` after the prompt. With the paper's
β = 0 the DPO term is the constant log 2 and training is reward-weighted SFT on ``chosen``. Variants (each loss
is defined once, in :mod:`steca_lib.methods`):

* ``steca``: β = 0, weights from stage 04 (the paper's method);
* ``sft+dpo``: β = 0.1 with the SFT model as frozen reference (the paper's "SFT+DPO" row);
* ``wo-rt``: β = 0 and every weight 1, plain SFT on the collected data (the "w/o reinforced training" row);
* ``ipr``: IPR's loss (DPO β = 0.1 + SFT, weights 1) on its pairs: expert vs explored sub-trajectories ranked by
  same-step MC reward, and full trajectory pairs;
* ``eto``: ETO's loss (DPO β = 0.1, no SFT term, weights 1) on full expert-vs-failure trajectory pairs;
* ``rft``: rejection-sampling fine-tuning, plain SFT on the expert trajectories plus the agent's successful
  explorations (stage 04's ``rft`` set).

``ipr`` and ``eto`` are one iteration of those baselines on this run's exploration; the published methods iterate
(re-explore with the new model, 3 rounds for ETO, up to 6 for IPR).

Built on ``transformers.Trainer`` (a ``compute_loss`` override); reference log-probabilities are computed once
before training. ``sets`` drops any of D_c, D_e, D_s for the paper's Table 6 ablation.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from steca_lib.artifacts import finished_summary, stage_dir, upstream, write_manifest
from steca_lib.calibration import BASELINE_SETS, SETS, load_set
from steca_lib.methods import VARIANTS
from steca_lib.config import RunSettings, check_config, reject
from steca_lib.data import chat_messages, write_jsonl_atomic
from steca_lib.distributed import barrier, is_main
from steca_lib.errors import DegenerateOutput
from steca_lib.schedule import FirstStepTrains, OptimSettings
from steca_lib.sft import device_settings
from steca_lib.sft import model_dir as sft_model_dir
from steca_lib.sft import require_sft_model

STAGE = "05_reinforced"
IGNORE = -100


class NoTrainingData(DegenerateOutput):
    """The selected stage-04 sets are empty (e.g. no deviation in a small run)."""


@dataclass
class ReinforcedConfig(RunSettings, OptimSettings):
    """Stage 05: which variant, which sets, and the optimisation (paper: 1 epoch, lr 3e-6, constant with warm-up
    0.1, global batch 15, length 4096)."""

    PROFILE_DEFAULTS: ClassVar[dict[str, dict]] = {
        "smoke": {"learning_rate": 1e-3, "batch_size": 4, "max_length": 1536},
        "cpu": {"learning_rate": 3e-4, "max_length": 2048},
        "cpu-llm": {"learning_rate": 3e-5, "per_device_batch_size": 1, "max_length": 2048},
        "paper": {"learning_rate": 3e-6, "per_device_batch_size": 1, "max_length": 4096, "bf16": True},
    }

    # OptimSettings at the paper's reinforced-training values (its script): 1 epoch, 3e-6 with a constant schedule
    # after a 10% warm-up, global batch 15; the loss is logged every step
    epochs: float = 1.0
    learning_rate: float = 3e-6
    lr_scheduler: str = "constant_with_warmup"
    warmup_ratio: float = 0.1
    batch_size: int = 15
    logging_steps: int = 1
    save_steps: int = 50
    variant: str = "steca"
    """``steca``, ``sft+dpo``, ``wo-rt``, or the baselines ``rft``, ``ipr`` and ``eto`` (module docstring)."""
    beta: float | None = None
    """DPO strength; None = the variant's (0 or 0.1)."""
    sets: tuple[str, ...] | None = None
    """Which stage-04 sets to train on; None = the variant's (drop one for the Table 6 ablation)."""
    calibration: str = "main"
    """Which stage-04 folder (``04_calibration/<label>``) to train on."""
    init_model: str = ""
    """Starting model (and DPO reference); empty = the run's SFT model."""
    label: str = ""
    """Name of this model's folder under ``05_reinforced/``; empty = the variant (plus dropped sets)."""

    def __post_init__(self):
        self.check_optimisation()
        check_config(self, choices={"variant": VARIANTS})
        if self.beta is not None and not (isinstance(self.beta, (int, float)) and self.beta >= 0):
            raise reject(self, "beta", "None or a number ≥ 0")
        sets = tuple(self.sets) if self.sets is not None else VARIANTS[self.variant].sets
        if set(sets) - set(SETS + BASELINE_SETS) or not sets:
            raise reject(self, "sets", f"a non-empty subset of {', '.join(SETS + BASELINE_SETS)}")
        self.sets = sets

    @property
    def effective_beta(self) -> float:
        return VARIANTS[self.variant].beta if self.beta is None else self.beta

    @property
    def name(self) -> str:
        dropped = [s for s in VARIANTS[self.variant].sets if s not in self.sets]
        data = "" if self.calibration == "main" else f"-{self.calibration}"
        return self.label or self.variant + data + "".join(f"-no-{s}" for s in dropped)


def model_dir(run_dir: Path, name: str = "steca") -> Path:
    return Path(run_dir) / STAGE / name / "model"


def encode(tokenizer, prompt: list[dict], completion: list[dict], max_length: int) -> dict:
    """Token ids of prompt + completion with labels on the completion's agent turns only (prompt turns and
    observations are ``-100``), right-truncated to ``max_length``."""
    full = tokenizer.apply_chat_template(chat_messages(prompt + completion), tokenize=True, return_dict=True,
                                         return_assistant_tokens_mask=True)
    head = tokenizer.apply_chat_template(chat_messages(prompt), tokenize=True, return_dict=True)["input_ids"]
    ids, mask = list(full["input_ids"]), list(full["assistant_masks"])
    if ids[:len(head)] != list(head):
        raise ValueError("the chat template does not render the prompt as a prefix of prompt + completion")
    labels = [t if m and i >= len(head) else IGNORE for i, (t, m) in enumerate(zip(ids, mask))]
    return {"input_ids": ids[:max_length], "labels": labels[:max_length]}


def sequence_logprob(model, input_ids, attention_mask, labels):
    """Σ log π(token) over labelled tokens, per sequence (the official ``average_log_prob=False``)."""
    import torch

    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    targets = labels[:, 1:]
    mask = targets != IGNORE
    logp = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (logp * mask).sum(-1)


def pair_loss(weight, logp_chosen, beta: float = 0.0, logp_rejected=None, ref_chosen=None, ref_rejected=None,
              sft_weight: float = 1.0):
    """The official per-batch loss: mean_i w_i · (−log σ(β·Δ_i) − s·log π(c_i)), s = ``sft_weight`` (1; ETO: 0);
    with β = 0 the first term is log 2."""
    import torch
    import torch.nn.functional as F

    if beta > 0:
        delta = (logp_chosen - logp_rejected) - (ref_chosen - ref_rejected)
        pref = -F.logsigmoid(beta * delta)
    else:
        pref = torch.full_like(logp_chosen, math.log(2.0))
    return (weight * (pref - sft_weight * logp_chosen)).mean()


def pad_batch(rows: list[dict], pad_id: int, sides: tuple[str, ...]) -> dict:
    """Right-pad each side's ids (``pad_id``) and labels (-100); carry weights and reference log-probs."""
    import torch

    batch = {"weight": torch.tensor([r["weight"] for r in rows], dtype=torch.float32)}
    for side in sides:
        n = max(len(r[f"{side}_input_ids"]) for r in rows)
        ids = [r[f"{side}_input_ids"] + [pad_id] * (n - len(r[f"{side}_input_ids"])) for r in rows]
        labels = [r[f"{side}_labels"] + [IGNORE] * (n - len(r[f"{side}_labels"])) for r in rows]
        batch[f"{side}_input_ids"] = torch.tensor(ids)
        batch[f"{side}_labels"] = torch.tensor(labels)
        batch[f"{side}_attention_mask"] = torch.tensor([[1] * len(r[f"{side}_input_ids"]) + [0] * (n - len(
            r[f"{side}_input_ids"])) for r in rows])
        if f"ref_{side}" in rows[0]:
            batch[f"ref_{side}"] = torch.tensor([r[f"ref_{side}"] for r in rows], dtype=torch.float32)
    return batch


def make_trainer_class():
    """``transformers.Trainer`` with the weighted pair loss (imported lazily: transformers is slow to import)."""
    from transformers import Trainer

    class WeightedPairTrainer(FirstStepTrains, Trainer):
        """Trainer whose loss is :func:`pair_loss` on batches from :func:`pad_batch`, with a warm-up whose first step
        trains (:mod:`steca_lib.schedule`)."""

        def __init__(self, *args, beta: float = 0.0, sft_weight: float = 1.0, **kwargs):
            super().__init__(*args, **kwargs)
            self.beta, self.sft_weight = beta, sft_weight
            self.loss_is_scaled_for_ga = False  # a per-micro-batch mean: the Trainer divides by accumulation

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            def side(name):
                return sequence_logprob(model, inputs[f"{name}_input_ids"], inputs[f"{name}_attention_mask"],
                                        inputs[f"{name}_labels"])

            chosen = side("chosen")
            if self.beta > 0:
                loss = pair_loss(inputs["weight"], chosen, self.beta, side("rejected"), inputs["ref_chosen"],
                                 inputs["ref_rejected"], self.sft_weight)
            else:
                loss = pair_loss(inputs["weight"], chosen, sft_weight=self.sft_weight)
            return (loss, {"logp_chosen": chosen}) if return_outputs else loss

    return WeightedPairTrainer


def training_rows(cfg: ReinforcedConfig, tokenizer) -> list[dict]:
    """Encoded pairs of the selected sets: chosen (and rejected when β > 0) with the sample weight."""
    rows = []
    for name in cfg.sets:
        for s in load_set(cfg.path, name, cfg.calibration):
            row = {"weight": float(s["reward"]) if VARIANTS[cfg.variant].weighted else 1.0, "set": name}
            for side in ("chosen", "rejected") if cfg.effective_beta > 0 else ("chosen",):
                enc = encode(tokenizer, s["prompt"], s[side], cfg.max_length)
                row[f"{side}_input_ids"], row[f"{side}_labels"] = enc["input_ids"], enc["labels"]
            rows.append(row)
    return rows


def add_reference_logprobs(rows: list[dict], model, pad_id: int, batch_size: int = 4) -> None:
    """log π_ref of both sides for every row, with the frozen starting model (needed when β > 0)."""
    import torch
    from tqdm.auto import tqdm

    model.eval()
    with torch.no_grad():
        for i in tqdm(range(0, len(rows), batch_size), desc="reference log-probs", leave=False):
            chunk = rows[i:i + batch_size]
            batch = pad_batch(chunk, pad_id, ("chosen", "rejected"))
            for side in ("chosen", "rejected"):
                lp = sequence_logprob(model, batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"],
                                      batch[f"{side}_labels"])
                for r, v in zip(chunk, lp.tolist()):
                    r[f"ref_{side}"] = v


def run_reinforced_stage(cfg: ReinforcedConfig) -> dict:
    """Train from the SFT model on stage 04's sets; writes ``05_reinforced/<name>/model`` and its train log."""
    from transformers import TrainingArguments

    from steca_lib.models import load_model, load_tokenizer

    inputs = upstream(cfg.path, f"04_calibration/{cfg.calibration}")
    init = require_sft_model(cfg.init_model or str(sft_model_dir(cfg.path)), "init_model")
    out = stage_dir(cfg.path, f"{STAGE}/{cfg.name}")
    done = finished_summary(out, cfg, inputs=inputs)
    if done is not None:
        return done
    started = time.time()
    tokenizer = load_tokenizer(init)
    rows = training_rows(cfg, tokenizer)
    if not rows:
        raise NoTrainingData(f"no training samples in sets {cfg.sets}; see the stage-04 funnel")
    model = load_model(init)
    beta = cfg.effective_beta
    sides = ("chosen", "rejected") if beta > 0 else ("chosen",)
    if beta > 0:
        add_reference_logprobs(rows, model, tokenizer.pad_token_id)
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio, weight_decay=0.0,
        **device_settings(cfg.bf16, cfg.batch_size, cfg.per_device_batch_size),
        logging_steps=cfg.logging_steps, save_strategy="steps",
        save_steps=cfg.save_steps, save_total_limit=1, report_to="none", seed=cfg.seed, data_seed=cfg.seed,
        dataloader_num_workers=0, remove_unused_columns=False, ddp_find_unused_parameters=False)
    model.train()
    trainer = make_trainer_class()(model=model, args=args, train_dataset=rows, beta=beta,
                                   sft_weight=VARIANTS[cfg.variant].sft,
                                   data_collator=lambda b: pad_batch(b, tokenizer.pad_token_id, sides))
    trainer.train(resume_from_checkpoint=True if any((out / "checkpoints").glob("checkpoint-*")) else None)
    history = trainer.state.log_history
    barrier()  # under accelerate launch every process trained the same model; rank 0 writes it
    if is_main():
        trainer.model.save_pretrained(out / "model")
        tokenizer.save_pretrained(out / "model")
        write_jsonl_atomic(history, out / "train_log.jsonl")
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    losses = [h["loss"] for h in history if "loss" in h]
    counts = {name: sum(r["set"] == name for r in rows) for name in cfg.sets}
    summary = {"name": cfg.name, "variant": cfg.variant, "beta": beta, "sft_weight": VARIANTS[cfg.variant].sft,
               "samples": len(rows), "by_set": counts,
               "weights_mean": sum(r["weight"] for r in rows) / len(rows),
               "tokens_trained": sum(sum(t != IGNORE for t in r["chosen_labels"]) for r in rows),
               "steps": history[-1].get("step") if history else None,
               "train_runtime_s": history[-1].get("train_runtime") if history else None,
               "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
               "model_dir": str(out / "model")}
    if is_main():
        write_manifest(out, f"{STAGE}/{cfg.name}", cfg, summary, started, inputs)
    return summary


if __name__ == "__main__":
    from steca_lib.config import stage_main

    raise SystemExit(stage_main(ReinforcedConfig, run_reinforced_stage,
                                "Stage 05: reinforced training on stage 04's sets (e.g. --set variant=sft+dpo)."))
