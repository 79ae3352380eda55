"""Exceptions raised by the inference core (no Django, no torch imports here)."""


class ModelLoadError(Exception):
    """A base model or adapter could not be resolved or loaded.

    Permanent: retrying with the same arguments will fail the same way
    (missing files, wrong directory layout, incompatible adapter, ...).
    """


class TransientGenerationError(Exception):
    """Generation failed for a reason that may go away on retry (e.g. CUDA out of memory).

    Celery tasks may retry these, possibly with a smaller batch size.
    """
