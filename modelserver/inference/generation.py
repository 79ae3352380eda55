"""Batched, reproducible chat generation with our own KV-cache decoding loop.

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
model's weights (``plan_batches`` / ``padding_budget``).  Each prompt is prefilled on its own (no
padding: exactly what a batch of one computes) and the per-row caches are packed, left-padded,
into one preallocated KV buffer, so decoding appends in place instead of re-concatenating the
cache every step.  Padding is masked by ``attention_mask`` (never by token id: the pad token is
``<|im_end|>``, the end-of-turn token) and position ids come from the mask.  A row stops at end
of turn (eos / ``<|im_end|>``) or after ``max_new_tokens``; finished rows are dropped from the
batch at once (their cache rows removed) and padding columns no remaining row needs are trimmed,
so finished rows cost nothing.  Outputs are returned in input order.

What is and is not bit-identical
--------------------------------
* Same device/dtype, same request, same batch composition: identical text.
* CPU float32, different batch composition (other rows, batch size, amount of left padding, rows
  dropping out): the prefill is computed per row, so the first token's logits are exactly those of
  a batch of one; each later decoding step runs batched with left padding, where BLAS kernel
  choice by matrix shape and masked padding columns can move logits by ~1e-6 relative.  Since a
  row's random draws do not depend on the batch, a token changes only when such a tiny difference
  flips a near tie (greedy) or a draw lands within ~1e-6 of a boundary between two tokens'
  probability intervals (sampling).  The tiny-model tests assert exact equality across batch
  compositions; for SmolLM2-135M, ``bench/generation.py`` counts how many of 32 responses are
  identical at batch 8/16/32 to batch 1 (see bench/RESULTS.md).
* GPU bfloat16: not batch-invariant (reduced-precision accumulation order depends on the batch
  shape); expect drift after some tokens between batch layouts.
* :func:`regenerate` re-runs one response from its provenance alone (as a batch of one); on CPU
  fp32 this reproduces the original text whenever the bullet above holds for it (tested).
"""

from __future__ import annotations

import contextlib
import hashlib
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .errors import TransientGenerationError
from .loading import LoadedModel

DEFAULT_SYSTEM_PROMPT = "You are a supportive assistant. Respond to the user's message."
DECODER_VERSION = "empatheval-kv-loop/1"
SEEDING = (
    "per-row torch.Generator(device).manual_seed(seed); one torch.rand draw per sampled token, "
    "inverse CDF over the top-p nucleus sorted by descending probability"
)
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>")

ProgressFn = Callable[[int, int], None]


# --------------------------------------------------------------------------- data classes


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    do_sample: bool = True
    system_prompt: str = DEFAULT_SYSTEM_PROMPT

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {self.max_new_tokens!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r} (use do_sample=False for greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty!r}")
        if not isinstance(self.system_prompt, str) or not self.system_prompt.strip():
            raise ValueError("system_prompt must be a non-empty string (without one the chat template injects its own)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GenerationParams:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"Unknown generation parameter(s): {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class GenerationRequest:
    key: str
    messages: list[dict]
    seed: int


@dataclass(frozen=True)
class GenerationOutput:
    key: str
    text: str
    prompt_tokens: int
    output_tokens: int  # generated tokens, including the end-of-turn token when one was produced
    finish_reason: str  # "stop" (end of turn) or "length" (max_new_tokens)
    seconds: float  # from the start of the row's batch until the row finished
    provenance: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- prompts


def validate_messages(messages: Sequence[dict]) -> list[dict]:
    """A conversation of user/assistant turns ending with a user turn (the system prompt comes from params)."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise ValueError(f"message {i} must be a dict with a string 'content'")
        role = m.get("role")
        if role == "system":
            raise ValueError("messages must not contain a system message; set GenerationParams.system_prompt")
        if role not in ("user", "assistant"):
            raise ValueError(f"message {i} has unsupported role {role!r} (use 'user' or 'assistant')")
        clean.append({"role": role, "content": m["content"]})
    if clean[-1]["role"] != "user":
        raise ValueError("the conversation must end with a user message")
    return clean


def render_prompt(tokenizer, messages: Sequence[dict], system_prompt: str) -> str:
    conversation = [{"role": "system", "content": system_prompt}, *validate_messages(messages)]
    return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer, messages: Sequence[dict], system_prompt: str) -> tuple[str, list[int]]:
    text = render_prompt(tokenizer, messages, system_prompt)
    # The chat template already contains every special token the model needs.
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text, list(ids)


def stop_token_ids(loaded: LoadedModel) -> list[int]:
    tok = loaded.tokenizer
    ids: set[int] = set()
    gen_cfg = getattr(loaded.model, "generation_config", None)
    eos = getattr(gen_cfg, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(e) for e in eos)
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    vocab = tok.get_vocab()
    for t in END_OF_TURN_TOKENS:
        if t in vocab:
            ids.add(int(vocab[t]))
    if not ids:
        raise ValueError("the tokenizer defines no end-of-turn / eos token")
    return sorted(ids)


# --------------------------------------------------------------------------- adapter selection


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


@contextlib.contextmanager
def use_adapter(loaded: LoadedModel, adapter: str | None):
    """Context in which ``loaded.model`` computes the baseline (``None``: adapters disabled) or one adapter."""
    model = loaded.model
    if adapter is None:
        if _is_peft(model):
            with model.disable_adapter():
                yield
        else:
            yield
        return
    if not _is_peft(model) or adapter not in model.peft_config:
        raise ValueError(f"adapter {adapter!r} is not loaded; loaded adapters: {loaded.adapter_names}")
    model.set_adapter(adapter)
    yield


# --------------------------------------------------------------------------- decoding


class _KVBuffer:
    """Factory for the cache layer class (kept lazy so importing this module does not import transformers)."""

    cls = None

    @classmethod
    def layer_class(cls):
        if cls.cls is None:
            from transformers.cache_utils import DynamicLayer

            class BufferLayer(DynamicLayer):
                """A DynamicLayer over a preallocated (rows, heads, capacity, dim) buffer.

                Appending a token writes in place instead of ``torch.cat``-ing the whole cache every
                step; ``keys`` / ``values`` are views of the filled part.  Rows can be dropped and
                leading (all-padding) columns trimmed.
                """

                def __init__(self, keys_buf, values_buf, length: int):
                    super().__init__()
                    self._k, self._v, self._len = keys_buf, values_buf, length
                    self.dtype, self.device = keys_buf.dtype, keys_buf.device
                    self.is_initialized = True
                    self._sync()

                def _sync(self):
                    self.keys = self._k[:, :, : self._len]
                    self.values = self._v[:, :, : self._len]

                def update(self, key_states, value_states, *args, **kwargs):
                    import torch

                    n = key_states.shape[-2]
                    if self._len + n > self._k.shape[2]:  # grow (not expected: capacity covers max_new_tokens)
                        extra = max(n, self._k.shape[2])
                        pad = (0, 0, 0, extra)
                        self._k = torch.nn.functional.pad(self._k, pad)
                        self._v = torch.nn.functional.pad(self._v, pad)
                    self._k[:, :, self._len : self._len + n] = key_states
                    self._v[:, :, self._len : self._len + n] = value_states
                    self._len += n
                    self._sync()
                    return self.keys, self.values

                def batch_select_indices(self, indices):
                    self._k, self._v = self._k[indices], self._v[indices]
                    self._sync()

                def trim_left(self, first: int):
                    self._k, self._v = self._k[:, :, first:], self._v[:, :, first:]
                    self._len -= first
                    self._sync()

                def crop(self, tokens_to_remove: int):
                    # Only assisted/speculative decoding crops a cache; our loop never does.
                    raise RuntimeError("BufferLayer.crop is not supported by the EmpathEval decoding loop")

            cls.cls = BufferLayer
        return cls.cls


def _prefill_rows(model, prompts, device, capacity_extra):
    """Prefill each prompt on its own (no padding, exactly what a batch of one computes) and pack the
    per-row caches right-aligned into one left-padded batch cache.

    Returns (cache, attention_mask, last-position logits (rows, vocab) float32)."""
    import torch
    from transformers import DynamicCache

    config = getattr(model, "config", None)
    width = max(len(p) for p in prompts)
    n = len(prompts)
    attention_mask = torch.zeros((n, width), dtype=torch.long, device=device)
    bufs = None
    logits = []
    for i, p in enumerate(prompts):
        ids = torch.tensor([p], dtype=torch.long, device=device)
        row_cache = DynamicCache(config=config)
        out = model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            position_ids=torch.arange(len(p), device=device)[None],
            past_key_values=row_cache,
            use_cache=True,
            logits_to_keep=1,
        )
        logits.append(out.logits[0, -1].float())
        if bufs is None:
            bufs = []
            for layer in row_cache.layers:
                _, heads, _, dim = layer.keys.shape
                shape = (n, heads, width + capacity_extra, dim)
                bufs.append((layer.keys.new_zeros(shape), layer.values.new_zeros(shape)))
        for (kb, vb), layer in zip(bufs, row_cache.layers):
            kb[i, :, width - len(p) : width] = layer.keys[0]
            vb[i, :, width - len(p) : width] = layer.values[0]
        attention_mask[i, width - len(p) :] = 1
        del row_cache, out
    layer_cls = _KVBuffer.layer_class()
    cache = DynamicCache(config=config)
    cache.layers = [layer_cls(kb, vb, width) for kb, vb in bufs]
    return cache, attention_mask, torch.stack(logits)


def _trim_left_padding(cache, attention_mask):
    """Drop leading columns that are padding for every remaining row."""
    real = attention_mask.any(dim=0)
    if not bool(real[0]) and bool(real.any()):
        first = int(real.int().argmax())
        for layer in cache.layers:
            layer.trim_left(first)
        return attention_mask[:, first:]
    return attention_mask


TOP_P_CANDIDATES = 256


def _process_logits(logits, seen, params: GenerationParams):
    """Repetition penalty then temperature, exactly as HF's processors.  ``logits`` float32 (rows, vocab)."""
    import torch

    if params.repetition_penalty != 1.0:
        penalised = torch.where(logits < 0, logits * params.repetition_penalty, logits / params.repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    if params.do_sample and params.temperature != 1.0:
        logits = logits / params.temperature
    return logits


def nucleus(scores, top_p: float):
    """Top-p candidates per row: (probs, token ids) sorted by descending probability, with the
    probabilities of tokens outside the nucleus set to 0.

    Same rule as HF's ``TopPLogitsWarper``: a token is kept unless the tokens ranked above it already
    hold at least ``top_p`` of the mass (the top token is always kept).  HF sorts the whole vocabulary;
    here the nucleus is searched in the top ``TOP_P_CANDIDATES`` tokens and only rows whose nucleus is
    larger fall back to a full sort.  With ``top_p == 1`` the whole vocabulary is returned in id order.
    """
    import torch

    probs = scores.softmax(dim=-1)
    vocab = probs.shape[-1]
    if top_p >= 1.0:
        ids = torch.arange(vocab, device=probs.device).expand_as(probs)
        return probs, ids
    k = min(TOP_P_CANDIDATES, vocab)
    cand_p, cand_i = probs.topk(k, dim=-1)
    keep = (cand_p.cumsum(dim=-1) - cand_p) < top_p
    keep[:, 0] = True
    if k < vocab and bool(keep[:, -1].any()):  # some nucleus is wider than the candidates: full sort
        cand_p, cand_i = probs.sort(dim=-1, descending=True)
        keep = (cand_p.cumsum(dim=-1) - cand_p) < top_p
        keep[:, 0] = True
    return cand_p.masked_fill(~keep, 0.0), cand_i


def sample_rows(scores, top_p: float, generators):
    """One token per row: inverse-CDF sampling over the row's nucleus with ONE ``torch.rand`` draw
    from the row's own generator.  Rows never share random numbers, so a row's draw depends only
    on its seed and on how many tokens it has generated."""
    import torch

    probs, ids = nucleus(scores, top_p)
    u = torch.cat([torch.rand(1, generator=g, device=probs.device) for g in generators]).to(probs.dtype)
    cdf = probs.cumsum(dim=-1)
    target = (u * cdf[:, -1]).unsqueeze(1)
    pos = torch.searchsorted(cdf, target, right=True).clamp_(max=probs.shape[-1] - 1)
    return ids.gather(1, pos).squeeze(1)


def decode_batch(
    model,
    prompts: list[list[int]],
    seeds: list[int],
    params: GenerationParams,
    *,
    stop_ids: Sequence[int],
    device: str,
    on_row_done: Callable[[int], None] | None = None,
) -> list[tuple[list[int], str, float]]:
    """Generate for one batch; returns (token ids, finish reason, seconds) per prompt, in prompt order."""
    import torch

    started = time.perf_counter()
    n = len(prompts)
    if any(not p for p in prompts):
        raise ValueError("empty prompt")
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    longest = max(len(p) for p in prompts)
    if max_pos and longest + params.max_new_tokens > max_pos:
        raise ValueError(
            f"prompt of {longest} tokens + max_new_tokens={params.max_new_tokens} exceeds the model's "
            f"context of {max_pos} tokens"
        )

    generators = []
    if params.do_sample:
        for s in seeds:
            g = torch.Generator(device=device)
            g.manual_seed(int(s))
            generators.append(g)
    stop = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    cache, attention_mask, first_logits = _prefill_rows(model, prompts, device, params.max_new_tokens)

    results: list[tuple[list[int], str, float] | None] = [None] * n
    generated: list[list[int]] = [[] for _ in range(n)]
    rows = list(range(n))  # original index of each row still in the batch
    seen = None
    if params.repetition_penalty != 1.0:
        vocab = first_logits.shape[-1]
        seen = torch.zeros((n, vocab), dtype=torch.bool, device=device)
        for i, p in enumerate(prompts):
            # ids >= vocab (if the embedding is larger than lm_head) cannot be generated: HF ignores them too
            seen[i, torch.tensor([t for t in p if t < vocab], dtype=torch.long, device=device)] = True

    logits = first_logits
    for step in range(params.max_new_tokens):
        scores = _process_logits(logits, seen, params)
        if params.do_sample:
            next_tokens = sample_rows(scores, params.top_p, generators)
        else:
            next_tokens = scores.argmax(dim=-1)
        if seen is not None:
            seen[torch.arange(len(rows), device=device), next_tokens] = True

        is_stop = torch.isin(next_tokens, stop)
        tokens_list = next_tokens.tolist()
        stop_list = is_stop.tolist()
        keep = []
        now = time.perf_counter() - started
        last_step = step == params.max_new_tokens - 1
        for j, orig in enumerate(rows):
            generated[orig].append(tokens_list[j])
            if stop_list[j] or last_step:
                results[orig] = (generated[orig], "stop" if stop_list[j] else "length", now)
                if on_row_done is not None:
                    on_row_done(orig)
            else:
                keep.append(j)
        if not keep:
            break
        if len(keep) < len(rows):
            keep_t = torch.tensor(keep, dtype=torch.long, device=device)
            cache.batch_select_indices(keep_t)
            attention_mask = attention_mask[keep_t]
            next_tokens = next_tokens[keep_t]
            if seen is not None:
                seen = seen[keep_t]
            if generators:
                generators = [generators[j] for j in keep]
            rows = [rows[j] for j in keep]
            attention_mask = _trim_left_padding(cache, attention_mask)
        attention_mask = torch.cat(
            [attention_mask, torch.ones((len(rows), 1), dtype=attention_mask.dtype, device=device)], dim=1
        )
        position_ids = attention_mask.sum(dim=-1, keepdim=True) - 1
        out = model(
            input_ids=next_tokens[:, None],
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
        )
        logits = out.logits[:, -1, :].float()
    return results  # type: ignore[return-value]


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


def _versions() -> dict:
    import peft
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
    }


def generate(
    loaded: LoadedModel,
    requests: Sequence[GenerationRequest],
    params: GenerationParams | None = None,
    adapter: str | None = None,
    batch_size: int = 16,
    progress: ProgressFn | None = None,
) -> list[GenerationOutput]:
    """Generate one response per request; ``adapter=None`` is the baseline (adapters disabled).

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

    encoded = []
    for r in requests:
        text, ids = encode_prompt(tok, r.messages, params.system_prompt)
        encoded.append((text, ids))
    batches = plan_batches([len(ids) for _, ids in encoded], batch_size, padding_budget(loaded.model))

    common = {
        "decoder": DECODER_VERSION,
        "seeding": SEEDING,
        "params": params.to_dict(),
        "adapter": adapter,
        "arm": "baseline" if adapter is None else "adapter",
        "base_ref": loaded.base_ref,
        "base_sha256": loaded.base_sha256,
        "adapter_sha256": None if adapter is None else loaded.adapter_sha256.get(adapter),
        "chat_template_sha256": loaded.chat_template_sha256,
        "versions": _versions(),
        "device": loaded.device,
        "dtype": loaded.dtype,
        "batch_size": batch_size,
    }
    outputs: list[GenerationOutput | None] = [None] * len(requests)
    done = 0
    total = len(requests)

    def row_done(_):
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    with loaded.lock, use_adapter(loaded, adapter), torch.inference_mode():
        for batch in batches:
            try:
                results = decode_batch(
                    loaded.model,
                    [encoded[i][1] for i in batch],
                    [requests[i].seed for i in batch],
                    params,
                    stop_ids=stops,
                    device=loaded.device,
                    on_row_done=row_done,
                )
            except torch.cuda.OutOfMemoryError as exc:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                raise TransientGenerationError(
                    f"CUDA out of memory generating a batch of {len(batch)}; retry with a smaller batch_size"
                ) from exc
            for i, (ids, reason, seconds) in zip(batch, results):
                req = requests[i]
                text = tok.decode(ids, skip_special_tokens=True).strip()
                prov = dict(common)
                prov.update(
                    {
                        "key": req.key,
                        "seed": req.seed,
                        "prompt_sha256": hashlib.sha256(encoded[i][0].encode("utf-8")).hexdigest(),
                        "prompt_tokens": len(encoded[i][1]),
                        "output_tokens": len(ids),
                        "output_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                        "finish_reason": reason,
                        "batch_rows": len(batch),
                        "seconds": round(seconds, 4),
                    }
                )
                outputs[i] = GenerationOutput(
                    key=req.key,
                    text=text,
                    prompt_tokens=len(encoded[i][1]),
                    output_tokens=len(ids),
                    finish_reason=reason,
                    seconds=seconds,
                    provenance=prov,
                )
    return outputs  # type: ignore[return-value]


class ProvenanceMismatch(ValueError):
    """The loaded model / prompt does not match the provenance being regenerated."""


def regenerate(
    loaded: LoadedModel,
    provenance: dict[str, Any],
    messages: Sequence[dict],
    *,
    strict: bool = True,
) -> GenerationOutput:
    """Re-run one response from its provenance (params, seed, adapter) and the original messages.

    Checks base / adapter / chat-template / prompt fingerprints (and, if ``strict``, device and
    dtype) and raises :class:`ProvenanceMismatch` when they differ.  Runs as a batch of one.
    """
    params = GenerationParams.from_dict(provenance["params"])
    adapter = provenance.get("adapter")
    problems = []
    if provenance.get("base_sha256") != loaded.base_sha256:
        problems.append("base model weights differ")
    if adapter is not None and provenance.get("adapter_sha256") != loaded.adapter_sha256.get(adapter):
        problems.append(f"adapter {adapter!r} weights differ or it is not loaded")
    if provenance.get("chat_template_sha256") != loaded.chat_template_sha256:
        problems.append("chat template differs")
    text = render_prompt(loaded.tokenizer, messages, params.system_prompt)
    if provenance.get("prompt_sha256") and provenance["prompt_sha256"] != hashlib.sha256(text.encode()).hexdigest():
        problems.append("rendered prompt differs (different messages or system prompt)")
    if strict and (provenance.get("device"), provenance.get("dtype")) != (loaded.device, loaded.dtype):
        problems.append(
            f"device/dtype {provenance.get('device')}/{provenance.get('dtype')} != {loaded.device}/{loaded.dtype}"
        )
    if problems:
        raise ProvenanceMismatch("; ".join(problems))
    request = GenerationRequest(key=provenance.get("key", "regenerated"), messages=list(messages), seed=provenance["seed"])
    return generate(loaded, [request], params, adapter=adapter, batch_size=1)[0]
