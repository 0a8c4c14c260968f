"""Stage 05: the weighted pair loss against hand-computed values, β = 0 as weighted SFT, the label mask, and every
variant end to end on the smoke profile."""

import math
from types import SimpleNamespace

import pytest
import torch

from steca_lib.calibration import load_set
from steca_lib.config import config_from_params
from steca_lib.data import read_jsonl
from steca_lib.models import load_tokenizer
from steca_lib.reinforced import (IGNORE, VARIANTS, ReinforcedConfig, encode, make_trainer_class, pad_batch, pair_loss,
                                  run_reinforced_stage, sequence_logprob)


class FixedLogits(torch.nn.Module):
    """A 'model' whose logits are a parameter, so log-probs and gradients are known in closed form."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.as_tensor(logits, dtype=torch.float32))

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.logits[: input_ids.shape[0], : input_ids.shape[1]])


def test_sequence_logprob_sums_labelled_tokens():
    # vocabulary 3; uniform logits at position 0, logits (0, ln 2, 0) at position 1
    logits = [[[0.0, 0.0, 0.0], [0.0, math.log(2), 0.0], [0.0, 0.0, 0.0]]]
    model = FixedLogits(logits)
    ids = torch.tensor([[0, 1, 2]])
    labels = torch.tensor([[IGNORE, 1, 2]])  # token 1 scored at position 0 (1/3), token 2 at position 1 (1/4)
    lp = sequence_logprob(model, ids, torch.ones_like(ids), labels)
    assert lp.item() == pytest.approx(math.log(1 / 3) + math.log(1 / 4))
    masked = sequence_logprob(model, ids, torch.ones_like(ids), torch.tensor([[IGNORE, IGNORE, 2]]))
    assert masked.item() == pytest.approx(math.log(1 / 4))


def test_weighted_loss_equals_hand_computed_values():
    w = torch.tensor([2.0, 0.5])
    lp_c = torch.tensor([-3.0, -1.0])
    # β = 0: mean_i w_i (log 2 − log π(c_i))
    expected = (2.0 * (math.log(2) + 3.0) + 0.5 * (math.log(2) + 1.0)) / 2
    assert pair_loss(w, lp_c).item() == pytest.approx(expected)
    # β = 0.5 with rejected and reference log-probs
    lp_r, ref_c, ref_r = torch.tensor([-2.0, -4.0]), torch.tensor([-3.5, -1.0]), torch.tensor([-2.0, -3.0])
    deltas = [(-3.0 + 2.0) - (-3.5 + 2.0), (-1.0 + 4.0) - (-1.0 + 3.0)]  # 0.5, 1.0
    nls = [-math.log(1 / (1 + math.exp(-0.5 * d))) for d in deltas]
    expected = (2.0 * (nls[0] + 3.0) + 0.5 * (nls[1] + 1.0)) / 2
    assert pair_loss(w, lp_c, 0.5, lp_r, ref_c, ref_r).item() == pytest.approx(expected)
    # ETO: pure DPO, no SFT term
    expected = (2.0 * nls[0] + 0.5 * nls[1]) / 2
    assert pair_loss(w, lp_c, 0.5, lp_r, ref_c, ref_r, sft_weight=0.0).item() == pytest.approx(expected)


def test_beta_zero_gives_the_weighted_sft_gradient(tmp_path):
    """Through the trainer's compute_loss: β = 0 has the gradient of mean_i w_i·(−log π(c_i)), and the rejected
    side gets none; β > 0 changes it."""
    from transformers import TrainingArguments

    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    rows = [{"weight": 1.5, "chosen_input_ids": [1, 2, 3, 4], "chosen_labels": [IGNORE, 2, 3, IGNORE],
             "rejected_input_ids": [1, 4, 4], "rejected_labels": [IGNORE, 4, 4], "ref_chosen": -2.0,
             "ref_rejected": -3.0},
            {"weight": 0.5, "chosen_input_ids": [1, 3], "chosen_labels": [IGNORE, 3],
             "rejected_input_ids": [1, 2, 2, 2], "rejected_labels": [IGNORE, 2, 2, 2], "ref_chosen": -1.0,
             "ref_rejected": -1.0}]
    batch = pad_batch(rows, 0, ("chosen", "rejected"))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")

    def grad(beta):
        model = FixedLogits(logits.clone())
        trainer = make_trainer_class()(model=model, args=args, beta=beta)
        trainer.compute_loss(model, dict(batch)).backward()
        return model.logits.grad.clone()

    model = FixedLogits(logits.clone())
    nll = -sequence_logprob(model, batch["chosen_input_ids"], batch["chosen_attention_mask"], batch["chosen_labels"])
    (batch["weight"] * nll).mean().backward()
    assert torch.allclose(grad(0.0), model.logits.grad, atol=1e-6)
    assert not torch.allclose(grad(0.5), model.logits.grad, atol=1e-4)


def test_labels_cover_only_the_chosen_agent_turns(trained_run):
    tok = load_tokenizer(trained_run / "01_sft" / "model")
    sample = load_set(trained_run, "calibrated")[0]
    enc = encode(tok, sample["prompt"], sample["chosen"], 100_000)
    labelled = tok.decode([t for t in enc["labels"] if t != IGNORE])
    agent_turns = [t["value"] for t in sample["chosen"] if t["from"] == "gpt"]
    assert labelled == "".join(f"{v}<|im_end|>" for v in agent_turns)
    assert "Observation" not in labelled


@pytest.mark.parametrize("variant", ["steca", "sft+dpo", "wo-rt", "ipr", "eto", "rft"])
def test_every_variant_trains_end_to_end(trained_run, variant):
    cfg = config_from_params(ReinforcedConfig, "smoke", run_dir=str(trained_run), variant=variant)
    summary = run_reinforced_stage(cfg)
    assert summary["samples"] == sum(len(load_set(trained_run, s)) for s in cfg.sets) and summary["steps"] >= 1
    assert set(summary["by_set"]) == set(VARIANTS[variant].sets)
    assert summary["beta"] == (0.0 if variant in ("steca", "wo-rt", "rft") else 0.1)
    assert (summary["weights_mean"] == 1.0) == (variant in ("wo-rt", "ipr", "eto", "rft"))
    assert (trained_run / "05_reinforced" / variant / "model" / "config.json").exists()
    assert run_reinforced_stage(cfg) == summary  # finished: skipped
    # the first optimiser step trains: the model moved away from the SFT model it started from
    rates = [h["learning_rate"] for h in read_jsonl(trained_run / "05_reinforced" / variant / "train_log.jsonl")
             if "learning_rate" in h]
    assert rates[0] > 0, rates
    assert_weights_moved(trained_run / "01_sft" / "model", trained_run / "05_reinforced" / variant / "model")


def assert_weights_moved(before_dir, after_dir):
    from safetensors.torch import load_file

    before, after = load_file(str(before_dir / "model.safetensors")), load_file(str(after_dir / "model.safetensors"))
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before), f"{after_dir} equals its starting model"


def test_warmup_starts_above_zero_and_reaches_the_peak():
    from steca_lib.schedule import lr_factor

    assert lr_factor(0, "constant_with_warmup", warmup=1, total=1) == 0.5  # transformers' own schedule gives 0
    assert [lr_factor(k, "constant_with_warmup", 3, 10) for k in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    cosine = [lr_factor(k, "cosine", 2, 12) for k in range(12)]
    assert cosine[:3] == [1 / 3, 2 / 3, 1.0] and all(a >= b for a, b in zip(cosine[2:], cosine[3:]))
    assert cosine[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 9 / 10)))
    assert lr_factor(5, "linear", 0, 10) == 0.5 and lr_factor(0, "constant", 5, 10) == 1.0


def test_ablation_drops_a_set(trained_run):
    cfg = config_from_params(ReinforcedConfig, "smoke", run_dir=str(trained_run),
                             sets=("calibrated", "expert_sub", "traj_pairs"))
    assert cfg.name == "steca-no-explored"
    with pytest.raises(ValueError, match="subset"):
        config_from_params(ReinforcedConfig, "smoke", sets=("calibrated", "bogus"))


def test_iterated_baseline_explores_again_with_its_newest_model(trained_run):
    from scripted import ScriptedBackend

    from steca_lib.artifacts import load_manifest, model_inputs
    from steca_lib.iteration import iterate

    explorer = ScriptedBackend(trained_run)
    rounds = iterate("smoke", 0, str(trained_run), "eto", 2, explorer=explorer)
    first, second = rounds
    round2 = trained_run / "iterations" / "eto" / "round-2"
    assert first["model_dir"] == str(trained_run / "05_reinforced" / "eto" / "model")
    assert second["model_dir"] == str(round2 / "05_reinforced" / "eto" / "model") and second["samples"] >= 1
    # round 2 explored with round 1's model and trained from it (also its DPO reference)
    inputs = load_manifest(round2 / "02_rollouts")["inputs"]
    assert inputs["model"] == model_inputs(first["model_dir"])["model"] and "00_environment" in inputs
    assert load_manifest(round2 / "05_reinforced" / "eto")["config"]["init_model"] == first["model_dir"]
    assert (round2 / "00_environment").resolve() == (trained_run / "00_environment").resolve()
    calls = explorer.calls
    assert iterate("smoke", 0, str(trained_run), "eto", 2, explorer=explorer) == rounds and explorer.calls == calls
