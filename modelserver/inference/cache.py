"""Loaded models kept in this process between calls (a worker loads the base once for both arms)."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

from .fingerprints import sha256_of_adapter, sha256_of_weights
from .loading import LoadedModel, load_model, resolve_base, resolve_device, resolve_dtype
from .quantization import load_in_4bit_requested

MAX_LOADED_ENV = "EMPATHEVAL_MAX_LOADED_MODELS"

_MODEL_CACHE: OrderedDict[tuple, LoadedModel] = OrderedDict()
_MODEL_CACHE_LOCK = threading.Lock()


def _max_loaded() -> int:
    raw = os.environ.get(MAX_LOADED_ENV, "2")
    try:
        return max(1, int(raw))
    except ValueError:
        raise ValueError(f"{MAX_LOADED_ENV} must be a whole number, not {raw!r}") from None


def model_cache_key(base: str, adapters: dict[str, str] | None = None, device: str = "auto",
                    dtype: str | None = None, load_in_4bit: bool | None = None) -> tuple:
    """(base sha, sorted (adapter name, sha) pairs, device, dtype, 4-bit) - cheap thanks to cached digests."""
    base_sha = sha256_of_weights(resolve_base(base))
    adapter_key = tuple(sorted((name, sha256_of_adapter(p)) for name, p in (adapters or {}).items()))
    dev = resolve_device(device)
    return (base_sha, adapter_key, dev, resolve_dtype(dev, dtype)[0], load_in_4bit_requested(load_in_4bit))


def get_cached_model(
    base: str,
    adapters: dict[str, str] | None = None,
    device: str = "auto",
    *,
    dtype: str | None = None,
    load_in_4bit: bool | None = None,
) -> LoadedModel:
    """Like :func:`load_model`, but keeps loaded models in this process between calls (LRU,
    ``$EMPATHEVAL_MAX_LOADED_MODELS``, default 2).  Keyed by content hashes, so a retrained adapter
    written to the same directory is reloaded."""
    key = model_cache_key(base, adapters, device, dtype, load_in_4bit)
    with _MODEL_CACHE_LOCK:
        if key in _MODEL_CACHE:
            _MODEL_CACHE.move_to_end(key)
            return _MODEL_CACHE[key]
        loaded = load_model(base, adapters, device, dtype=dtype, load_in_4bit=load_in_4bit)
        _MODEL_CACHE[key] = loaded
        while len(_MODEL_CACHE) > _max_loaded():
            _MODEL_CACHE.popitem(last=False)
            _empty_device_cache()
        return loaded


def clear_model_cache() -> None:
    with _MODEL_CACHE_LOCK:
        _MODEL_CACHE.clear()
    _empty_device_cache()


def _empty_device_cache() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover
        pass
