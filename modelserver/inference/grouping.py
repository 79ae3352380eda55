"""Length groups sharing one decoding batch: the linear layers run every row together, and each group's
attention reads only its own columns.

Why: :func:`batching.plan_batches` gives a prompt much longer than the rest a batch of its own, because
padding every row to its length would read more padded KV each step than the weights are worth.  But a
batch of one or two rows reads all the weights for one or two tokens a step: the two 560- and 666-token
prompts of ``bench/generation.py`` took a quarter of a 32-prompt run for 6% of its tokens.  Packed
into one batch, the weights are read once a step for every row, and each group's attention slices
away the leading columns that are padding for the whole group, so it reads what a batch of its own
would have read: each row sees the columns, mask and kernel shapes it saw there, and the texts stay
those of a batch of one (tests/modelserver).

Only for models whose attention is PyTorch's SDPA with full-attention layers (the plain decoders:
Llama, Qwen, ...); others keep one batch per group.  torch / transformers are imported inside the
functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

ATTENTION = "empatheval_grouped"
# A packed batch's cache, padding included, may hold at most this many times the cells its rows need:
# packing trades memory for weight reads, and a batch of mostly padding would cost more than it saves.
MAX_PADDED_RATIO = 4

_registered = False


def pack(groups: Sequence[Sequence[int]], lengths: Sequence[int], batch_size: int, extra: int) -> list[list[list[int]]]:
    """``plan_batches``' batches (the groups, in order) packed into batches of at most ``batch_size``
    rows whose padded cache (every row as wide as the longest, plus ``extra`` new columns) stays
    within MAX_PADDED_RATIO times the cells the rows need."""
    packed: list[list[list[int]]] = []
    for group in groups:
        if packed:
            candidate = [*packed[-1], list(group)]
            rows = [i for g in candidate for i in g]
            needed = sum(lengths[i] + extra for i in rows)
            padded = len(rows) * (max(lengths[i] for i in rows) + extra)
            if len(rows) <= batch_size and padded <= MAX_PADDED_RATIO * needed:
                packed[-1] = candidate
                continue
        packed.append([list(group)])
    return packed


def supported(model, layer_kinds: Sequence[str]) -> bool:
    """Whether ``model`` can decode length groups together: SDPA attention, full-attention layers only."""
    config = getattr(model, "config", None)
    text = config.get_text_config(decoder=True) if config is not None else None
    return (text is not None and getattr(text, "_attn_implementation", None) == "sdpa"
            and all(kind == "full" for kind in layer_kinds))


@contextmanager
def grouped_attention(model):
    """The model's attention is the grouped one while decoding (the same as SDPA for a call that names
    no groups: the prefill, a batch of one group)."""
    _register()
    text = model.config.get_text_config(decoder=True)
    before = text._attn_implementation
    text._attn_implementation = ATTENTION
    try:
        yield
    finally:
        text._attn_implementation = before


def spans(group_ids: Sequence[int], attention_mask) -> list[tuple[int, int, int]] | None:
    """(first row, end row, first column) of each group's rows, which are contiguous; the first column
    is the first that is not padding for every row of the group.  None for a single group (plain SDPA:
    the loop has trimmed the padding common to every row)."""
    if len(set(group_ids)) < 2:
        return None
    first = attention_mask.int().argmax(dim=1).tolist()
    out, start = [], 0
    for row in range(1, len(group_ids) + 1):
        if row == len(group_ids) or group_ids[row] != group_ids[start]:
            out.append((start, row, min(first[start:row])))
            start = row
    return out


def _attention(module, query, key, value, attention_mask, attention_groups=None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not attention_groups:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    import torch

    outputs = []
    for first_row, end_row, first_column in attention_groups:
        mask = attention_mask[first_row:end_row, :, :, first_column:] if attention_mask is not None else None
        out, _ = sdpa_attention_forward(module, query[first_row:end_row], key[first_row:end_row, :, first_column:],
                                        value[first_row:end_row, :, first_column:], mask, **kwargs)
        outputs.append(out)
    return torch.cat(outputs, dim=0), None


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, _attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # the masks SDPA gets, sliced per group above
    _registered = True
