"""Prompt token ids from pieces between added tokens equal tokenising the whole rendered text."""

import random

import pytest

from steca_lib.models import CHATML_TEMPLATE, LLAMA2_TEMPLATE, load_tokenizer
from steca_lib.prompt_ids import PromptEncoder, splits_cleanly

WORDS = ["go", "to", "fridge 1", "apple", "Nothing happens.", "\n", "  ", "Thought:", "Action:", "é", "<|im_end|>",
         "<s>", "<|im_start|>", "x<|im_end|>y", "\n\n", "Observation: on the countertop 1, you see a knife 1."]


def _histories(rng: random.Random, n: int) -> list[list[dict[str, str]]]:
    """Growing chat histories with shared prefixes, whose text also contains added tokens and odd spacing."""
    out = []
    for _ in range(n):
        history = [{"role": "user", "content": "Interact with a household."}, {"role": "assistant", "content": "OK"}]
        for _ in range(rng.randint(1, 6)):
            for role in ("user", "assistant"):
                history.append({"role": role, "content": " ".join(rng.choices(WORDS, k=rng.randint(1, 12)))})
            out.append(history[:-1])
    return out


def _whole(tok, prompts):
    """The reference: the chat template over each whole history, tokenised whole."""
    texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in prompts]
    return tok(texts, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("template", [CHATML_TEMPLATE, LLAMA2_TEMPLATE, "{# not the kit's #}" + CHATML_TEMPLATE])
def test_pieces_equal_whole_texts(smoke_run, template):
    run, _ = smoke_run
    tok = load_tokenizer(run / "01_sft" / "model")
    tok.chat_template = template
    encode = PromptEncoder(tok, memo_pieces=8)  # a small memo also exercises eviction
    assert splits_cleanly(tok) and encode.memo is not None
    assert encode.per_message == (template in (CHATML_TEMPLATE, LLAMA2_TEMPLATE))  # other templates: rendered whole
    prompts = _histories(random.Random(0), 40)
    whole = _whole(tok, prompts)
    assert encode(prompts) == whole
    assert encode(prompts[:5]) == whole[:5]  # again, now from the memo
    assert len(encode.memo) <= 8 and len(encode.rendered) <= 8


def _metaspace_tokenizer():
    """A tokenizer whose pre-tokenizer adds a space to the first piece only: its pieces are not independent."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    raw.train_from_iterator([" ".join(WORDS)] * 20, trainers.BpeTrainer(
        vocab_size=200, special_tokens=["<unk>", "<|im_end|>", "<|im_start|>"], show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="<|im_end|>",
                                  additional_special_tokens=["<|im_start|>"])
    tok.chat_template = CHATML_TEMPLATE
    return tok


def test_tokenizer_with_dependent_pieces_is_tokenised_whole():
    tok = _metaspace_tokenizer()
    assert not splits_cleanly(tok)
    encode = PromptEncoder(tok)
    prompts = _histories(random.Random(1), 10)
    texts = [encode.render(m) for m in prompts]
    whole = _whole(tok, prompts)
    assert encode(prompts) == whole
    # cutting at added tokens would have changed the ids for this tokenizer
    pieces = [p for p in encode.cut.split(texts[0]) if p]
    joined = [i for p in pieces for i in (tok(p, add_special_tokens=False)["input_ids"])]
    assert joined != whole[0]
