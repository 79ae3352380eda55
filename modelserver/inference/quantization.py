"""Loading the base in 4 bits (bitsandbytes NF4), for adapters trained with QLoRA on such a base.

Off unless asked for, by ``load_model(..., load_in_4bit=True)`` or ``$EMPATHEVAL_LOAD_IN_4BIT=true``.
CUDA only: the CPU path is fp32 because that is where our batch-invariance holds, and bitsandbytes'
CPU kernels would make it neither fast nor invariant.  bitsandbytes is not a dependency; without it
a 4-bit load is refused before anything is read.  NF4 with double quantisation and the run's dtype
for compute are QLoRA's settings, so an adapter meets the weights it was trained against.

What a response records (``provenance["quantization"]``, ``None`` for full precision) is
:func:`resolve_quantization`'s dict; two records describe the same weights when they agree on
everything but the bitsandbytes version (library versions are recorded, never compared).
"""

from __future__ import annotations

import importlib.metadata
import os

from .errors import ModelLoadError

LOAD_IN_4BIT_ENV = "EMPATHEVAL_LOAD_IN_4BIT"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def load_in_4bit_requested(value: bool | None = None) -> bool:
    """``value`` when given, else ``$EMPATHEVAL_LOAD_IN_4BIT`` (unset: no)."""
    if value is not None:
        return bool(value)
    raw = os.environ.get(LOAD_IN_4BIT_ENV, "")
    # Strict on purpose: a misspelt "ture" must not silently load full precision.
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise ModelLoadError(f"{LOAD_IN_4BIT_ENV} must be true or false, got {raw!r}.")


def _bitsandbytes_version() -> str | None:
    try:
        return importlib.metadata.version("bitsandbytes")
    except importlib.metadata.PackageNotFoundError:
        return None


def resolve_quantization(device: str, load_in_4bit: bool, dtype_name: str) -> dict | None:
    """The record of a 4-bit load on ``device`` (``None``: full precision), or :class:`ModelLoadError`
    when it cannot be done there."""
    if not load_in_4bit:
        return None
    if not device.startswith("cuda"):
        raise ModelLoadError(
            f"4-bit loading ({LOAD_IN_4BIT_ENV} / load_in_4bit) needs a CUDA device; this load is on {device!r}. "
            f"Unset {LOAD_IN_4BIT_ENV} to load full precision on the CPU."
        )
    version = _bitsandbytes_version()
    if version is None:
        raise ModelLoadError(
            f"4-bit loading ({LOAD_IN_4BIT_ENV} / load_in_4bit) needs the bitsandbytes package, which is not "
            "installed: pip install bitsandbytes"
        )
    return {"method": "bitsandbytes", "bits": 4, "quant_type": "nf4", "double_quant": True,
            "compute_dtype": dtype_name, "bitsandbytes": version}


def bnb_config(quantization: dict, torch_dtype):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization["quant_type"],
        bnb_4bit_use_double_quant=quantization["double_quant"],
        bnb_4bit_compute_dtype=torch_dtype,
    )


def same_weights(recorded: dict | None, loaded: dict | None) -> bool:
    """Whether two quantization records describe the same computed weights."""
    def settings(q):
        return None if q is None else {k: v for k, v in q.items() if k != "bitsandbytes"}

    return settings(recorded) == settings(loaded)
