"""Token ids of chat prompts, tokenising each piece of text once.

Agent histories grow by one turn per step and Monte Carlo branches share theirs, so tokenising every rendered
history in full (about 1,100 tokens per prompt on the ``cpu`` profile) re-tokenises the same text over and over.
A fast tokenizer cuts its input at added tokens (``<|im_start|>``, ``<|im_end|>``, ...) and tokenises the pieces
between them independently, so :class:`PromptEncoder` cuts there too and keeps each piece's ids in a bounded memo.
Where a tokenizer's pieces are not independent (added tokens that strip their neighbours' whitespace, a
pre-tokenizer that treats the first piece apart, added tokens matched after normalisation), it tokenises whole
texts, as before. With the kit's own chat templates, which render each message on its own, the rendered text of
each message is kept too, so a new turn renders only itself.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict

from steca_lib.models import TEMPLATES

#: Text pieces whose ids are kept (least recently used ones go first).
MEMO_PIECES = 1 << 16


def splits_cleanly(tokenizer) -> bool:
    """Whether tokenising text equals tokenising its pieces between added tokens one by one and joining them."""
    if not getattr(tokenizer, "is_fast", False):
        return False
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    added = spec.get("added_tokens") or []
    if any(t.get("lstrip") or t.get("rstrip") or t.get("single_word") for t in added):
        return False
    if spec.get("normalizer") is not None and any(t.get("normalized") for t in added):
        return False
    pieces = json.dumps([spec.get("normalizer"), spec.get("pre_tokenizer")])
    return '"prepend_scheme": "first"' not in pieces


class PromptEncoder:
    """Chat histories to token ids (template rendered, generation prompt appended), exactly as tokenising the
    rendered text whole would give, with each piece between added tokens tokenised once."""

    def __init__(self, tokenizer, memo_pieces: int = MEMO_PIECES):
        self.tokenizer = tokenizer
        self.memo: OrderedDict[str, list[int]] | None = OrderedDict() if splits_cleanly(tokenizer) else None
        self.memo_pieces = memo_pieces
        self.per_message = tokenizer.chat_template in TEMPLATES.values()  # renders each message independently
        self.rendered: OrderedDict[tuple[str, str], str] = OrderedDict()
        if self.per_message:  # the assistant prompt, which the template appends after the last message
            probe = [{"role": "user", "content": "x"}]
            self.prompt_suffix = self._template(probe, True)[len(self._template(probe, False)):]
        added = sorted((t.content for t in tokenizer.added_tokens_decoder.values()), key=len, reverse=True)
        self.added = {t: tokenizer.convert_tokens_to_ids(t) for t in added}
        self.cut = re.compile("(" + "|".join(map(re.escape, added)) + ")") if added else None

    def _template(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def render(self, messages: list[dict[str, str]]) -> str:
        """The chat template's text for ``messages`` with the assistant prompt appended."""
        if not self.per_message:
            return self._template(messages, True)
        parts = []
        for m in messages:
            key = (m["role"], m["content"])
            if key not in self.rendered:
                self.rendered[key] = self._template([m], False)
            self.rendered.move_to_end(key)
            parts.append(self.rendered[key])
        while len(self.rendered) > self.memo_pieces:
            self.rendered.popitem(last=False)
        return "".join(parts) + self.prompt_suffix

    def __call__(self, prompts: list[list[dict[str, str]]]) -> list[list[int]]:
        texts = [self.render(m) for m in prompts]
        if self.memo is None or self.cut is None:
            return self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        split = [[p for p in self.cut.split(text) if p] for text in texts]
        unseen = list(dict.fromkeys(p for pieces in split for p in pieces
                                    if p not in self.added and p not in self.memo))
        if unseen:
            self.memo.update(zip(unseen, self.tokenizer(unseen, add_special_tokens=False)["input_ids"]))
        out = []
        for pieces in split:
            ids: list[int] = []
            for p in pieces:
                if p in self.added:
                    ids.append(self.added[p])
                else:
                    ids.extend(self.memo[p])
                    self.memo.move_to_end(p)
            out.append(ids)
        while len(self.memo) > self.memo_pieces:
            self.memo.popitem(last=False)
        return out
