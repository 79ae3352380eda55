"""Resolving a base-model reference and loading it, with its LoRA adapters, on a device.

torch / transformers / peft are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelLoadError, TransientGenerationError
from .fingerprints import sha256_of_text, sha256_of_weights
from .gguf import ensure_gguf_cache
from .kvcache import check_supported
from .paths import BUNDLED_REF, bundled_gguf_path, check_adapter_dir, check_base_dir
from .quantization import bnb_config, load_in_4bit_requested, resolve_quantization

_ADAPTER_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def resolve_base(ref: str) -> Path:
    """Turn a base-model reference into a local directory transformers can load.

    ``"bundled"`` (or a path to a ``.gguf`` file) builds / reuses the safetensors
    cache; anything else must be a local HF model directory.  Raises
    :class:`ModelLoadError` with a specific message when something is missing.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise ModelLoadError("Base model reference is empty; use 'bundled' or a local model directory.")
    if ref == BUNDLED_REF:
        return ensure_gguf_cache(bundled_gguf_path())
    path = Path(ref).expanduser()
    if not path.exists():
        raise ModelLoadError(
            f"Base model {ref!r} not found: it is neither 'bundled' nor an existing local path. "
            "There is no model hub access at run time; download the model elsewhere and pass its directory."
        )
    if path.is_file():
        if path.suffix == ".gguf":
            return ensure_gguf_cache(path.resolve())
        raise ModelLoadError(f"Base model {ref!r} is a file; expected a model directory or a .gguf file.")
    check_base_dir(path)
    return path.resolve()


@dataclass(eq=False)
class LoadedModel:
    """A base model (optionally peft-wrapped with named LoRA adapters) plus its fingerprints."""

    model: Any
    tokenizer: Any
    base_ref: str
    base_path: str
    base_sha256: str
    adapter_sha256: dict[str, str]
    adapter_paths: dict[str, str]
    chat_template_sha256: str
    device: str
    dtype: str
    # How the base weights were quantised when loaded (quantization.resolve_quantization); None: not at all.
    quantization: dict | None = None
    # Serialises generate() calls: the active adapter is model-global state.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def adapter_names(self) -> list[str]:
        return sorted(self.adapter_sha256)


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"Device {device!r} requested but CUDA is not available.")
    if device != "cpu" and not device.startswith("cuda"):
        raise ModelLoadError(f"Unsupported device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'.")
    return device


def resolve_dtype(device: str, dtype: str | None):
    import torch

    if dtype is None:
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    try:
        value = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ModelLoadError(f"Unsupported dtype {dtype!r}; use float32, bfloat16 or float16.") from None
    return dtype, value


def load_model(
    base: str,
    adapters: dict[str, str] | None = None,
    device: str = "auto",
    *,
    dtype: str | None = None,
    load_in_4bit: bool | None = None,
) -> LoadedModel:
    """Load one copy of the base weights and each adapter under its name.

    CUDA -> bfloat16, CPU -> float32 (bf16 is not batch-invariant) with all
    CPUs in this process's affinity mask.  ``dtype`` overrides the choice.
    ``load_in_4bit`` (``None``: ``$EMPATHEVAL_LOAD_IN_4BIT``) loads the base in 4 bits with
    bitsandbytes, on CUDA only (see :mod:`.quantization`).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    dtype_name, torch_dtype = resolve_dtype(dev, dtype)
    quantization = resolve_quantization(dev, load_in_4bit_requested(load_in_4bit), dtype_name)
    base_path = resolve_base(base)
    base_sha = sha256_of_weights(base_path)
    adapters = dict(adapters or {})
    adapter_paths: dict[str, Path] = {}
    for name, adir in adapters.items():
        if not isinstance(name, str) or not _ADAPTER_NAME_RE.match(name):
            raise ModelLoadError(f"Invalid adapter name {name!r}: use letters, digits, '_' or '-'.")
        adapter_paths[name] = check_adapter_dir(adir)
    adapter_shas = {name: sha256_of_weights(p) for name, p in adapter_paths.items()}

    if dev == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        # Where OMP_NUM_THREADS is set (torch reads it), it is the operator's choice: several CPU workers
        # sharing one machine must not each take every core.
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_path, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"Loading the tokenizer from {base_path} failed: {exc}") from exc
    if not getattr(tokenizer, "chat_template", None):
        raise ModelLoadError(f"The tokenizer in {base_path} has no chat template; a chat model is required.")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"

    try:
        placement = {}
        if quantization is not None:
            # bitsandbytes quantises while placing the weights, so they go to the device as they load.
            where = torch.cuda.current_device() if dev == "cuda" else dev
            placement = {"quantization_config": bnb_config(quantization, torch_dtype), "device_map": {"": where}}
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch_dtype, local_files_only=True, **placement)
        # Refused here, not midway through a run, when our decoding loop cannot keep its cache.
        check_supported(model.config)
        if quantization is None:
            model.to(dev)
        for i, name in enumerate(sorted(adapter_paths)):
            if i == 0:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, str(adapter_paths[name]), adapter_name=name, is_trainable=False)
            else:
                model.load_adapter(str(adapter_paths[name]), adapter_name=name, is_trainable=False)
        if quantization is None:  # peft puts the adapter by the 4-bit layers it wraps, already on the device
            model.to(dev)
        model.eval()
    except torch.cuda.OutOfMemoryError as exc:
        raise TransientGenerationError(f"CUDA out of memory while loading {base!r}: {exc}") from exc
    except ModelLoadError:
        raise
    except Exception as exc:
        what = f"adapters {sorted(adapter_paths)}" if adapter_paths else "the base model"
        raise ModelLoadError(f"Loading {what} on top of {base_path} failed: {type(exc).__name__}: {exc}") from exc

    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        base_ref=base,
        base_path=str(base_path),
        base_sha256=base_sha,
        adapter_sha256=adapter_shas,
        adapter_paths={k: str(v) for k, v in adapter_paths.items()},
        chat_template_sha256=sha256_of_text(tokenizer.chat_template),
        device=dev,
        dtype=dtype_name,
        quantization=quantization,
    )
