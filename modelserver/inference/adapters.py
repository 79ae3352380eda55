"""Which arm a shared, peft-wrapped model computes: the baseline (adapters off) or one named adapter."""

from __future__ import annotations

import contextlib

from .loading import LoadedModel


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


@contextlib.contextmanager
def use_adapter(loaded: LoadedModel, adapter: str | None):
    """Context in which ``loaded.model`` computes the baseline (``None``: adapters disabled) or one adapter."""
    model = loaded.model
    if adapter is None:
        if _is_peft(model):
            with model.disable_adapter():
                yield
        else:
            yield
        return
    if not _is_peft(model) or adapter not in model.peft_config:
        raise ValueError(f"adapter {adapter!r} is not loaded; loaded adapters: {loaded.adapter_names}")
    model.set_adapter(adapter)
    yield
