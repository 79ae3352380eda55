"""Content fingerprints of weights, adapters and chat templates (what provenance records).

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
import json
import os
import uuid
from pathlib import Path

from .errors import ModelLoadError
from .paths import ADAPTER_FILES, check_adapter_dir

DIGEST_FILE = ".empatheval-sha256.json"


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
