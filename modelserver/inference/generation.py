"""``generate`` (a batch of requests on one arm, outputs with provenance) and ``regenerate`` (one
response again, from its provenance alone).

The module is called ``generation`` rather than ``generate`` so that the package's ``generate``
function and a submodule of the same name never shadow each other.

Prefill: by default (``prefix_cache=True``) each prompt's system turn (``prompts.system_prefix_length``)
is prefilled once per call and every row prefills only the rest of its prompt on a copy of that cache,
in every batch, a batch of one included, so batch invariance holds as before.  The mode is recorded in
each response's provenance (``prefill``, ``prefix_tokens``): split prefill can differ from a one-shot
prefill in the last bits, so :func:`regenerate` uses the mode a response was made with, and a response
recorded before the key existed is remade with the one-shot prefill it was made with.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

from . import grouping
from .adapters import use_adapter
from .batching import padding_budget, plan_batches
from .decoding import decode_batch
from .kvcache import PrefixCaches, check_supported
from .errors import TransientGenerationError
from .loading import LoadedModel
from .params import GenerationOutput, GenerationParams, GenerationRequest, ProgressFn
from .prompts import encode_prompt, render_prompt, stop_token_ids, system_prefix_length, system_turn_ids
from .provenance import (
    PREFILL_FULL,
    PREFILL_MODES,
    PREFILL_SYSTEM_PREFIX,
    ProvenanceMismatch,
    mismatches,
    run_provenance,
    sha256_hex,
)

__all__ = ["ProvenanceMismatch", "generate", "regenerate"]


def generate(
    loaded: LoadedModel,
    requests: Sequence[GenerationRequest],
    params: GenerationParams | None = None,
    adapter: str | None = None,
    batch_size: int = 16,
    progress: ProgressFn | None = None,
    prefix_cache: bool = True,
) -> list[GenerationOutput]:
    """Generate one response per request; ``adapter=None`` is the baseline (adapters disabled).

    ``prefix_cache``: prefill the shared system turn once (see the module docstring); ``False`` prefills
    each prompt in one forward, as responses made before the option existed were.

    ``progress(done, total)`` is called each time a row finishes.  Outputs are in input order.
    Raises ``ValueError`` for bad requests and :class:`TransientGenerationError` on CUDA OOM.
    """
    import torch

    params = params or GenerationParams()
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    requests = list(requests)
    if not requests:
        return []
    tok = loaded.tokenizer
    stops = stop_token_ids(loaded)
    encoded = [encode_prompt(tok, r.messages, params.system_prompt) for r in requests]
    if prefix_cache:
        system_ids = system_turn_ids(tok, params.system_prompt)
        prefix_lengths = [system_prefix_length(ids, system_ids) for _, ids in encoded]
    else:
        prefix_lengths = [0] * len(encoded)
    # One store per call: one call is one arm, so no adapter's KV can reach the baseline or another call.
    prefixes = PrefixCaches(arm=adapter)
    lengths = [len(ids) for _, ids in encoded]
    groups = plan_batches(lengths, batch_size, padding_budget(loaded.model))
    # Length groups share a batch where the model's attention can read each group's own columns.
    together = grouping.supported(loaded.model, check_supported(getattr(loaded.model, "config", None)))
    batches = grouping.pack(groups, lengths, batch_size, params.max_new_tokens) if together else [[g] for g in groups]
    common = run_provenance(loaded, params, adapter, batch_size)
    common["prefill"] = PREFILL_SYSTEM_PREFIX if prefix_cache else PREFILL_FULL
    outputs: list[GenerationOutput | None] = [None] * len(requests)
    done = 0
    total = len(requests)

    def row_done(_):
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    grouped = grouping.grouped_attention(loaded.model) if together else nullcontext()
    with loaded.lock, use_adapter(loaded, adapter), torch.inference_mode(), grouped:
        for packed in batches:
            batch = [i for group in packed for i in group]
            timings: dict = {}
            try:
                results = decode_batch(
                    loaded.model,
                    [encoded[i][1] for i in batch],
                    [requests[i].seed for i in batch],
                    params,
                    stop_ids=stops,
                    device=loaded.device,
                    on_row_done=row_done,
                    prefix_lengths=[prefix_lengths[i] for i in batch],
                    prefixes=prefixes,
                    timings=timings,
                    groups=[k for k, group in enumerate(packed) for _ in group],
                )
            except torch.cuda.OutOfMemoryError as exc:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                raise TransientGenerationError(
                    f"CUDA out of memory generating a batch of {len(batch)}; retry with a smaller batch_size"
                ) from exc
            for i, (ids, reason, seconds) in zip(batch, results):
                req = requests[i]
                prompt_text, prompt_ids = encoded[i]
                text = tok.decode(ids, skip_special_tokens=True).strip()
                provenance = {
                    **common,
                    "key": req.key,
                    "seed": req.seed,
                    "prompt_sha256": sha256_hex(prompt_text),
                    "prompt_tokens": len(prompt_ids),
                    "prefix_tokens": prefix_lengths[i],
                    "output_tokens": len(ids),
                    "output_sha256": sha256_hex(text),
                    "finish_reason": reason,
                    "batch_rows": len(batch),
                    "seconds": round(seconds, 4),
                    "prefill_seconds": round(timings["prefill_seconds"], 4),  # the row's batch's
                }
                outputs[i] = GenerationOutput(
                    key=req.key,
                    text=text,
                    prompt_tokens=len(prompt_ids),
                    output_tokens=len(ids),
                    finish_reason=reason,
                    seconds=seconds,
                    provenance=provenance,
                )
    return outputs  # type: ignore[return-value]


def regenerate(
    loaded: LoadedModel,
    provenance: dict[str, Any],
    messages: Sequence[dict],
    *,
    strict: bool = True,
) -> GenerationOutput:
    """Re-run one response from its provenance (params, seed, adapter) and the original messages.

    Raises :class:`ProvenanceMismatch` when :func:`~.provenance.mismatches` finds the loaded model
    or the prompt differ, or the prefill the response records cannot be repeated.  Runs as a batch
    of one, with the response's prefill mode (none recorded: the one-shot prefill of the time).
    """
    params = GenerationParams.from_dict(provenance["params"])
    text = render_prompt(loaded.tokenizer, messages, params.system_prompt)
    problems = mismatches(loaded, provenance, text, strict=strict)
    mode = provenance.get("prefill", PREFILL_FULL)
    if mode not in PREFILL_MODES:
        problems.append(f"unknown prefill mode {mode!r} (known: {', '.join(PREFILL_MODES)})")
    elif mode == PREFILL_SYSTEM_PREFIX and "prefix_tokens" in provenance:
        _, ids = encode_prompt(loaded.tokenizer, messages, params.system_prompt)
        now = system_prefix_length(ids, system_turn_ids(loaded.tokenizer, params.system_prompt))
        if now != provenance["prefix_tokens"]:
            problems.append(f"system prefix is {now} tokens, the response was made with {provenance['prefix_tokens']}")
    if problems:
        raise ProvenanceMismatch("; ".join(problems))
    key = provenance.get("key", "regenerated")
    request = GenerationRequest(key=key, messages=list(messages), seed=provenance["seed"])
    return generate(
        loaded, [request], params, adapter=provenance.get("adapter"), batch_size=1,
        prefix_cache=mode == PREFILL_SYSTEM_PREFIX,
    )[0]
