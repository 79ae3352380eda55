"""GGUF -> safetensors cache: a GGUF is de-quantised once by transformers and written as a plain
safetensors + tokenizer directory under the model cache (``$EMPATHEVAL_MODEL_CACHE`` or
``~/.cache/empatheval/models``), so later loads take ~1.6 s instead of ~16 s.

The cache is built in a temporary directory and renamed into place atomically, under an
inter-process file lock: a killed or concurrent build never leaves a half-written cache behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path

from .errors import ModelLoadError
from .paths import MODEL_CACHE_ENV, is_base_dir, model_cache_root

SOURCE_FILE = "empatheval-source.json"
_STALE_TMP_SECONDS = 3600


def ensure_gguf_cache(gguf: Path) -> Path:
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
    return recorded == source and is_base_dir(dest)


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
