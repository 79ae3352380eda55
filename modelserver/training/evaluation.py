"""Held-out loss: the token-weighted validation loss the Trainer selects on, and perplexity of the
base and the adapter on questions never trained on."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from .collate import SFTCollator
from .tokens import IGNORE_INDEX


def answer_nll(
    model, features: Sequence[dict], *, pad_token_id: int, batch_size: int = 8, device: str = "cpu"
) -> tuple[float, int]:
    """Summed negative log-likelihood of the label tokens and their count (token-weighted, no padding).

    Batches are formed from length-sorted features (right padding, masked by attention_mask).
    """
    import torch

    collate = SFTCollator(pad_token_id, "right")
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                batch = collate([features[i] for i in order[start:start + batch_size]])
                labels = batch.pop("labels").to(device)
                batch.pop("num_tokens")
                out = model(**{k: v.to(device) for k, v in batch.items()}, use_cache=False)
                logits = out.logits[:, :-1, :].float()
                target = labels[:, 1:]
                loss = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
                )
                total += float(loss)
                count += int((target != IGNORE_INDEX).sum())
    finally:
        model.train(was_training)
    return total, count


def subsample(items: Sequence, limit: int | None, seed: int) -> list:
    """A seeded, order-preserving sample of at most ``limit`` items (all when limit is None, none when 0)."""
    if limit is None or len(items) <= limit:
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def perplexity(model, features: Sequence[dict], split: str, *, pad_token_id: int, batch_size: int, device: str) -> dict:
    """Perplexity of the answers under the adapter and under the base (the same model, adapter disabled)."""
    kwargs = {"pad_token_id": pad_token_id, "batch_size": batch_size, "device": device}
    nll_adapter, tokens = answer_nll(model, features, **kwargs)
    with model.disable_adapter():
        nll_base, _ = answer_nll(model, features, **kwargs)
    return {
        "split": split,
        "examples": len(features),
        "tokens": tokens,
        "base": math.exp(nll_base / tokens) if tokens else None,
        "adapter": math.exp(nll_adapter / tokens) if tokens else None,
    }
