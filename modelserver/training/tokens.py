"""Tokenising conversations for supervised fine-tuning: which tokens are labels.

torch is not needed here.

Labels are ``-100`` everywhere except the assistant's tokens: the content of each trained
assistant turn plus its end-of-turn token (``<|im_end|>`` for SmolLM2), not the newline the
template adds after it (generation stops at end of turn and never produces that newline).
Spans are found on the rendered text (the template is rendered up to the assistant header
and up to the end of the turn) and mapped to tokens with the fast tokenizer's offsets, so
BPE merges across the prompt/answer boundary cannot shift them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modelserver.inference.prompts import END_OF_TURN_TOKENS

IGNORE_INDEX = -100


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
