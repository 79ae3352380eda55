"""Tokenising conversations for supervised fine-tuning, padding / packing batches, held-out NLL.

torch is imported inside the functions that need it.

Labels are ``-100`` everywhere except the assistant's tokens: the content of each trained
assistant turn plus its end-of-turn token (``<|im_end|>`` for SmolLM2), not the newline the
template adds after it (generation stops at end of turn and never produces that newline).
Spans are found on the rendered text (the template is rendered up to the assistant header
and up to the end of the turn) and mapped to tokens with the fast tokenizer's offsets, so
BPE merges across the prompt/answer boundary cannot shift them.

Padding is masked by ``attention_mask``, never by token id: the pad token is ``<|im_end|>``,
which is also a trained label.  Packed rows carry no attention mask: their ``position_ids``
restart at 0 for each example, from which transformers builds a block-diagonal causal mask
(``masking_utils.find_packed_sequence_indices``), so packed examples never attend to each other.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

IGNORE_INDEX = -100
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>")
BATCHING_MODES = ("none", "group", "pack")


@dataclass
class TokenizeStats:
    examples: int = 0
    kept: int = 0
    truncated: int = 0  # kept, but cut at max_length
    dropped_no_labels: int = 0  # nothing of the answer left after truncation
    tokens: int = 0
    label_tokens: int = 0


def _render(tokenizer, conversation, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=add_generation_prompt)


def _end_of_turn(tokenizer, turn_text: str) -> str | None:
    for t in END_OF_TURN_TOKENS:
        if t in turn_text:
            return t
    eos = getattr(tokenizer, "eos_token", None)
    return eos if eos and eos in turn_text else None


def assistant_spans(
    tokenizer, messages: Sequence[dict], system_prompt: str, train_on: str = "all"
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation (with the system prompt) and the character spans to train on."""
    if train_on not in ("all", "last"):
        raise ValueError(f"train_on must be 'all' or 'last', got {train_on!r}")
    if not system_prompt or not system_prompt.strip():
        # Without a system message SmolLM2's template inserts its own identity prompt.
        raise ValueError("system_prompt must be non-empty")
    conversation = [
        {"role": "system", "content": system_prompt},
        *({"role": m["role"], "content": m["content"]} for m in messages),
    ]
    full = _render(tokenizer, conversation, False)
    assistant_at = [i for i, m in enumerate(conversation) if m["role"] == "assistant"]
    if train_on == "last":
        assistant_at = assistant_at[-1:]
    spans = []
    for i in assistant_at:
        prefix = _render(tokenizer, conversation[:i], True)
        upto = _render(tokenizer, conversation[: i + 1], False)
        if not (upto.startswith(prefix) and full.startswith(upto)):
            raise ValueError("the chat template does not render conversations prefix-stably; cannot locate the answers")
        eot = _end_of_turn(tokenizer, upto[len(prefix):])
        end = upto.rfind(eot) + len(eot) if eot else len(upto)
        spans.append((len(prefix), max(end, len(prefix))))
    return full, spans


def _labels(ids: Sequence[int], offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[int]:
    """Label = token id for tokens starting inside a span, else IGNORE_INDEX."""
    labels = [IGNORE_INDEX] * len(ids)
    span_iter = iter(sorted(spans))
    span = next(span_iter, None)
    for k, (start, _end) in enumerate(offsets):
        while span is not None and start >= span[1]:
            span = next(span_iter, None)
        if span is None:
            break
        if span[0] <= start:
            labels[k] = ids[k]
    return labels


def tokenize_conversation(
    tokenizer,
    messages: Sequence[dict],
    *,
    system_prompt: str,
    max_length: int,
    train_on: str = "all",
) -> dict | None:
    """``{"input_ids", "labels"}`` (lists) truncated to ``max_length``; None if no label survives."""
    text, spans = assistant_spans(tokenizer, messages, system_prompt, train_on)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    labels = _labels(ids, enc["offset_mapping"], spans)
    ids, labels = ids[:max_length], labels[:max_length]
    if all(lab == IGNORE_INDEX for lab in labels):
        return None
    return {"input_ids": ids, "labels": labels}


def tokenize_examples(
    tokenizer, examples, *, system_prompt: str, max_length: int, train_on: str = "all", chunk: int = 256
) -> tuple[list[dict], TokenizeStats]:
    """Tokenise :class:`~modelserver.training.data.Example` objects (same result as
    :func:`tokenize_conversation` for each, batched through the fast tokenizer); dropped ones are counted."""
    stats = TokenizeStats()
    features = []
    examples = list(examples)
    for begin in range(0, len(examples), chunk):
        rendered = [
            assistant_spans(tokenizer, e.messages, system_prompt, train_on) for e in examples[begin:begin + chunk]
        ]
        if not rendered:
            continue
        enc = tokenizer([text for text, _ in rendered], add_special_tokens=False, return_offsets_mapping=True)
        for (_, spans), ids, offsets in zip(rendered, enc["input_ids"], enc["offset_mapping"]):
            stats.examples += 1
            labels = _labels(ids, offsets, spans)
            feat = {"input_ids": list(ids[:max_length]), "labels": labels[:max_length]}
            if all(lab == IGNORE_INDEX for lab in feat["labels"]):
                stats.dropped_no_labels += 1
                continue
            stats.truncated += len(ids) > max_length
            stats.kept += 1
            stats.tokens += len(feat["input_ids"])
            stats.label_tokens += sum(lab != IGNORE_INDEX for lab in feat["labels"])
            features.append(feat)
    return features, stats


# --------------------------------------------------------------------------- length grouping


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


# --------------------------------------------------------------------------- held-out loss


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
