"""Token-level continuous batching with prefix caching for Hugging Face models: the rollout engine's backend.

Agent episodes grow by a few dozen tokens per turn, and Monte Carlo rollouts from one state share everything but
their last turns, so re-encoding every history each turn (what ``generate`` on full prompts does) wastes most of
the compute. :class:`CachedHFBackend` keeps the keys/values of recent prompts (a small LRU pool of rows) and, for
each new prompt, starts from the cached row with the longest common token prefix: only the new tokens are encoded.

:meth:`CachedHFBackend.serve` decodes a fixed set of slots one token per step. A reply that ends (stop string,
EOS or ``max_new_tokens``) goes to the caller at once, which steps the environment and hands back the episode's
next prompt; it joins a free slot, and its new prompt tokens ride along in the next decode pass (continuous
batching at the token level with the prefill packed into the decode pass, so the batch neither waits for its
longest reply nor stops for separate prefill passes). All live slots end at one shared column of a
:class:`SlotCache`, so a decode step writes one column for every slot and attends only over the columns the
longest live row spans. Sampling is Gumbel-max with noise from each request's own seeded generator, so a row's
sample does not depend on its batch neighbours. Greedy outputs equal ``HFBackend``'s up to floating-point ties (tested).
Why the kit packs rows itself rather than use transformers' ``generate_batch``, and what each design choice measured,
is in ``docs/performance.md``.
"""

from __future__ import annotations

from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import AttentionInterface, Cache
from transformers.generation.logits_process import TopPLogitsWarper
from transformers.generation.stopping_criteria import StopStringCriteria

from steca_lib.generation import HFBackend, Messages, OnReply, Request, Sampling, Take, cut_at_stop, per_prompt

#: Decoding steps of Gumbel noise drawn at once per sampled row.
NOISE_BLOCK = 16
#: New requests join once this fraction of the slots is free (or when nothing is decoding).
JOIN_FRACTION = 1 / 8


def gumbel_block(generator, vocab: int, device):
    """``[NOISE_BLOCK, vocab]`` standard Gumbel noise from a row's generator (zeros for a greedy row)."""
    if generator is None:
        return torch.zeros(NOISE_BLOCK, vocab, device=device)
    u = torch.rand(NOISE_BLOCK, vocab, generator=generator, device=device)
    return -torch.log(-torch.log(u.clamp_min(1e-20)))


@dataclass
class _Row:
    """Token ids and their keys/values (per layer, ``[kv_heads, len, head_dim]``), with an LRU stamp."""

    ids: np.ndarray
    kv: list[tuple]
    used: int


#: Decode attention runs per lane (a contiguous range of slots) over the columns of the lane's longest row, and
#: joining prompts go to the lane of their length rank, so short rows do not attend over long rows' columns. More
#: lanes fit lengths better but call attention once more per layer each.
LANES = 4


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the longest common prefix of two id arrays."""
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


@dataclass
class _Pass:
    """One forward pass of the engine: the joining rows' prompt tokens, packed first, then one token for each of
    the slots ``:n`` at column ``clock``. ``joins`` holds per joining row its slot, first column, token count and
    causal mask; ``slot_idx``/``col_idx`` say where each packed prompt token's keys and values go."""

    n: int
    clock: int
    lo: int
    lanes: list[tuple[int, int, int]]
    joins: list[tuple[int, int, int, torch.Tensor]]
    slot_idx: torch.Tensor
    col_idx: torch.Tensor

    @property
    def packed(self) -> int:
        return len(self.slot_idx)


def slot_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """Attention of one engine pass (``query`` is ``[1, heads, packed + n, dim]``, ``key``/``value`` the whole
    slot buffers): the decode tokens attend per lane (:func:`lane_attention`) and each joining row's prompt tokens
    attend causally over that row's own columns (views of the buffers, no copies). Query heads attend over the
    grouped key/value heads as they are, not over copies repeated per query head."""
    p: _Pass = kwargs["engine_pass"]
    heads, dim, E = query.shape[1], query.shape[3], p.packed
    window = slice(p.lo, p.clock + 1)
    out, _ = lane_attention(query[0, :, E:].transpose(0, 1)[:, :, None], key[:p.n, :, window],
                            value[:p.n, :, window], attention_mask, scaling, p.lanes)
    parts, at = [], 0
    for s, first, e, causal in p.joins:
        parts.append(torch.nn.functional.scaled_dot_product_attention(
            query[:, :, at:at + e], key[s:s + 1, :, first:p.clock], value[s:s + 1, :, first:p.clock],
            attn_mask=causal, scale=scaling, enable_gqa=True).transpose(1, 2))
        at += e
    return torch.cat(parts + [out.reshape(1, p.n, heads, dim)], 1), None


def lane_attention(query, key, value, mask, scaling, lanes: list[tuple[int, int, int]]):
    """One-token attention per lane ``(first row, end row, first column)``: each lane attends over its own columns
    (views, no copies). Query heads are grouped onto their key/value head, as transformers does for one token.
    Written as matmul, softmax, matmul: CPU SDPA's kernel read the keys and values more slowly at these shapes
    (measured in ``docs/performance.md``)."""
    rows, heads, _, dim = query.shape
    groups = key.shape[1]
    q = query.reshape(rows, groups, heads // groups, dim)
    out = []
    for a, b, lo in lanes:
        scores = torch.matmul(q[a:b], key[a:b, :, lo:].transpose(-1, -2)).mul_(scaling).add_(mask[a:b, :, :, lo:])
        out.append(torch.matmul(scores.softmax(-1), value[a:b, :, lo:]))
    return torch.cat(out).reshape(rows, heads, 1, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register("steca_slots", slot_attention)


@contextmanager
def slot_attention_in(model):
    """Run ``model``'s SDPA attention as :func:`slot_attention` inside the block (other implementations stay)."""
    config = model.config
    before = config._attn_implementation
    if before == "sdpa":
        config._attn_implementation = "steca_slots"
    try:
        yield
    finally:
        config._attn_implementation = before


class SlotCache(Cache):
    """Keys/values of every slot, one ``[slots, kv_heads, width, head_dim]`` buffer per layer. A pass writes its
    packed prompt tokens at their rows' columns and its decode tokens at column ``clock`` of the slots ``:n``, and
    hands the whole buffers to :func:`slot_attention`, which reads each row's own columns."""

    def __init__(self, keys: list, values: list, engine_pass: _Pass):
        super().__init__(layers=[])
        self.keys, self.values, self.p = keys, values, engine_pass

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        p, E = self.p, self.p.packed
        for buf, new in ((self.keys[layer_idx], key_states[0]), (self.values[layer_idx], value_states[0])):
            buf[:p.n, :, p.clock] = new[:, E:].transpose(0, 1)
            if E:
                buf[p.slot_idx, :, p.col_idx] = new[:, :E].transpose(0, 1)
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.p.clock


@dataclass
class _Slot:
    """What one occupied slot decodes: its request, its prompt's token ids, the cache row its prefix came from, its
    sampler (a seeded generator, and a top-p warper when ``top_p < 1``; None for a greedy row), its token budget
    and the tokens generated so far."""

    req: Request
    ids: np.ndarray
    source: _Row | None
    generator: torch.Generator | None
    top_p: TopPLogitsWarper | None
    budget: int
    generated: list[int] = field(default_factory=list)


class _Slots:
    """The decoding state of one :meth:`CachedHFBackend.serve` call: key/value buffers of ``cap`` slots, a mask of
    the columns each slot holds, the per-slot tensors the batched pass reads (:data:`_Slots.TENSORS`) and each
    occupied slot's :class:`_Slot`. Decode steps run over the first ``n`` slots (a view, no copy); draining moves
    live slots down so that ``n`` follows them. Every live slot's data ends at column ``clock``; ``length`` is how
    many columns before it a slot holds (contiguous: its cached prefix, its prompt, then the tokens it has fed)."""

    #: Per-slot tensors, one row per slot: the column mask, the token fed next, its position, the columns held,
    #: the sampling temperature, whether the row samples by Gumbel-max, its noise block and how much of it is
    #: drawn, and the window of its last tokens that stop strings are matched against.
    TENSORS = ("mask", "pending", "pos", "length", "temperature", "gumbel", "noise", "drawn", "window")

    def __init__(self, backend: CachedHFBackend, cap: int, width: int):
        cfg = backend.model.config
        self.backend, self.dev = backend, backend.model.device
        self.heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.dtype = backend.model.dtype
        self.vocab = backend.model.get_output_embeddings().weight.shape[0]
        self.pad = backend.tokenizer.pad_token_id
        self.cap, self.n, self.width, self.clock, self.reach = cap, 0, width, 0, 0
        shape = (cap, self.heads, width, self.head_dim)
        self.keys = [torch.zeros(shape, dtype=self.dtype, device=self.dev) for _ in range(cfg.num_hidden_layers)]
        self.values = [torch.zeros(shape, dtype=self.dtype, device=self.dev) for _ in range(cfg.num_hidden_layers)]
        self.slots: list[_Slot | None] = [None] * cap
        self.mask = torch.zeros(cap, width, dtype=torch.bool, device=self.dev)
        self.pending = torch.zeros(cap, dtype=torch.long, device=self.dev)
        self.pos = torch.zeros(cap, dtype=torch.long, device=self.dev)
        self.length = torch.zeros(cap, dtype=torch.long, device=self.dev)
        self.temperature = torch.ones(cap, 1, device=self.dev)
        self.gumbel = torch.zeros(cap, dtype=torch.bool, device=self.dev)
        self.noise = torch.zeros(cap, NOISE_BLOCK, self.vocab, device=self.dev)
        self.drawn = torch.zeros(cap, dtype=torch.long, device=self.dev)
        self.window = torch.full((cap, 1), self.pad, dtype=torch.long, device=self.dev)
        self.finished: list[tuple[Request, str]] = []
        self.joining: list[tuple[int, np.ndarray, int]] = []  # slot, prompt tokens for the next pass, position
        lanes = min(LANES, cap)
        self.lane_bounds = [(cap * k // lanes, cap * (k + 1) // lanes) for k in range(lanes)]

    # -- layout -------------------------------------------------------------------------------------------------
    def live(self) -> list[int]:
        return [s for s in range(self.n) if self.slots[s] is not None]

    def place(self, lengths: list[int]) -> list[int]:
        """Free slots for prompts of these token lengths, lanes sorted by length: a prompt goes to the lane of its
        rank among the live rows' lengths (the longest to lane 0), or the nearest lane with a free slot."""
        length = sorted((int(x) for x, slot in zip(self.length.tolist(), self.slots) if slot is not None),
                        reverse=True)
        free = [[s for s in range(a, b) if self.slots[s] is None] for a, b in self.lane_bounds]
        lanes = len(free)
        out = []
        for n in lengths:
            rank = sum(x > n for x in length) / max(len(length), 1)  # share of live rows longer than it
            want = min(int(rank * lanes), lanes - 1)
            k = min((k for k in range(lanes) if free[k]), key=lambda k: abs(k - want))
            out.append(free[k].pop(0))
        return out

    def pack(self) -> None:
        """Move the live slots into the lowest free ones and shrink ``n`` to their count (draining)."""
        live = self.live()
        holes = iter(s for s in range(len(live)) if self.slots[s] is None)
        for a in (s for s in live if s >= len(live)):
            b = next(holes)
            span = slice(self.clock - int(self.length[a]), self.clock)
            for store in (self.keys, self.values):
                for buf in store:
                    buf[b, :, span] = buf[a, :, span]
            for name in self.TENSORS:
                t = getattr(self, name)
                t[b] = t[a]
            self.slots[b], self.slots[a] = self.slots[a], None
        self.n = len(live)

    def make_room(self, clock: int, budget: int) -> None:
        """Reframe to end at ``clock``, widening the buffers so that at least ``max(clock, budget)`` decode steps
        fit before the next reframe (each reframe copies the data once, so this bounds its cost per step)."""
        room = max(clock, budget)
        self.reframe(clock, self.width if clock + room <= self.width else 2 * clock + room)

    def reframe(self, clock: int, width: int) -> None:
        """Move every slot's data so that it ends at column ``clock`` of buffers ``width`` columns wide."""
        live = self.live()
        keep = int(self.length[live].max()) if live else 0
        src, dst = slice(self.clock - keep, self.clock), slice(clock - keep, clock)
        for store in (self.keys, self.values):
            for i, buf in enumerate(store):
                new = buf if width == self.width else torch.zeros(
                    (self.cap, self.heads, width, self.head_dim), dtype=self.dtype, device=self.dev)
                new[:, :, dst] = buf[:, :, src].clone()
                store[i] = new
        mask = torch.zeros(self.cap, width, dtype=torch.bool, device=self.dev)
        mask[:, dst] = self.mask[:, src]
        self.mask, self.clock, self.width = mask, clock, width

    # -- admitting prompts --------------------------------------------------------------------------------------
    def admit(self, slots: list[int], reqs: list[Request], ids: list[np.ndarray]) -> None:
        """Place new prompts in free ``slots``: each copies its longest cached prefix in and ends one column before
        the clock; its other prompt tokens but the last wait in ``joining`` for the next pass, and the last is its
        pending token, fed in that pass like every decoding slot's."""
        backend = self.backend
        need = max(len(x) for x in ids) - 1  # columns a row takes before the clock
        self.reach = max(self.reach, need)
        if need > self.clock:  # move the data right, with a margin for the next, longer prompts
            self.make_room(need + need // 4, max(r.sampling.max_new_tokens for r in reqs))
        c = self.clock
        self.n = max(self.n, max(slots) + 1)
        for s, req, x in zip(slots, reqs, ids):
            row, n = backend.best_row(x)
            first = c - (len(x) - 1)
            self.mask[s] = False
            self.mask[s, first:c] = True
            if n:
                for layer, (k, v) in enumerate(row.kv):
                    self.keys[layer][s, :, first:first + n] = k[:, :n]
                    self.values[layer][s, :, first:first + n] = v[:, :n]
            if len(x) - 1 > n:
                self.joining.append((s, x[n:-1], n))
            st = req.sampling
            generator = torch.Generator(device=self.dev).manual_seed(st.seed) if st.temperature > 0 else None
            self.slots[s] = _Slot(req, x, row, generator,
                                  TopPLogitsWarper(st.top_p) if generator is not None and st.top_p < 1 else None,
                                  st.max_new_tokens)
            backend.encoded_tokens += len(x) - n
        rows = torch.tensor(slots, dtype=torch.long, device=self.dev)
        self.pending[rows] = torch.tensor([int(x[-1]) for x in ids], device=self.dev)
        self.pos[rows] = self.length[rows] = torch.tensor([len(x) - 1 for x in ids], device=self.dev)
        self.temperature[rows] = torch.tensor([[r.sampling.temperature or 1.0] for r in reqs], device=self.dev)
        self.gumbel[rows] = torch.tensor([self.slots[s].generator is not None and self.slots[s].top_p is None
                                          for s in slots], device=self.dev)
        self.drawn[rows] = 0
        self.window[rows] = self.pad
        backend.prompt_tokens += sum(len(x) for x in ids)
        backend.prompts_served += len(ids)

    # -- one pass -----------------------------------------------------------------------------------------------
    def step(self) -> None:
        """One pass: every slot's pending token at column ``clock``, after the joining rows' prompt tokens; then
        sample each live slot's next token."""
        live, n = self.live(), self.n
        length = self.length[:n].tolist()
        span = max(length[s] for s in live) + 1
        lanes = self._lanes(length, span)
        if self.clock + 1 > self.width:  # out of columns: move the data back, leaving room for joining prompts
            self.make_room(max(span - 1, self.reach), max(self.slots[s].budget for s in live))
        c = self.clock
        self.mask[:n, c] = True  # live slots' pending tokens; empty slots attend to their own column only
        mask4 = self.mask[:n, c + 1 - span:c + 1][:, None, None, :]
        engine_pass, tokens, positions = self._packed_prompts(length, span, lanes)
        input_ids = torch.cat(tokens + [self.pending[:n]])[None]
        position_ids = torch.cat(positions + [self.pos[:n]])[None]
        logits = self.forward(input_ids, position_ids, mask4, engine_pass)
        self.clock += 1
        self.pos[:n] += 1
        self.length[:n] += 1
        idle = [s for s in range(n) if self.slots[s] is None]
        if idle:
            self.mask[idle, c] = False
        self.sample(logits, live)

    def _lanes(self, length: list[int], span: int) -> list[tuple[int, int, int]]:
        """The decode lanes of this pass: (first slot, end slot, first column of the span), each attending over the
        columns of its longest row."""
        lanes = []
        for a, b in self.lane_bounds:
            if a < self.n:
                end = min(b, self.n)
                top = max((length[s] for s in range(a, end) if self.slots[s] is not None), default=0) + 1
                lanes.append((a, end, span - top))
        return lanes

    def _packed_prompts(self, length: list[int], span: int, lanes) -> tuple[_Pass, list, list]:
        """The joining rows' prompt tokens packed in front of the decode tokens: the pass description (where their
        keys and values go, each row's causal mask over its own columns), their token ids and their positions."""
        c = self.clock
        joins, tokens, positions, slot_idx, col_idx = [], [], [], [], []
        for s, x, n_cached in self.joining:  # prompt tokens n_cached .. len - 2 at the columns before the clock
            e = len(x)
            held = torch.arange(length[s], device=self.dev)
            joins.append((s, c - length[s], e, held[None, :] <= held[length[s] - e:, None]))
            tokens.append(torch.as_tensor(x, device=self.dev))
            positions.append(torch.arange(n_cached, n_cached + e, device=self.dev))
            slot_idx += [s] * e
            col_idx += range(c - e, c)
        self.joining = []
        engine_pass = _Pass(self.n, c, c + 1 - span, lanes, joins,
                            torch.tensor(slot_idx, dtype=torch.long, device=self.dev),
                            torch.tensor(col_idx, dtype=torch.long, device=self.dev))
        return engine_pass, tokens, positions

    def forward(self, input_ids, positions, mask4, engine_pass: _Pass):
        """The model over one packed pass; returns the decode tokens' logits. The boolean decode mask becomes an
        additive one once here, not in every layer (the lanes add it to their scores)."""
        mask4 = torch.zeros(mask4.shape, dtype=self.dtype, device=self.dev).masked_fill_(
            ~mask4, torch.finfo(self.dtype).min)
        cache = SlotCache(self.keys, self.values, engine_pass)
        return self.backend.model(input_ids=input_ids, position_ids=positions, attention_mask=mask4, cache=cache,
                                  use_cache=True, logits_to_keep=engine_pass.n, engine_pass=engine_pass).logits[0]

    # -- sampling and finishing ---------------------------------------------------------------------------------
    def sample(self, logits, slots: list[int]) -> None:
        """Pick each live slot's next token, note it, and finish the slots whose reply ended."""
        at = torch.tensor(slots, dtype=torch.long, device=self.dev)
        tok = self._draw(logits[at], slots, at)
        self.pending[at] = tok
        self.window[at] = torch.cat([self.window[at, 1:], tok[:, None]], 1)
        ended = self._ended(tok, slots, at)
        for s, t, end in zip(slots, tok.tolist(), ended.tolist()):
            slot = self.slots[s]
            slot.generated.append(t)
            if end or len(slot.generated) >= slot.budget:
                self.finish(s)

    def _draw(self, logits, slots: list[int], at) -> torch.Tensor:
        """The next token of each slot: greedy, Gumbel-max with the row's own noise, or top-p from its generator."""
        tok = logits.argmax(-1)
        gumbel = self.gumbel[at]
        if bool(gumbel.any()):
            refill = ((self.drawn[at] % NOISE_BLOCK == 0) & gumbel).nonzero().flatten().tolist()
            for j in refill:
                self.noise[slots[j]] = gumbel_block(self.slots[slots[j]].generator, self.vocab, self.dev)
            noise = self.noise[at, self.drawn[at] % NOISE_BLOCK]
            sampled = (logits.float() / self.temperature[at] + noise).argmax(-1)
            tok = torch.where(gumbel, sampled, tok)
            self.drawn[at] += gumbel.long()
        for j, s in enumerate(slots):
            slot = self.slots[s]
            if slot.top_p is not None:
                scores = slot.top_p(None, logits[j:j + 1].float() / slot.req.sampling.temperature)
                tok[j] = torch.multinomial(scores.softmax(-1), 1, generator=slot.generator)[0, 0]
        return tok

    def _ended(self, tok, slots: list[int], at) -> torch.Tensor:
        """Which slots' replies end with this token: end of sequence, or a stop string in their window."""
        eos = self.backend.tokenizer.eos_token_id
        ended = tok == eos if eos is not None else torch.zeros_like(tok, dtype=torch.bool)
        for stop in {self.slots[s].req.sampling.stop for s in slots}:
            criteria = self.backend.stop_criteria(stop)
            if criteria is None:
                continue
            if criteria.maximum_token_len > self.window.shape[1]:
                grow = criteria.maximum_token_len - self.window.shape[1]
                self.window = torch.nn.functional.pad(self.window, (grow, 0), value=self.pad)
            which = torch.tensor([self.slots[s].req.sampling.stop == stop for s in slots], device=self.dev)
            ended |= which & criteria(self.window[at], None)
        return ended

    def finish(self, s: int) -> None:
        """Keep the slot's keys/values (prompt and fed tokens) as a cache row, free it, and hand the reply back."""
        backend, slot = self.backend, self.slots[s]
        held = slice(self.clock - int(self.length[s]), self.clock)  # a row's columns are contiguous
        kv = [(k[s, :, held].clone(), v[s, :, held].clone())  # copies: the slot's columns are reused
              for k, v in zip(self.keys, self.values)]
        row = _Row(np.concatenate([slot.ids, np.asarray(slot.generated[:-1], dtype=np.int64)]), kv, 0)
        backend.remember(row, slot.source)
        backend.generated_tokens += len(slot.generated)
        self.slots[s] = None
        self.mask[s] = False
        self.length[s] = 0
        text = backend.tokenizer.decode(slot.generated, skip_special_tokens=True)
        self.finished.append((slot.req, cut_at_stop(text, slot.req.sampling.stop)))


class CachedHFBackend(HFBackend):
    """``HFBackend`` with keys/values reused across calls and token-level continuous batching (:meth:`serve`);
    ``cache_rows`` bounds the rows kept (memory)."""

    def __init__(self, model, tokenizer, max_context: int | None = None, cache_rows: int = 128):
        super().__init__(model, tokenizer, max_context)
        self.cache_rows = cache_rows
        self.rows: list[_Row] = []
        self._table: np.ndarray | None = None  # the rows' ids, padded with -1 (None: to rebuild)
        self.clock = 0
        self.prompt_tokens = 0
        self.encoded_tokens = 0
        self.prompts_served = 0
        self._stops: dict[tuple[str, ...], object] = {}

    def best_row(self, ids: np.ndarray) -> tuple[_Row | None, int]:
        """The cached row sharing the longest prefix with ``ids``, and how many tokens of it to reuse (one
        comparison over a padded table of every row's ids, rebuilt after the rows change)."""
        if not self.rows:
            return None, 0
        if self._table is None:
            width = max(len(r.ids) for r in self.rows)
            self._table = np.full((len(self.rows), width), -1, dtype=np.int64)
            for i, r in enumerate(self.rows):
                self._table[i, :len(r.ids)] = r.ids
        n = min(len(ids), self._table.shape[1])
        same = self._table[:, :n] == ids[:n]
        shared = np.where(same.all(1), n, same.argmin(1))  # first mismatch (padding never matches)
        i = int(shared.argmax())
        if not shared[i]:
            return None, 0
        return self.rows[i], min(int(shared[i]), len(ids) - 1)  # one token is encoded, for the next logits

    def stop_criteria(self, stop: tuple[str, ...]):
        """Transformers' stop-string matcher for these strings (built once: it precomputes token tables)."""
        if stop and stop not in self._stops:
            self._stops[stop] = StopStringCriteria(self.tokenizer, list(stop))
        return self._stops.get(stop)

    def generate(self, prompts: list[Messages], sampling: Sampling | list[Sampling]) -> list[str | None]:
        queue = deque(Request(m, s, i) for i, (m, s) in enumerate(zip(prompts, per_prompt(sampling, len(prompts)))))
        replies: list[str | None] = [None] * len(prompts)

        def reply(req: Request, text: str | None) -> None:
            replies[req.tag] = text

        self.serve(lambda n: [queue.popleft() for _ in range(min(n, len(queue)))], reply, max(len(prompts), 1))
        return replies

    def serve(self, take: Take, on_reply: OnReply, slots: int) -> None:
        """Answer requests as they come: ``take(n)`` returns up to ``n`` requests ready now (an empty list when
        none is), and ``on_reply`` gets each reply as soon as it ends; it may make new requests ready. Returns
        when nothing is decoding and ``take`` has nothing more. A prompt that does not fit the context gets None.
        """
        state: _Slots | None = None
        join_at = max(1, int(slots * JOIN_FRACTION))
        with torch.inference_mode(), slot_attention_in(self.model):
            while True:
                live = state.live() if state else []
                asked = slots - len(live) >= join_at or not live
                took = take(slots - len(live)) if asked else []
                new, ids = self._fitting(took, on_reply)
                if new:
                    if state is None:
                        width = 2 * (max(map(len, ids)) + max(r.sampling.max_new_tokens for r in new))
                        state = _Slots(self, slots, width)
                    state.admit(state.place([len(x) for x in ids]), new, ids)
                elif not live:
                    if took:  # every one of them was answered at once, which may have readied others
                        continue
                    return
                elif asked and len(live) < state.n:  # nothing waits: the decode cost follows the live slots
                    state.pack()
                state.step()
                self._hand_back(state, on_reply)

    def _fitting(self, reqs: list[Request], on_reply: OnReply) -> tuple[list[Request], list[np.ndarray]]:
        """The requests whose prompt and reply fit the context, with their token ids; the others get None."""
        fits, ids = [], []
        for req, x in zip(reqs, self.encode([r.messages for r in reqs]) if reqs else []):
            if self.fits(x, req.sampling):
                fits.append(req)
                ids.append(np.asarray(x, dtype=np.int64))
            else:
                on_reply(req, None)
        return fits, ids

    @staticmethod
    def _hand_back(state: _Slots, on_reply: OnReply) -> None:
        """Pass the replies that ended to the caller (after the engine's own bookkeeping is done)."""
        done, state.finished = state.finished, []
        for req, text in done:
            on_reply(req, text)

    def remember(self, row: _Row, source: _Row | None) -> None:
        """Add a finished row, drop the row it extends, and evict the least recently used beyond the bound."""
        self.clock += 1
        row.used = self.clock
        covered = source is not None and common_prefix(source.ids, row.ids) == len(source.ids)
        if source is not None:
            source.used = self.clock
        self.rows = [r for r in self.rows if not (covered and r is source)] + [row]
        self._table = None
        if len(self.rows) > self.cache_rows:
            self.rows.sort(key=lambda r: r.used)
            self.rows = self.rows[len(self.rows) - self.cache_rows:]
