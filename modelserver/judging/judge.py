"""Judging with a local model (the bundled one or a local Hugging Face directory): batched, greedy
read-out of probabilities, with provenance.

The read-out is deterministic: no sampling, one forward pass per batch plus the answers' teacher-forced
tokens (:mod:`.scoring`); ``seed`` is recorded and seeds torch, but nothing here draws from it. k samples
per item only mean something for a judge that samples text (an HTTP judge at temperature > 0); judged
by probabilities, k reads would be k copies of one distribution.

Items carry only what a judge may see (:class:`JudgeItem`, :class:`PairItem`): the conversation and the
response text(s). ``items_from_rows`` reads exactly those fields from a dict and nothing else, so an
arm label, model name or adapter path beside them never reaches a prompt.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from modelserver.corpus import validate_messages
from modelserver.inference.adapters import use_adapter
from modelserver.inference.batching import padding_budget, plan_batches
from modelserver.inference.cache import get_cached_model
from modelserver.inference.errors import TransientGenerationError
from modelserver.inference.loading import LoadedModel
from modelserver.inference.prompts import render_prompt
from modelserver.inference.provenance import library_versions, sha256_hex

from .answers import PAIR_SPACE, AnswerSpace, answer_space, check_criterion
from .scoring import JudgeScore, answer_token_ids, score_batch, split_prefix
from .templates import CRITERION_TEMPLATE, PAIR_TEMPLATE, JudgeTemplate, render_criterion, render_pair

SCORING_RULE = ("local-probabilities/1: one forward pass over the left-padded prompts (ending before the answer "
                "prefix's trailing space where the answers carry it, scoring.split_prefix); each valid answer's "
                "tokens teacher-forced over its KV cache; P(v) = P(tokens of v) x P(next token does not start "
                "with a letter or digit); renormalised over valid values, the rest reported as outside mass")
ORDERS = ("AB", "BA")

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class JudgeItem:
    key: str
    messages: list[dict]
    response: str


@dataclass(frozen=True)
class PairItem:
    key: str
    messages: list[dict]
    first: str
    second: str


def items_from_rows(rows: Iterable[dict]) -> list[JudgeItem]:
    """JudgeItems from dicts with ``id``, ``messages`` (or ``text``: one user turn) and ``response``;
    every other field is left behind. Raises ValueError naming the row."""
    items, seen = [], set()
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or "id" not in row:
            raise ValueError(f"item {n}: needs an 'id'")
        key = str(row["id"])
        if key in seen:
            raise ValueError(f"item {n}: duplicate id {key!r}")
        seen.add(key)
        messages = row.get("messages")
        if messages is None and isinstance(row.get("text"), str):
            messages = [{"role": "user", "content": row["text"]}]
        try:
            messages = validate_messages(messages)
        except ValueError as exc:
            raise ValueError(f"item {key!r}: {exc}") from None
        response = row.get("response")
        if not isinstance(response, str) or not response.strip():
            raise ValueError(f"item {key!r}: needs a non-empty 'response'")
        items.append(JudgeItem(key, messages, response))
    if not items:
        raise ValueError("no items to judge")
    return items


def _loaded(model_ref: str | LoadedModel, device: str, dtype: str | None) -> LoadedModel:
    if isinstance(model_ref, LoadedModel):
        return model_ref
    return get_cached_model(model_ref, device=device, dtype=dtype)


def _provenance(loaded: LoadedModel, template: JudgeTemplate, seed: int, batch_size: int) -> dict:
    return {
        "judge": "local",
        "scoring": SCORING_RULE,
        "base_ref": loaded.base_ref,
        "model_sha256": loaded.base_sha256,
        "chat_template_sha256": loaded.chat_template_sha256,
        "template": template.identity(),
        "versions": library_versions(("torch", "transformers")),
        "device": loaded.device,
        "dtype": loaded.dtype,
        "quantization": loaded.quantization,
        "seed": seed,
        "batch_size": batch_size,
    }


def encode_judge_prompt(tok, messages: list[dict], prefix: str) -> tuple[str, list[int]]:
    """The rendered messages (system first) through the chat template, the judge's turn opened and its
    answer prefix written (``scoring.split_prefix``: the template's, perhaps without its trailing space):
    the text and its ids."""
    text = render_prompt(tok, messages[1:], messages[0]["content"]) + prefix
    return text, list(tok(text, add_special_tokens=False)["input_ids"])


def _run(loaded: LoadedModel, prompts: list[list[dict]], template: JudgeTemplate, space: AnswerSpace,
         batch_size: int, common: dict, progress: ProgressFn | None, done: list[int], total: int) -> list[dict]:
    """Score every rendered prompt (system + user messages) on one answer space; results in input order."""
    import torch

    tok = loaded.tokenizer
    prefix, lead = split_prefix(loaded, space, template.answer_prefix)
    encoded = [encode_judge_prompt(tok, p, prefix) for p in prompts]
    answers = answer_token_ids(loaded, space, prefix, lead)
    out: list[dict | None] = [None] * len(prompts)
    for batch in plan_batches([len(ids) for _, ids in encoded], batch_size, padding_budget(loaded.model)):
        started = time.perf_counter()
        try:
            results = score_batch(loaded, [encoded[i][1] for i in batch], space, answers)
        except torch.cuda.OutOfMemoryError as exc:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise TransientGenerationError(
                f"CUDA out of memory judging a batch of {len(batch)}; retry with a smaller batch_size") from exc
        seconds = time.perf_counter() - started
        for i, result in zip(batch, results, strict=True):
            text, ids = encoded[i]
            result["provenance"] = {**common, "prompt_sha256": sha256_hex(text), "prompt_tokens": len(ids),
                                    "answer_lead": lead,
                                    "batch_rows": len(batch), "seconds": round(seconds, 4)}
            out[i] = result
        done[0] += len(batch)
        if progress is not None:
            progress(done[0], total)
    return out  # type: ignore[return-value]


def judge_items(
    model_ref: str | LoadedModel,
    items: Sequence[JudgeItem],
    criteria: Sequence[dict],
    template: JudgeTemplate = CRITERION_TEMPLATE,
    batch_size: int = 8,
    device: str = "auto",
    seed: int = 0,
    *,
    dtype: str | None = None,
    progress: ProgressFn | None = None,
) -> list[JudgeScore]:
    """Every item judged on every criterion, one criterion per prompt; item-major, criteria in order.

    ``model_ref`` is "bundled", a local model directory (loaded once per process through
    ``modelserver.inference.cache``) or an already loaded model; adapters are switched off while judging.
    """
    import torch

    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    items = list(items)
    criteria = [check_criterion(c) for c in criteria]
    if not items or not criteria:
        raise ValueError("judge_items needs at least one item and one criterion")
    loaded = _loaded(model_ref, device, dtype)
    common = _provenance(loaded, template, seed, batch_size)
    torch.manual_seed(seed)
    per_criterion, done, total = [], [0], len(items) * len(criteria)
    with loaded.lock, use_adapter(loaded, None), torch.inference_mode():
        for criterion in criteria:
            prompts = [render_criterion(template, criterion, it.messages, it.response) for it in items]
            per_criterion.append(_run(loaded, prompts, template, answer_space(criterion), batch_size, common,
                                      progress, done, total))
    return [JudgeScore(key=it.key, criterion=c["key"], method="local-probabilities", **per_criterion[j][i])
            for i, it in enumerate(items) for j, c in enumerate(criteria)]


def preferred(letter: str | None, order: str) -> str | None:
    """A positional answer (A, B, S) as the response it prefers, given which was shown as A."""
    if letter is None:
        return None
    if letter == "S":
        return "tie"
    return "first" if (letter == "A") == (order == "AB") else "second"


def judge_pairs(
    model_ref: str | LoadedModel,
    pairs: Sequence[PairItem],
    questions: Sequence[dict],
    template: JudgeTemplate = PAIR_TEMPLATE,
    batch_size: int = 8,
    device: str = "auto",
    seed: int = 0,
    *,
    orders: Sequence[str] = ORDERS,
    dtype: str | None = None,
    progress: ProgressFn | None = None,
) -> list[JudgeScore]:
    """Every pair judged on every question ({key, question}) in each of ``orders`` ("AB": the first
    response shown as A; "BA": swapped, for position-swap consistency). Pair-major, then question, then order."""
    import torch

    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if not orders or any(o not in ORDERS for o in orders):
        raise ValueError(f"orders must be a non-empty subset of {ORDERS}")
    pairs = list(pairs)
    if not pairs or not questions:
        raise ValueError("judge_pairs needs at least one pair and one question")
    loaded = _loaded(model_ref, device, dtype)
    common = _provenance(loaded, template, seed, batch_size)
    torch.manual_seed(seed)
    cells = [(p, q, o) for p in pairs for q in questions for o in orders]
    prompts = [render_pair(template, q["question"], p.messages, *((p.first, p.second) if o == "AB"
                                                                  else (p.second, p.first))) for p, q, o in cells]
    with loaded.lock, use_adapter(loaded, None), torch.inference_mode():
        results = _run(loaded, prompts, template, PAIR_SPACE, batch_size, common, progress, [0], len(prompts))
    return [JudgeScore(key=p.key, criterion=q["key"], method="local-probabilities", order=o,
                       preferred=preferred(r["value"], o), **r) for (p, q, o), r in zip(cells, results, strict=True)]
