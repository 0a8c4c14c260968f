"""Prefix-caching generation for Hugging Face models: the rollout engine's backend.

Agent episodes grow by a few dozen tokens per turn, and Monte Carlo rollouts from one state share everything but
their last turns, so re-encoding every history each turn (what ``generate`` on full prompts does) wastes most of
the compute. :class:`CachedHFBackend` keeps the keys/values of recent prompts (a small LRU pool of rows) and, for
each new prompt, starts from the cached row with the longest common token prefix: only the new tokens are
encoded. Rows of one call are packed into a static cache that shares column indices across the batch (each row
left-padded, holes masked, RoPE positions given per row), then decoded together until each hits a stop string,
EOS or ``max_new_tokens``; finished rows leave the batch once a third of it is done. Sampling is Gumbel-max with
noise from each row's own seeded generator, so a row's sample does not depend on its batch neighbours. Greedy
outputs equal ``HFBackend``'s up to floating-point ties (tested).

Transformers' own continuous-batching ``generate_batch`` also shares prefixes, but on CPU it took 7.8 s where a
plain batched ``generate`` took 0.28 s for the same 32 short prompts (measured here), so the kit packs rows itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from steca_lib.generation import HFBackend, Messages, Sampling, cut_at_stop, per_prompt


#: Decoding steps of Gumbel noise drawn at once per sampled row.
NOISE_BLOCK = 16


def gumbel_block(generator, vocab: int, device):
    """``[NOISE_BLOCK, vocab]`` standard Gumbel noise from a row's generator (zeros for a greedy row)."""
    import torch

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


def left_padded(slices: list):
    """Per-row ``[heads, len, dim]`` keys or values, left-padded with zeros into ``[batch, heads, max_len, dim]``."""
    from torch.nn.utils.rnn import pad_sequence

    return pad_sequence([x.transpose(0, 1) for x in slices], batch_first=True,
                        padding_side="left").permute(0, 2, 1, 3)


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the longest common prefix of two id arrays."""
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


class CachedHFBackend(HFBackend):
    """``HFBackend`` with keys/values reused across calls; ``cache_rows`` bounds the rows kept (memory)."""

    def __init__(self, model, tokenizer, max_context: int | None = None, cache_rows: int = 128):
        super().__init__(model, tokenizer, max_context)
        self.cache_rows = cache_rows
        self.rows: list[_Row] = []
        self.clock = 0
        self.prompt_tokens = 0
        self.encoded_tokens = 0
        self.prompts_served = 0
        self._stops: dict[tuple[str, ...], object] = {}

    def _best_row(self, ids: np.ndarray) -> tuple[_Row | None, int]:
        best, best_len = None, 0
        for row in self.rows:
            n = common_prefix(row.ids, ids)
            if n > best_len:
                best, best_len = row, n
        return best, min(best_len, len(ids) - 1)  # at least one token is encoded, for the next-token logits

    def _stop_criteria(self, stop: tuple[str, ...]):
        """Transformers' stop-string matcher for these strings (built once: it precomputes token tables)."""
        from transformers.generation.stopping_criteria import StopStringCriteria

        if stop and stop not in self._stops:
            self._stops[stop] = StopStringCriteria(self.tokenizer, list(stop))
        return self._stops.get(stop)

    def generate(self, prompts: list[Messages], sampling: Sampling | list[Sampling]) -> list[str | None]:
        settings = per_prompt(sampling, len(prompts))
        all_ids = self.encode(prompts)
        replies: list[str | None] = [None] * len(prompts)
        by_stop: dict[tuple[str, ...], list[int]] = {}
        for i, (x, s) in enumerate(zip(all_ids, settings)):
            if self.max_context is None or len(x) + s.max_new_tokens <= self.max_context:
                by_stop.setdefault(s.stop, []).append(i)
        for stop, todo in by_stop.items():
            ids = [np.asarray(all_ids[i], dtype=np.int64) for i in todo]
            sources = [self._best_row(x) for x in ids]
            texts, new_rows = self._run(ids, sources, [settings[i] for i in todo], stop)
            for i, text in zip(todo, texts):
                replies[i] = cut_at_stop(text, stop)
            self._remember(new_rows, sources)
        return replies

    def _run(self, ids: list[np.ndarray], sources: list[tuple[_Row | None, int]], settings: list[Sampling],
             stop_strings: tuple[str, ...]):
        """Encode the uncached tokens of every row in one forward pass, then decode all rows together; each
        row samples with its own temperature, top-p and seeded generator."""
        import torch
        from transformers import StaticCache
        from transformers.generation.logits_process import TopPLogitsWarper

        dev = self.model.device
        B = len(ids)
        reuse = [n for _, n in sources]
        fresh = [len(x) - n for x, n in zip(ids, reuse)]
        P, N, G = max(reuse), max(fresh), max(st.max_new_tokens for st in settings)
        width = P + N + G
        pad = self.tokenizer.pad_token_id
        self.prompt_tokens += sum(len(x) for x in ids)
        self.prompts_served += B
        self.encoded_tokens += sum(fresh)

        cache = StaticCache(config=self.model.config, max_cache_len=width)
        mask = torch.zeros(B, width, dtype=torch.long, device=dev)
        if P:
            template = next(row for row, n in sources if n).kv
            for layer, (k0, v0) in enumerate(template):
                keys = left_padded([row.kv[layer][0][:, :n] if n else k0[:, :0] for row, n in sources])
                values = left_padded([row.kv[layer][1][:, :n] if n else v0[:, :0] for row, n in sources])
                cache.update(keys, values, layer)
            for b, n in enumerate(reuse):
                mask[b, P - n:P] = 1
        chunk = torch.full((B, N), pad, dtype=torch.long, device=dev)
        pos = torch.zeros(B, N, dtype=torch.long, device=dev)
        for b, (x, n) in enumerate(zip(ids, reuse)):
            f = len(x) - n
            chunk[b, N - f:] = torch.from_numpy(x[n:])
            pos[b, N - f:] = torch.arange(n, len(x))
            mask[b, P + N - f:P + N] = 1

        budget = torch.tensor([st.max_new_tokens for st in settings], device=dev)
        gens = {b: torch.Generator(device=dev).manual_seed(st.seed) for b, st in enumerate(settings)
                if st.temperature > 0}
        top_p = {b: TopPLogitsWarper(settings[b].top_p) for b in gens if settings[b].top_p < 1.0}
        temperature = torch.tensor([st.temperature or 1.0 for st in settings], device=dev)[:, None]
        gumbel_rows = torch.tensor([b in gens and b not in top_p for b in range(B)], device=dev)
        noise = None
        stop = self._stop_criteria(stop_strings)
        eos = self.tokenizer.eos_token_id
        out_ids = torch.full((B, G), pad, dtype=torch.long, device=dev)
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        lengths = torch.zeros(B, dtype=torch.long, device=dev)
        next_pos = torch.tensor([len(x) for x in ids], device=dev)
        rows = list(range(B))  # batch position -> row of this call (finished rows leave the batch)
        results: dict[int, tuple[list[int], _Row]] = {}

        def collect(positions: list[int]) -> None:
            """Keep the generated ids and the keys/values of finished rows (prompt + fed tokens)."""
            for p in positions:
                b = rows[p]
                x, n, length = ids[b], reuse[b], int(lengths[p])
                fed = max(length - 1, 0)  # the last generated token was never fed back
                cols = torch.cat([torch.arange(P - n, P), torch.arange(P + N - (len(x) - n), P + N),
                                  torch.arange(P + N, P + N + fed)]).to(dev)
                kv = [(layer.keys[p][:, cols].clone(), layer.values[p][:, cols].clone()) for layer in cache.layers]
                gen_ids = out_ids[p, :length].tolist()
                results[b] = (gen_ids, _Row(np.concatenate([x, np.asarray(gen_ids[:fed], dtype=np.int64)]), kv, 0))

        with torch.inference_mode():
            logits = self.model(input_ids=chunk, attention_mask=mask[:, :P + N], position_ids=pos,
                                cache=cache, use_cache=True).logits[:, -1]
            for t in range(G):
                tok = logits.argmax(-1)
                if gumbel_rows.any():  # Gumbel-max: argmax(logits / T + Gumbel noise) samples softmax(logits / T)
                    if t % NOISE_BLOCK == 0:  # each row's noise comes from its own seeded generator
                        noise = torch.stack([gumbel_block(gens.get(b), logits.shape[-1], dev) for b in rows])
                    sampled = (logits.float() / temperature + noise[:, t % NOISE_BLOCK]).argmax(-1)
                    tok = torch.where(gumbel_rows, sampled, tok)
                for p, b in enumerate(rows):
                    if b in top_p:
                        scores = top_p[b](None, logits[p:p + 1].float() / settings[b].temperature)
                        tok[p] = torch.multinomial(scores.softmax(-1), 1, generator=gens[b])[0, 0]
                tok = torch.where(done, torch.full_like(tok, pad), tok)
                out_ids[:, t] = tok
                lengths += (~done).long()
                ended = tok == eos
                if stop is not None:
                    ended |= stop(out_ids[:, :t + 1], None)
                done |= ended | (lengths >= budget)
                if bool(done.all()):
                    break
                if 3 * int(done.sum()) >= len(rows):  # drop finished rows: decode cost follows the live ones
                    collect(done.nonzero().flatten().tolist())
                    keep = (~done).nonzero().flatten()
                    for layer in cache.layers:
                        layer.keys, layer.values = layer.keys[keep], layer.values[keep]
                    rows = [rows[p] for p in keep.tolist()]
                    tok, mask, next_pos, out_ids = tok[keep], mask[keep], next_pos[keep], out_ids[keep]
                    done, lengths, budget = done[keep], lengths[keep], budget[keep]
                    temperature, gumbel_rows = temperature[keep], gumbel_rows[keep]
                    noise = noise[keep] if noise is not None else None
                mask[:, P + N + t] = 1
                logits = self.model(input_ids=tok[:, None], attention_mask=mask[:, :P + N + t + 1],
                                    position_ids=next_pos[:, None], cache=cache,
                                    use_cache=True).logits[:, -1]
                next_pos += 1
            collect(list(range(len(rows))))
        gen_ids = [results[b][0] for b in range(B)]
        self.generated_tokens += sum(len(g) for g in gen_ids)
        return self.tokenizer.batch_decode(gen_ids, skip_special_tokens=True), [results[b][1] for b in range(B)]

    def _remember(self, new_rows: list[_Row], sources: list[tuple[_Row | None, int]]) -> None:
        """Add this call's rows, drop the rows they extend, and evict the least recently used beyond the bound."""
        self.clock += 1
        covered = {id(row) for row, n in sources if row is not None and n == len(row.ids)}
        for row, _ in sources:
            if row is not None:
                row.used = self.clock
        for row in new_rows:
            row.used = self.clock
        self.rows = [r for r in self.rows if id(r) not in covered] + new_rows
        if len(self.rows) > self.cache_rows:
            self.rows.sort(key=lambda r: r.used)
            self.rows = self.rows[len(self.rows) - self.cache_rows:]

    def clear(self) -> None:
        """Forget every cached row (e.g. after the model's weights change)."""
        self.rows = []
