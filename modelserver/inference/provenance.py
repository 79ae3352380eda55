"""What a response records about how it was made, and the check that a loaded model can remake it.

Every response carries its provenance: decoder and seeding scheme, parameters, seed, arm,
fingerprints of the base weights, adapter and chat template, the rendered prompt's and output's
digests, library versions, device, dtype and quantization (a 4-bit load's settings, or ``None``).
:func:`~modelserver.inference.generation.regenerate` re-runs a response from it after
:func:`mismatches` finds nothing.
"""

from __future__ import annotations

import hashlib
import importlib
import platform
from collections.abc import Iterable

from .loading import LoadedModel
from .params import GenerationParams
from .quantization import same_weights

DECODER_VERSION = "empatheval-kv-loop/1"
SEEDING = (
    "per-row torch.Generator(device).manual_seed(seed); one torch.rand draw per sampled token, "
    "inverse CDF over the top-p nucleus sorted by descending probability"
)
GENERATION_LIBRARIES = ("torch", "transformers", "peft")
# How a response's prompt was prefilled (its provenance's "prefill"; a record without the key: full).
PREFILL_FULL = "full"  # the whole prompt in one forward
PREFILL_SYSTEM_PREFIX = "system-prefix-cache"  # the system turn's cache, then the rest in one forward
PREFILL_MODES = (PREFILL_FULL, PREFILL_SYSTEM_PREFIX)


class ProvenanceMismatch(ValueError):
    """The loaded model / prompt does not match the provenance being regenerated."""


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def library_versions(packages: Iterable[str] = GENERATION_LIBRARIES) -> dict:
    """Python's version and each package's ``__version__`` (imports them: call it when they are loaded anyway)."""
    versions = {name: importlib.import_module(name).__version__ for name in packages}
    versions["python"] = platform.python_version()
    return versions


def run_provenance(loaded: LoadedModel, params: GenerationParams, adapter: str | None, batch_size: int) -> dict:
    """The part of the provenance that every response of one ``generate`` call shares."""
    return {
        "decoder": DECODER_VERSION,
        "seeding": SEEDING,
        "params": params.to_dict(),
        "adapter": adapter,
        "arm": "baseline" if adapter is None else "adapter",
        "base_ref": loaded.base_ref,
        "base_sha256": loaded.base_sha256,
        "adapter_sha256": None if adapter is None else loaded.adapter_sha256.get(adapter),
        "chat_template_sha256": loaded.chat_template_sha256,
        "versions": library_versions(),
        "device": loaded.device,
        "dtype": loaded.dtype,
        "quantization": loaded.quantization,
        "batch_size": batch_size,
    }


def mismatches(loaded: LoadedModel, provenance: dict, prompt_text: str, *, strict: bool = True) -> list[str]:
    """Why ``loaded`` cannot remake the response of ``provenance`` from ``prompt_text`` (empty: it can).

    Base / adapter / chat-template / rendered-prompt fingerprints and the quantization always (4-bit
    weights are other weights, not a rounding difference; a record from before the field means full
    precision); device and dtype if ``strict``.
    """
    adapter = provenance.get("adapter")
    problems = []
    if provenance.get("base_sha256") != loaded.base_sha256:
        problems.append("base model weights differ")
    if adapter is not None and provenance.get("adapter_sha256") != loaded.adapter_sha256.get(adapter):
        problems.append(f"adapter {adapter!r} weights differ or it is not loaded")
    if not same_weights(provenance.get("quantization"), loaded.quantization):
        problems.append(f"quantization {provenance.get('quantization')} != {loaded.quantization}")
    if provenance.get("chat_template_sha256") != loaded.chat_template_sha256:
        problems.append("chat template differs")
    if provenance.get("prompt_sha256") and provenance["prompt_sha256"] != sha256_hex(prompt_text):
        problems.append("rendered prompt differs (different messages or system prompt)")
    if strict and (provenance.get("device"), provenance.get("dtype")) != (loaded.device, loaded.dtype):
        problems.append(
            f"device/dtype {provenance.get('device')}/{provenance.get('dtype')} != {loaded.device}/{loaded.dtype}"
        )
    return problems
