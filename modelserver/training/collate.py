"""Batches for the Trainer: length-grouped sampling, padded and packed collation.

torch is imported inside the collators.

Padding is masked by ``attention_mask``, never by token id: the pad token is ``<|im_end|>``,
which is also a trained label.  Packed rows carry no attention mask: their ``position_ids``
restart at 0 for each example, from which transformers builds a block-diagonal causal mask
(``masking_utils.find_packed_sequence_indices``), so packed examples never attend to each other.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from .tokens import IGNORE_INDEX

BATCHING_MODES = ("none", "group", "pack")


class LengthGroupedSampler:
    """Index order for batches of similar length (less padding), reshuffled every epoch.

    Per epoch (seeded by ``seed`` and the epoch, so a resumed run sees the same order): shuffle,
    cut into mega-batches of ``megabatch`` batches, sort each by length, cut into batches,
    shuffle the batches (the short last one stays last, so the DataLoader's batches line up).

    Why not transformers' LengthGroupedSampler: it sizes its mega-batches as
    ``min(n // (4 * batch_size), 50)`` batches, i.e. a single batch for small data sets, where it
    then groups nothing; and it always puts the longest batch first.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, megabatch: int = 64):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.megabatch = megabatch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # called by the Trainer before each epoch
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def batches(self) -> list[list[int]]:
        rng = random.Random(f"{self.seed}:{self.epoch}")
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        size = self.megabatch * self.batch_size
        batches = []
        for start in range(0, len(order), size):
            mega = sorted(order[start:start + size], key=lambda i: -self.lengths[i])
            batches.extend(mega[k:k + self.batch_size] for k in range(0, len(mega), self.batch_size))
        full = [b for b in batches if len(b) == self.batch_size]
        short = [b for b in batches if len(b) < self.batch_size]
        rng.shuffle(full)
        return full + short

    def __iter__(self):
        return iter([i for batch in self.batches() for i in batch])


# --------------------------------------------------------------------------- collators


class SFTCollator:
    """Pads ``{"input_ids", "labels"}`` features; ``attention_mask`` marks the real tokens.

    ``position_ids`` come from the mask, so left padding gives the same positions as right
    padding.  ``num_tokens`` (real tokens in the batch) is popped by the trainer for tokens/s.
    """

    def __init__(self, pad_token_id: int, padding_side: str = "right", pad_to_multiple_of: int | None = None):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.pad_token_id = int(pad_token_id)
        self.padding_side = padding_side
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[dict]) -> dict:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            width = math.ceil(width / self.pad_to_multiple_of) * self.pad_to_multiple_of
        ids, labels, mask = [], [], []
        for f in features:
            n = len(f["input_ids"])
            pad = width - n
            if self.padding_side == "right":
                ids.append(list(f["input_ids"]) + [self.pad_token_id] * pad)
                labels.append(list(f["labels"]) + [IGNORE_INDEX] * pad)
                mask.append([1] * n + [0] * pad)
            else:
                ids.append([self.pad_token_id] * pad + list(f["input_ids"]))
                labels.append([IGNORE_INDEX] * pad + list(f["labels"]))
                mask.append([0] * pad + [1] * n)
        attention_mask = torch.tensor(mask, dtype=torch.long)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "labels": torch.tensor(labels, dtype=torch.long),
            "num_tokens": attention_mask.sum(),
        }


def pack_features(features: Sequence[dict], max_length: int, seed: int = 0) -> list[dict]:
    """First-fit-decreasing packing of examples into rows of at most ``max_length`` tokens.

    Each row holds whole examples: ``input_ids``, ``labels`` and ``position_ids`` restarting at
    0 for each example.  Rows are shuffled with ``seed``.
    """
    order = sorted(range(len(features)), key=lambda i: (-len(features[i]["input_ids"]), i))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = len(features[i]["input_ids"])
        if n > max_length:
            raise ValueError(f"feature {i} has {n} tokens > max_length {max_length}")
        for r, free in enumerate(room):
            if free >= n:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(max_length - n)
    packed = []
    for members in rows:
        ids, labels, pos = [], [], []
        for i in members:
            f = features[i]
            ids.extend(f["input_ids"])
            labels.extend(f["labels"])
            pos.extend(range(len(f["input_ids"])))
        packed.append({"input_ids": ids, "labels": labels, "position_ids": pos, "n_examples": len(members)})
    random.Random(seed).shuffle(packed)
    return packed


class PackedCollator:
    """Pads packed rows without an attention mask (see module docstring).

    The padding of a row is its own segment (positions 0, 1, ...; labels -100), so no real
    token attends to it, and it attends only to itself.
    """

    def __init__(self, pad_token_id: int):
        self.pad_token_id = int(pad_token_id)

    def __call__(self, features: Sequence[dict]) -> dict:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids, labels, pos = [], [], []
        real = 0
        for f in features:
            n = len(f["input_ids"])
            real += n
            pad = width - n
            ids.append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            labels.append(list(f["labels"]) + [IGNORE_INDEX] * pad)
            pos.append(list(f["position_ids"]) + list(range(pad)))
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "position_ids": torch.tensor(pos, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "num_tokens": torch.tensor(real),
        }
