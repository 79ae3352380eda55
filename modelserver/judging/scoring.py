"""Reading a judge's answer as probabilities over the valid values (G-Eval's read-out), local or HTTP.

Local model, per batch of prompts (each ending with the template's answer prefix, in the judge's
turn; left-padded, attention mask, position ids from the mask, as generation does): ONE forward pass
over the prompts gives the next-token distribution at the answer position, and its KV cache is kept.
Each valid answer is then scored by teacher forcing its token sequence over that cache (a pass of one
or two tokens, the cache cropped back after each), so an answer of several tokens ("10" is "1", "0"
in SmolLM2's tokenizer) gets the probability of its whole sequence. An answer is read when the model
writes its tokens and then a token that does not go on with the word or number (end of turn, space,
punctuation: any token whose text does not start with a letter or digit): P(v) = P(tokens of v) x
P(next token ends the answer). So "1" and "10" are disjoint events, and "15" on a 1-10 scale is mass
outside the valid values, not a vote for 1. Only the tokenizer's own spelling of each answer after
the prefix is scored (an extra space or a sentence first is outside mass), which is why
``outside_mass`` is reported beside the renormalised distribution.

HTTP judge with logprobs: only the first answer token's top logprobs are returned, so the mass of
"1" cannot be split between "1" and "10". Logprobs are used when the valid answers are prefix-free
(no answer starts another: scales up to 9 points, up to 9 options, A/B/S) and at least one of them
is listed; otherwise the text is parsed (``answers.parse_answer``) and the method says so.
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from .answers import AnswerSpace

TOP_TOKENS = 5
_CONTINUES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class JudgeScore:
    """One judged (item, question): the distribution over valid values, or a parsed text answer."""

    key: str
    criterion: str
    method: str  # "local-probabilities", "http-logprobs" or "http-text"
    value: object  # argmax (probabilities) or the parsed answer; None: unparseable, counted, never guessed
    values: list = field(default_factory=list)
    probabilities: list[float] | None = None  # raw mass of each valid value
    distribution: list[float] | None = None  # the same renormalised over valid values (sums to 1)
    outside_mass: float | None = None  # 1 - sum(probabilities): what fell outside the valid values
    expected: float | None = None  # sum(value x distribution); only where values are ordered
    top_tokens: list = field(default_factory=list)  # [token text, probability] at the answer position
    raw_text: str | None = None
    order: str | None = None  # pairwise: "AB" (first shown as A) or "BA"
    preferred: str | None = None  # pairwise: "first", "second" or "tie", the letter mapped through the order
    provenance: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def summarise(space: AnswerSpace, raw: Sequence[float]) -> dict:
    """Distribution, outside mass, expected value and argmax from the raw mass of each valid value."""
    raw = [max(0.0, float(p)) for p in raw]
    total = sum(raw)
    out = {"values": list(space.values), "probabilities": raw, "outside_mass": max(0.0, 1.0 - total),
           "distribution": None, "expected": None, "value": None}
    if total <= 0 or not math.isfinite(total):
        return out
    dist = [p / total for p in raw]
    out["distribution"] = dist
    out["value"] = space.values[max(range(len(dist)), key=lambda i: (dist[i], -i))]
    if space.ordered:
        out["expected"] = sum(v * p for v, p in zip(space.values, dist, strict=True))
    return out


def prefix_free(texts: Sequence[str]) -> bool:
    return not any(a != b and b.startswith(a) for a in texts for b in texts)


def from_top_logprobs(space: AnswerSpace, top: Sequence[dict]) -> dict | None:
    """Distribution from an HTTP judge's first-token top logprobs, or None when they cannot give one
    (answers not prefix-free, or no valid answer listed); see the module docstring."""
    if not prefix_free(space.texts):
        return None
    raw = [0.0] * len(space.values)
    found = False
    for entry in top:
        token = str(entry.get("token", "")).strip()
        if token in space.texts:
            raw[space.texts.index(token)] += math.exp(float(entry["logprob"]))
            found = True
    return summarise(space, raw) if found else None


def continues_mask(loaded):
    """Boolean mask over the vocabulary: tokens whose text starts with a letter or digit (they would
    go on with an answer's word or number). Computed once per loaded model."""
    import torch

    mask = _CONTINUES.get(loaded)
    if mask is None:
        tok = loaded.tokenizer
        vocab = loaded.model.get_output_embeddings().weight.shape[0]
        special = set(tok.all_special_ids)
        flags = [False] * vocab
        for i in range(min(vocab, len(tok))):
            if i not in special:
                text = tok.decode([i])
                flags[i] = bool(text) and text[0].isalnum()
        mask = torch.tensor(flags, dtype=torch.bool, device=loaded.device)
        _CONTINUES[loaded] = mask
    return mask


def split_prefix(loaded, space: AnswerSpace, prefix: str) -> tuple[str, str]:
    """(the prompt's end, the answers' lead): the template's answer prefix as it is, unless an answer
    merges with its trailing space (" A" is one token to SmolLM2's tokenizer, so "Answer: A" is
    "Answer", ":", " A"); then the prompt ends before the space and every answer is read with it (" A",
    " B", " S"), the tokens a model writes there. The template's text and hash do not change."""
    try:
        answer_token_ids(loaded, space, prefix)
        return prefix, ""
    except ValueError:
        stripped = prefix.rstrip()
        if stripped == prefix:
            raise
        lead = prefix[len(stripped):]
        answer_token_ids(loaded, space, stripped, lead)
        return stripped, lead


def answer_token_ids(loaded, space: AnswerSpace, context: str = "", lead: str = "") -> list[list[int]]:
    """Each answer's token ids as they follow ``context`` (the template's answer prefix), checked to make
    disjoint events under the read-out rule. ValueError where the prefix and an answer merge into other
    tokens (a tokenizer with " 7" as one token after a prefix that ends in a space): that template does
    not fit that tokenizer."""
    tok = loaded.tokenizer
    before = list(tok(context, add_special_tokens=False)["input_ids"]) if context else []
    seqs = []
    for text in space.texts:
        ids = list(tok(context + lead + text, add_special_tokens=False)["input_ids"])
        if ids[: len(before)] != before or len(ids) == len(before):
            raise ValueError(f"The answer {text!r} does not tokenize apart from the answer prefix {context!r}.")
        seqs.append(ids[len(before):])
    mask = continues_mask(loaded)
    for i, sa in enumerate(seqs):
        for j, sb in enumerate(seqs):
            if i != j and sb[: len(sa)] == sa and (len(sb) == len(sa) or not bool(mask[sb[len(sa)]])):
                raise ValueError(f"Answers {space.texts[i]!r} and {space.texts[j]!r} are not told apart by "
                                 f"their tokens {sa} and {sb}.")
    return seqs


def score_batch(loaded, prompts: Sequence[list[int]], space: AnswerSpace, answers: list[list[int]]) -> list[dict]:
    """Per prompt: ``summarise``'s fields plus ``top_tokens``; the caller holds the model's lock and
    the adapter context, and runs this under ``torch.inference_mode``."""
    import torch

    model, tok, device = loaded.model, loaded.tokenizer, loaded.device
    rows, width = len(prompts), max(len(p) for p in prompts)
    pad = tok.pad_token_id
    input_ids = torch.full((rows, width), pad, dtype=torch.long)
    mask = torch.zeros((rows, width), dtype=torch.long)
    for r, ids in enumerate(prompts):
        input_ids[r, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        mask[r, width - len(ids):] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True)
    first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
    cache = out.past_key_values
    croppable = getattr(cache, "is_croppable", True) and hasattr(cache, "crop")
    lengths = mask.sum(-1, keepdim=True)
    continues = continues_mask(loaded)
    raw = torch.zeros((rows, len(answers)), dtype=torch.float64)
    for a, seq in enumerate(answers):
        steps = len(seq)
        ids = torch.tensor(seq, dtype=torch.long, device=device).expand(rows, steps)
        here = cache if croppable else copy.deepcopy(cache)
        cont = model(
            input_ids=ids,
            attention_mask=torch.cat([mask, torch.ones((rows, steps), dtype=mask.dtype, device=device)], dim=1),
            position_ids=lengths + torch.arange(steps, device=device),
            past_key_values=here,
            use_cache=True,
        )
        if croppable:
            cache.crop(-steps)  # negative: drop the answer's tokens again (transformers 5)
        logp = torch.log_softmax(cont.logits.float(), dim=-1)  # (rows, steps, vocab)
        seq_logp = first[:, seq[0]].double()
        for j in range(1, steps):
            seq_logp = seq_logp + logp[:, j - 1, seq[j]].double()
        ends = 1.0 - logp[:, -1, :].exp().masked_fill(~continues, 0.0).sum(-1).double()
        raw[:, a] = seq_logp.exp().cpu() * ends.clamp(min=0.0).cpu()
    top_p, top_i = first.exp().topk(min(TOP_TOKENS, first.shape[-1]), dim=-1)
    results = []
    for r in range(rows):
        summary = summarise(space, raw[r].tolist())
        summary["top_tokens"] = [[tok.decode([int(i)]), round(float(p), 6)] for p, i in zip(top_p[r], top_i[r])]
        results.append(summary)
    return results
