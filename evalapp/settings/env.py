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


JUDGE_ENDPOINT_FIELDS = {"url": str, "model": str, "api_key_env": str, "logprobs": bool, "timeout": (int, float)}


def env_judge_endpoints(name: str) -> dict[str, dict]:
    """The OpenAI-compatible endpoints judges may use, by name: a JSON object such as
    JUDGE_ENDPOINTS='{"vllm": {"url": "http://gpu1:8000", "model": "Qwen/Qwen2.5-7B-Instruct",
    "api_key_env": "VLLM_KEY", "logprobs": true}}'. Only ``url`` and ``model`` are required; the key
    itself stays in the environment variable ``api_key_env`` names. A judge names an endpoint; no request
    can give a URL (modelserver.judge_services)."""
    import json
    from urllib.parse import urlsplit

    value = os.environ.get(name)
    if value is None or value == "":
        return {}
    try:
        parsed = json.loads(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a JSON object, got {value!r}.") from None
    if not isinstance(parsed, dict):
        raise ImproperlyConfigured(f"{name} must be a JSON object of endpoint names to objects.")
    out = {}
    for key, spec in parsed.items():
        where = f"{name}[{key!r}]"
        if not isinstance(key, str) or not key.strip() or not isinstance(spec, dict):
            raise ImproperlyConfigured(f"{where} must be a non-empty name mapped to an object.")
        unknown = set(spec) - set(JUDGE_ENDPOINT_FIELDS)
        if unknown:
            raise ImproperlyConfigured(f"{where}: unknown fields {sorted(unknown)}; allowed: {sorted(JUDGE_ENDPOINT_FIELDS)}.")
        for field, kind in JUDGE_ENDPOINT_FIELDS.items():
            v = spec.get(field)
            ok = isinstance(v, bool) if kind is bool else isinstance(v, kind) and not isinstance(v, bool)
            if field in spec and not ok:
                raise ImproperlyConfigured(f"{where}: {field} has the wrong type.")
        if not spec.get("url") or not spec.get("model"):
            raise ImproperlyConfigured(f"{where} needs a url and a model.")
        if urlsplit(spec["url"]).scheme not in ("http", "https") or not urlsplit(spec["url"]).hostname:
            raise ImproperlyConfigured(f"{where}: url must be an http(s) URL, got {spec['url']!r}.")
        out[key.strip()] = dict(spec)
    return out
