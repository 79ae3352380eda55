"""Model inference core: loading base models / LoRA adapters and reproducible batched generation.

No Django imports here.  torch / transformers / peft are imported lazily by the submodules'
functions, so ``import modelserver.inference`` is cheap.
"""

from .errors import ModelLoadError, TransientGenerationError
from .generation import (
    DEFAULT_SYSTEM_PROMPT,
    GenerationOutput,
    GenerationParams,
    GenerationRequest,
    ProvenanceMismatch,
    generate,
    regenerate,
)
from .loading import (
    LoadedModel,
    clear_model_cache,
    get_cached_model,
    load_model,
    resolve_base,
    sha256_of_adapter,
    sha256_of_weights,
)

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "GenerationOutput",
    "GenerationParams",
    "GenerationRequest",
    "LoadedModel",
    "ModelLoadError",
    "ProvenanceMismatch",
    "TransientGenerationError",
    "clear_model_cache",
    "generate",
    "get_cached_model",
    "load_model",
    "regenerate",
    "resolve_base",
    "sha256_of_adapter",
    "sha256_of_weights",
]
