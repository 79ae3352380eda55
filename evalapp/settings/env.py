"""The one place the environment is read.

Every setting that comes from the environment goes through these helpers so a
typo or a bad value fails at start-up with the variable's name, not later.
"""

import os

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name)
    if value is None or value == "":
        if default is None:
            raise ImproperlyConfigured(f"Set the environment variable {name}.")
        return default
    return value


def env_optional(name: str) -> str | None:
    value = os.environ.get(name, "")
    return value or None


def env_bool(name: str, default: bool) -> bool:
    # Strict on purpose: "ture" must not silently mean False.
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {value!r}.")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}.") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_choice(name: str, choices: list[str], default: str) -> str:
    value = os.environ.get(name) or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {value!r}.")
    return value


def env_str_map(name: str, default: dict[str, str]) -> dict[str, str]:
    """A JSON object of names to non-empty names, e.g. GENERATION_QUEUES='{"*70B*": "gpu-large"}'."""
    import json

    value = os.environ.get(name)
    if value is None or value == "":
        return dict(default)
    try:
        parsed = json.loads(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a JSON object, got {value!r}.") from None
    if not isinstance(parsed, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v.strip() for k, v in parsed.items()
    ):
        raise ImproperlyConfigured(f"{name} must be a JSON object of non-empty strings to non-empty strings, "
                                   f"got {value!r}.")
    return {k: v.strip() for k, v in parsed.items()}
