"""Which prompts share a batch: sorted by length, and a longer prompt starts a new batch when its
padding would cost more than a batch of its own."""

from __future__ import annotations

from collections.abc import Sequence


def padding_budget(model) -> int:
    """How many padded KV-cache cells a batch may add before a separate batch is cheaper.

    One decode step reads all weights once per batch plus every cached cell (padding included) of
    every row.  Adding a row that widens the batch by ``d`` columns adds ``d * rows`` padded cells to
    every step; once that is more than half the weights' worth of memory, the longer prompts go
    into a batch of their own.
    """
    cfg = getattr(model, "config", None)
    try:
        layers = cfg.num_hidden_layers
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    except AttributeError:
        return 1 << 30
    cell = layers * heads * head_dim * 2
    n_params = sum(p.numel() for p in model.parameters())
    return max(1, n_params // (2 * cell))


def plan_batches(lengths: Sequence[int], batch_size: int, budget: int) -> list[list[int]]:
    """Indices grouped into batches: sorted by length, at most ``batch_size`` rows, and a new batch
    whenever the next (longer) prompt would add more than ``budget`` padded cells."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current:
            extra = (lengths[i] - lengths[current[-1]]) * len(current)
            if len(current) >= batch_size or extra > budget:
                batches.append(current)
                current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
