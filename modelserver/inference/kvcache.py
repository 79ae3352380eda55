"""The KV cache of one decoding batch: each prompt prefilled on its own (its shared system-turn prefix
from :class:`PrefixCaches`, computed once, then the rest of the prompt), then packed, left-padded,
into preallocated buffers, one buffer layer per model layer of the kind transformers builds for the
model's config (``DynamicCache(config=...)``).

Two kinds are supported, the two that plain decoder families use:

* full attention (Llama, Qwen2/3, Gemma, Phi-3, Gemma 2/3's global layers): every column is kept,
  in a buffer sized for the prompt plus ``max_new_tokens`` so a step writes in place;
* sliding window (Mistral with ``sliding_window``, Gemma 2/3's local layers, Qwen2 with
  ``use_sliding_window``): like transformers' ``DynamicSlidingWindowLayer``, only the last
  ``window - 1`` columns are kept between steps and the layer reports the same ``cumulative_length``
  and mask sizes, because transformers' sliding-window mask is sized from the layer
  (``is_sliding``, ``get_mask_sizes``).  A layer never holds more than twice its window.

Why a window counted in columns is each row's own window under left padding: a row's tokens fill
contiguous columns (its prompt right-aligned, then one column per step for every row), so two of
its columns are as far apart as their positions; padding columns inside the window are masked by
``attention_mask``.  So a padded row sees exactly the tokens it sees alone.

Any other layer kind (linear attention, KV sharing, chunked attention, ...) is refused by
:func:`check_supported` before a run starts, naming the architecture.
torch / transformers are imported inside the functions.
"""

from __future__ import annotations

from .errors import ModelLoadError

_CLASSES: dict | None = None


def _architecture(config) -> str:
    names = getattr(config, "architectures", None) or []
    model_type = getattr(config, "model_type", None) or "unknown"
    return f"{names[0]} ({model_type})" if names else model_type


def check_supported(config) -> list[str]:
    """``"full"`` or ``"sliding"`` for each layer of the cache transformers builds for ``config``
    (empty when it builds layers lazily: all full).  Raises :class:`ModelLoadError` naming the
    architecture when a layer needs a cache the decoding loop does not implement."""
    if config is None:
        return []
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    text = config.get_text_config(decoder=True)
    layer_types = list(getattr(text, "layer_types", None) or [])
    # Chunked attention gets a sliding-window cache layer but a different mask; untested here.
    if getattr(text, "attention_chunk_size", None) is not None or "chunked_attention" in layer_types:
        raise ModelLoadError(
            f"{_architecture(config)} uses chunked attention, which the EmpathEval decoding loop does not support."
        )
    kinds = []
    for i, layer in enumerate(DynamicCache(config=config).layers):
        if type(layer) is DynamicLayer:
            kinds.append("full")
        elif type(layer) is DynamicSlidingWindowLayer:
            kinds.append("sliding")
        else:
            what = layer_types[i] if i < len(layer_types) else type(layer).__name__
            raise ModelLoadError(
                f"{_architecture(config)} is not supported by the EmpathEval decoding loop: layer {i} is "
                f"{what!r} ({type(layer).__name__}); only full-attention and sliding-window layers are."
            )
    return kinds


def _layer_classes() -> dict:
    """The buffer layer classes, made on first use so importing this module does not import transformers."""
    global _CLASSES
    if _CLASSES is not None:
        return _CLASSES
    import torch
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    class FullBuffer(DynamicLayer):
        """A DynamicLayer over a preallocated (rows, heads, capacity, dim) buffer.

        Appending a token writes in place instead of ``torch.cat``-ing the whole cache every step;
        ``keys`` / ``values`` are views of the filled part.  Rows can be dropped and leading
        (all-padding) columns trimmed.
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
            n = key_states.shape[-2]
            if self._len + n > self._k.shape[2]:  # not expected: capacity covers max_new_tokens
                pad = (0, 0, 0, max(n, self._k.shape[2]))
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
            raise RuntimeError("FullBuffer.crop is not supported by the EmpathEval decoding loop")

    class SlidingBuffer(DynamicSlidingWindowLayer):
        """A DynamicSlidingWindowLayer whose last ``window - 1`` columns live at ``[start, start + len)``
        of a preallocated buffer; appending writes in place, and when the buffer's end is reached
        the kept columns move back to its front (once every ``capacity - window + 1`` steps)."""

        def __init__(self, keys_buf, values_buf, stored: int, seen: int, sliding_window: int):
            super().__init__(sliding_window=sliding_window)
            self._k, self._v = keys_buf, values_buf
            self._start, self._len = 0, stored
            self.cumulative_length = seen  # columns seen, as in transformers: mask sizes come from it
            self.dtype, self.device = keys_buf.dtype, keys_buf.device
            self._sliding_window_tensor = self._sliding_window_tensor.to(self.device)
            self.is_initialized = True
            self._sync()

        def _sync(self):
            self.keys = self._k[:, :, self._start : self._start + self._len]
            self.values = self._v[:, :, self._start : self._start + self._len]

        def update(self, key_states, value_states, *args, **kwargs):
            n = key_states.shape[-2]
            if self._start + self._len + n > self._k.shape[2]:
                if self._len + n > self._k.shape[2]:  # not expected: decoding appends one column
                    pad = (0, 0, 0, self._len + n - self._k.shape[2])
                    self._k = torch.nn.functional.pad(self._k, pad)
                    self._v = torch.nn.functional.pad(self._v, pad)
                # clone: the kept columns and their new place overlap
                self._k[:, :, : self._len] = self.keys.clone()
                self._v[:, :, : self._len] = self.values.clone()
                self._start = 0
            end = self._start + self._len
            self._k[:, :, end : end + n] = key_states
            self._v[:, :, end : end + n] = value_states
            self._len += n
            self.cumulative_length += n
            self._sync()
            full_keys, full_values = self.keys, self.values
            # What the next step may see, exactly as DynamicSlidingWindowLayer keeps it.
            drop = max(0, self._len - (self.sliding_window - 1))
            self._start, self._len = self._start + drop, self._len - drop
            self._sync()
            return full_keys, full_values

        def batch_select_indices(self, indices):
            self._k, self._v = self._k[indices], self._v[indices]
            self._sync()

        def trim_left(self, first: int):
            # The kept columns are the last `len` of `cumulative_length`; drop those left of `first`.
            drop = max(0, first - (self.cumulative_length - self._len))
            self._start, self._len = self._start + drop, self._len - drop
            self.cumulative_length -= first
            self._sync()

        def crop(self, tokens_to_remove: int):
            raise RuntimeError("SlidingBuffer.crop is not supported by the EmpathEval decoding loop")

    _CLASSES = {"full": FullBuffer, "sliding": SlidingBuffer, "DynamicSlidingWindowLayer": DynamicSlidingWindowLayer}
    return _CLASSES


class PrefixCaches:
    """The KV caches of shared prompt prefixes (the system turn), each computed by one forward of its own
    and kept in a small LRU; every row that starts with a prefix prefills only its suffix on a deep
    copy.

    Keyed by (model object, arm, prefix tokens): the same peft-wrapped model computes other KV with an
    adapter enabled than disabled, so one store must never serve two arms under one key.  ``generate``
    makes one store per call (one call is one arm), so nothing outlives the call either.
    """

    def __init__(self, arm: str | None, capacity: int = 4):
        from collections import OrderedDict

        self.arm, self.capacity = arm, capacity
        self._caches: OrderedDict = OrderedDict()
        self.computed = 0  # prefix forwards run: how often the LRU missed

    def row_cache(self, model, prefix: tuple, device):
        """A fresh copy of ``prefix``'s cache, which the caller may extend."""
        import copy

        import torch

        key = (id(model), self.arm, prefix)
        cache = self._caches.get(key)
        if cache is None:
            cache = _new_cache(model)
            ids = torch.tensor([list(prefix)], dtype=torch.long, device=device)
            model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                position_ids=torch.arange(len(prefix), device=device)[None],
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            self.computed += 1
            self._caches[key] = cache
            while len(self._caches) > self.capacity:
                self._caches.popitem(last=False)
        self._caches.move_to_end(key)
        return copy.deepcopy(cache)


def _new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=getattr(model, "config", None))


def _prefill_row(model, prompt, prefix_length: int, prefixes: PrefixCaches | None, device):
    """One row's cache and last-position logits: the whole prompt in one forward, or its first
    ``prefix_length`` tokens from ``prefixes`` and the rest in one forward at positions after them."""
    import torch

    if prefix_length:
        # A sliding layer of the copy holds only the prefix's last window - 1 columns but counts all of
        # them (cumulative_length), so the suffix's mask and its window are those of a one-shot prefill.
        row_cache = prefixes.row_cache(model, tuple(prompt[:prefix_length]), device)
    else:
        row_cache = _new_cache(model)
    ids = torch.tensor([prompt[prefix_length:]], dtype=torch.long, device=device)
    out = model(
        input_ids=ids,
        # the mask covers the cached prefix and the suffix, as a cache of prompt[:prefix_length] expects
        attention_mask=torch.ones((1, len(prompt)), dtype=torch.long, device=device),
        position_ids=torch.arange(prefix_length, len(prompt), device=device)[None],
        past_key_values=row_cache,
        use_cache=True,
        logits_to_keep=1,
    )
    return row_cache, out.logits[0, -1].float()


def prefill_rows(model, prompts, device, capacity_extra, prefix_lengths=None, prefixes: PrefixCaches | None = None):
    """Prefill each prompt on its own (no padding, exactly what a batch of one computes) and pack the
    per-row caches right-aligned into one left-padded batch cache.

    ``prefix_lengths[i]`` > 0: row ``i``'s first tokens come from ``prefixes`` (computed once per distinct
    prefix) and only the rest is prefilled.  A row's result depends only on its prompt and its prefix
    length, so it is the same in any batch; it may differ from a one-shot prefill in the last bits.

    Returns (cache, attention_mask, last-position logits (rows, vocab) float32)."""
    import torch

    config = getattr(model, "config", None)
    check_supported(config)
    classes = _layer_classes()
    width = max(len(p) for p in prompts)
    n = len(prompts)
    prefix_lengths = list(prefix_lengths) if prefix_lengths is not None else [0] * n
    if len(prefix_lengths) != n or any(not 0 <= k < len(p) for k, p in zip(prefix_lengths, prompts)):
        raise ValueError("each prefix length must be >= 0 and shorter than its prompt")
    if any(prefix_lengths) and prefixes is None:
        prefixes = PrefixCaches(arm=None)  # one batch's own store: nothing is shared beyond it
    attention_mask = torch.zeros((n, width), dtype=torch.long, device=device)
    specs = None  # per layer: (kind, stored columns, key buffer, value buffer, window)
    logits = []
    for i, p in enumerate(prompts):
        row_cache, row_logits = _prefill_row(model, p, prefix_lengths[i], prefixes, device)
        logits.append(row_logits)
        if specs is None:
            specs = [_allocate(layer, n, width, capacity_extra, classes) for layer in row_cache.layers]
        for (_, stored, kb, vb, _), layer in zip(specs, row_cache.layers):
            m = layer.keys.shape[-2]  # a sliding layer kept only the prompt's last window - 1 columns
            kb[i, :, stored - m : stored] = layer.keys[0]
            vb[i, :, stored - m : stored] = layer.values[0]
        attention_mask[i, width - len(p) :] = 1
        del row_cache
    cache = _new_cache(model)
    cache.layers = [
        classes["full"](kb, vb, width) if kind == "full" else classes["sliding"](kb, vb, stored, width, window)
        for kind, stored, kb, vb, window in specs
    ]
    return cache, attention_mask, torch.stack(logits)


def _allocate(layer, rows: int, width: int, extra: int, classes: dict):
    _, heads, _, dim = layer.keys.shape
    if isinstance(layer, classes["DynamicSlidingWindowLayer"]):
        keep = layer.sliding_window - 1
        stored = min(width, keep)
        # Room for every new column when that is less than a window, else a window's worth between moves.
        capacity = max(stored + 1, min(width + extra, 2 * keep))
        kind, window = "sliding", layer.sliding_window
    else:
        stored, capacity, kind, window = width, width + extra, "full", None
    shape = (rows, heads, capacity, dim)
    return kind, stored, layer.keys.new_zeros(shape), layer.values.new_zeros(shape), window


def trim_left_padding(cache, attention_mask):
    """Drop leading columns that are padding for every remaining row."""
    real = attention_mask.any(dim=0)
    if not bool(real[0]) and bool(real.any()):
        first = int(real.int().argmax())
        for layer in cache.layers:
            layer.trim_left(first)
        return attention_mask[:, first:]
    return attention_mask
