"""Model inference: loading base models / LoRA adapters and reproducible batched generation.

No Django here.  torch / transformers / peft are imported lazily by the submodules' functions, so
``import modelserver.inference`` is cheap.  Where things are: ``params`` (what is asked and
returned), ``prompts`` (conversation -> input ids, end-of-turn tokens), ``adapters`` (which arm the
model computes), ``kvcache`` (the batch's KV cache: full-attention and sliding-window layers, and
the refusal of any other kind), ``decoding`` (sampler, decode loop), ``batching`` (which prompts share a
batch), ``generation`` (``generate``, ``regenerate``), ``provenance`` (what a response records),
``paths`` / ``gguf`` / ``fingerprints`` / ``loading`` / ``quantization`` / ``cache`` (finding,
converting, hashing, loading (4-bit optional) and keeping models), ``seeds`` (the one seed derivation).

Batched, reproducible chat generation with our own KV-cache decoding loop
-------------------------------------------------------------------------

Why not ``model.generate``?  With HF ``generate`` a batch shares one global RNG, so a row's
sampled tokens depend on which other rows share its batch and in which order.  Here every row
has its own ``torch.Generator`` seeded with the request's seed and takes exactly one
``torch.rand`` draw per sampled token, so its random stream depends only on its own seed.

Logits processing follows HF: repetition penalty (over the row's real prompt + generated tokens;
padding is never counted, unlike HF with a padded batch), then temperature (both bit-identical to
HF's processors, tested), then top-p with HF's ``TopPLogitsWarper`` rule (a token is kept unless
the tokens ranked above it already hold ``top_p`` of the mass; same kept set, tested).  top-k is
not used.  The token is then drawn by inverse CDF over the nucleus in descending-probability order
(``top_p == 1``: the whole vocabulary in id order).  This sampler is much cheaper than HF's
(full-vocabulary sort + ``torch.multinomial``, which draws one exponential per vocabulary entry)
but, for the same seed, draws different tokens than HF ``generate``.  Greedy decoding
(``do_sample=False``) equals ``model.generate(do_sample=False)`` token for token (tested).

Batching: prompts are sorted by token length and cut into batches of at most ``batch_size``; a
much longer prompt starts its own batch when it would add more padded KV-cache cells than half the
model's weights (``plan_batches`` / ``padding_budget``).  Where the model's attention is SDPA over
full-attention layers, such length groups then share one batch (``grouping``): the linear layers run
every row together and each group's attention reads only its own columns, so the weights are read
once a step for all of them and no row reads another group's padding.  Each prompt is prefilled on its own (no
padding: exactly what a batch of one computes): its system turn (``prompts.system_prefix_length``, the
longest common prefix with the system message rendered alone, a property of the prompt only) from a
cache computed once per ``generate`` call, then the rest of the prompt in one forward on a copy of it
(``kvcache.PrefixCaches``; ``prefix_cache=False`` prefills the whole prompt in one forward, as before).
Rows whose suffixes have equal length are not prefilled together: on SmolLM2-135M a (k, S) forward
differs from k (1, S) forwards by up to ~1e-4 in the logits, which would break batch invariance.  The
per-row caches are packed, left-padded,
into one preallocated KV buffer, so decoding appends in place instead of re-concatenating the
cache every step.  Each layer keeps what transformers' ``DynamicCache(config=...)`` would keep: all
columns for full attention, the last ``window - 1`` for a sliding-window layer (Mistral, Gemma 2/3);
other layer kinds are refused when the model is loaded (``kvcache``).  Padding is masked by
``attention_mask`` (never by token id: the pad token is ``<|im_end|>``, the end-of-turn token) and
position ids come from the mask.  A row stops at end of turn (eos / ``<|im_end|>``) or after
``max_new_tokens``; finished rows are dropped from the batch at once (their cache rows removed) and
padding columns no remaining row needs are trimmed, so finished rows cost nothing.  Outputs are returned in input order.

What is and is not bit-identical
--------------------------------
* Same device/dtype, same request, same batch composition: identical text.
* CPU float32, different batch composition (other rows, batch size, amount of left padding, rows
  dropping out): the prefill is computed per row and split at the same place in any batch, so the
  first token's logits are exactly those of a batch of one (the split prefill differs from a one-shot
  prefill by ~3e-5 in the logits on SmolLM2-135M, so the provenance records which was used, ``prefill``); each later decoding step runs batched with left padding, where BLAS kernel
  choice by matrix shape and masked padding columns can move logits by ~1e-6 relative.  Since a
  row's random draws do not depend on the batch, a token changes only when such a tiny difference
  flips a near tie (greedy) or a draw lands within ~1e-6 of a boundary between two tokens'
  probability intervals (sampling).  The tiny-model tests assert exact equality across batch
  compositions; for SmolLM2-135M, ``bench/generation.py`` counts how many of 32 responses are
  identical at batch 8/16/32 to batch 1 (see bench/RESULTS.md).
* GPU bfloat16: not batch-invariant (reduced-precision accumulation order depends on the batch
  shape); expect drift after some tokens between batch layouts.
* :func:`regenerate` re-runs one response from its provenance alone (as a batch of one, with the
  prefill the provenance records; none recorded: one-shot, as every response was made before); on
  CPU fp32 this reproduces the original text whenever the bullet above holds for it (tested).
"""

import os

# No model hub at run time.  huggingface_hub reads this when it is first imported; every
# submodule (and the training package, through them) is imported after this line.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from .cache import clear_model_cache, get_cached_model  # noqa: E402
from .errors import ModelLoadError, TransientGenerationError  # noqa: E402
from .fingerprints import sha256_of_adapter, sha256_of_weights  # noqa: E402
from .generation import ProvenanceMismatch, generate, regenerate  # noqa: E402
from .loading import LoadedModel, load_model, resolve_base, resolve_device  # noqa: E402
from .params import DEFAULT_SYSTEM_PROMPT, GenerationOutput, GenerationParams, GenerationRequest  # noqa: E402
from .paths import check_adapter_dir  # noqa: E402
from .prompts import END_OF_TURN_TOKENS  # noqa: E402
from .seeds import request_seed  # noqa: E402

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "END_OF_TURN_TOKENS",
    "GenerationOutput",
    "GenerationParams",
    "GenerationRequest",
    "LoadedModel",
    "ModelLoadError",
    "ProvenanceMismatch",
    "TransientGenerationError",
    "check_adapter_dir",
    "clear_model_cache",
    "generate",
    "get_cached_model",
    "load_model",
    "regenerate",
    "request_seed",
    "resolve_base",
    "resolve_device",
    "sha256_of_adapter",
    "sha256_of_weights",
]
