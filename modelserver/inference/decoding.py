"""The decoding loop: per-row prefill packed into a preallocated KV cache (``kvcache``), HF's logits processing,
a per-row seeded nucleus sampler, and rows leaving the batch as soon as they finish.

See the package docstring for what this guarantees about reproducibility.
torch / transformers are imported inside the functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .grouping import spans
from .kvcache import PrefixCaches, prefill_rows, trim_left_padding
from .params import GenerationParams

TOP_P_CANDIDATES = 256


def _process_logits(logits, seen, params: GenerationParams):
    """Repetition penalty then temperature, exactly as HF's processors.  ``logits`` float32 (rows, vocab)."""
    import torch

    if params.repetition_penalty != 1.0:
        penalised = torch.where(logits < 0, logits * params.repetition_penalty, logits / params.repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    if params.do_sample and params.temperature != 1.0:
        logits = logits / params.temperature
    return logits


def nucleus(scores, top_p: float):
    """Top-p candidates per row: (probs, token ids) sorted by descending probability, with the
    probabilities of tokens outside the nucleus set to 0.

    Same rule as HF's ``TopPLogitsWarper``: a token is kept unless the tokens ranked above it already
    hold at least ``top_p`` of the mass (the top token is always kept).  HF sorts the whole vocabulary;
    here the nucleus is searched in the top ``TOP_P_CANDIDATES`` tokens and only rows whose nucleus is
    larger fall back to a full sort.  With ``top_p == 1`` the whole vocabulary is returned in id order.
    """
    import torch

    probs = scores.softmax(dim=-1)
    vocab = probs.shape[-1]
    if top_p >= 1.0:
        ids = torch.arange(vocab, device=probs.device).expand_as(probs)
        return probs, ids
    k = min(TOP_P_CANDIDATES, vocab)
    cand_p, cand_i = probs.topk(k, dim=-1)
    keep = (cand_p.cumsum(dim=-1) - cand_p) < top_p
    keep[:, 0] = True
    if k < vocab and bool(keep[:, -1].any()):  # some nucleus is wider than the candidates: full sort
        cand_p, cand_i = probs.sort(dim=-1, descending=True)
        keep = (cand_p.cumsum(dim=-1) - cand_p) < top_p
        keep[:, 0] = True
    return cand_p.masked_fill(~keep, 0.0), cand_i


def sample_rows(scores, top_p: float, generators):
    """One token per row: inverse-CDF sampling over the row's nucleus with ONE ``torch.rand`` draw
    from the row's own generator.  Rows never share random numbers, so a row's draw depends only
    on its seed and on how many tokens it has generated."""
    import torch

    probs, ids = nucleus(scores, top_p)
    u = torch.cat([torch.rand(1, generator=g, device=probs.device) for g in generators]).to(probs.dtype)
    cdf = probs.cumsum(dim=-1)
    target = (u * cdf[:, -1]).unsqueeze(1)
    pos = torch.searchsorted(cdf, target, right=True).clamp_(max=probs.shape[-1] - 1)
    return ids.gather(1, pos).squeeze(1)


def decode_batch(
    model,
    prompts: list[list[int]],
    seeds: list[int],
    params: GenerationParams,
    *,
    stop_ids: Sequence[int],
    device: str,
    on_row_done: Callable[[int], None] | None = None,
    prefix_lengths: Sequence[int] | None = None,
    prefixes: PrefixCaches | None = None,
    timings: dict | None = None,
    groups: Sequence[int] | None = None,
) -> list[tuple[list[int], str, float]]:
    """Generate for one batch; returns (token ids, finish reason, seconds) per prompt, in prompt order.

    ``prefix_lengths`` (default: none) are the rows' cached prefixes (``kvcache.prefill_rows``);
    ``timings``, if given, receives ``prefill_seconds``; ``groups``: each row's length group, the rows
    of a group contiguous, for a model in ``grouping.grouped_attention`` (each group's attention reads
    its own columns only)."""
    import torch

    started = time.perf_counter()
    n = len(prompts)
    if any(not p for p in prompts):
        raise ValueError("empty prompt")
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    longest = max(len(p) for p in prompts)
    if max_pos and longest + params.max_new_tokens > max_pos:
        raise ValueError(
            f"prompt of {longest} tokens + max_new_tokens={params.max_new_tokens} exceeds the model's "
            f"context of {max_pos} tokens"
        )

    generators = []
    if params.do_sample:
        for s in seeds:
            g = torch.Generator(device=device)
            g.manual_seed(int(s))
            generators.append(g)
    stop = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    cache, attention_mask, first_logits = prefill_rows(
        model, prompts, device, params.max_new_tokens, prefix_lengths=prefix_lengths, prefixes=prefixes
    )
    if timings is not None:
        timings["prefill_seconds"] = time.perf_counter() - started

    results: list[tuple[list[int], str, float] | None] = [None] * n
    generated: list[list[int]] = [[] for _ in range(n)]
    rows = list(range(n))  # original index of each row still in the batch
    row_groups = list(groups) if groups is not None else [0] * n
    seen = None
    if params.repetition_penalty != 1.0:
        vocab = first_logits.shape[-1]
        seen = torch.zeros((n, vocab), dtype=torch.bool, device=device)
        for i, p in enumerate(prompts):
            # ids >= vocab (if the embedding is larger than lm_head) cannot be generated: HF ignores them too
            seen[i, torch.tensor([t for t in p if t < vocab], dtype=torch.long, device=device)] = True

    logits = first_logits
    for step in range(params.max_new_tokens):
        scores = _process_logits(logits, seen, params)
        if params.do_sample:
            next_tokens = sample_rows(scores, params.top_p, generators)
        else:
            next_tokens = scores.argmax(dim=-1)
        if seen is not None:
            seen[torch.arange(len(rows), device=device), next_tokens] = True

        is_stop = torch.isin(next_tokens, stop)
        tokens_list = next_tokens.tolist()
        stop_list = is_stop.tolist()
        keep = []
        now = time.perf_counter() - started
        last_step = step == params.max_new_tokens - 1
        for j, orig in enumerate(rows):
            generated[orig].append(tokens_list[j])
            if stop_list[j] or last_step:
                results[orig] = (generated[orig], "stop" if stop_list[j] else "length", now)
                if on_row_done is not None:
                    on_row_done(orig)
            else:
                keep.append(j)
        if not keep:
            break
        if len(keep) < len(rows):
            keep_t = torch.tensor(keep, dtype=torch.long, device=device)
            cache.batch_select_indices(keep_t)
            attention_mask = attention_mask[keep_t]
            next_tokens = next_tokens[keep_t]
            if seen is not None:
                seen = seen[keep_t]
            if generators:
                generators = [generators[j] for j in keep]
            rows = [rows[j] for j in keep]
            row_groups = [row_groups[j] for j in keep]
            attention_mask = trim_left_padding(cache, attention_mask)
        attention_mask = torch.cat(
            [attention_mask, torch.ones((len(rows), 1), dtype=attention_mask.dtype, device=device)], dim=1
        )
        position_ids = attention_mask.sum(dim=-1, keepdim=True) - 1
        attention_groups = spans(row_groups, attention_mask)
        out = model(
            input_ids=next_tokens[:, None],
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            **({"attention_groups": attention_groups} if attention_groups else {}),
        )
        logits = out.logits[:, -1, :].float()
    return results  # type: ignore[return-value]
