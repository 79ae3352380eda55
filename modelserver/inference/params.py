"""What a generation is asked for and what it returns: sampling settings, one prompt, one response."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

DEFAULT_SYSTEM_PROMPT = "You are a supportive assistant. Respond to the user's message."

# progress(done, total), called each time a row finishes.
ProgressFn = Callable[[int, int], None]


def known_fields(cls, data: dict, what: str) -> dict:
    """``data`` if every key is a field of the dataclass ``cls``: a stored setting we no longer know
    must fail loudly, not be dropped."""
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"Unknown {what}(s): {sorted(unknown)}")
    return data


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    do_sample: bool = True
    system_prompt: str = DEFAULT_SYSTEM_PROMPT

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {self.max_new_tokens!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r} (use do_sample=False for greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty!r}")
        if not isinstance(self.system_prompt, str) or not self.system_prompt.strip():
            raise ValueError("system_prompt must be a non-empty string (without one the chat template injects its own)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GenerationParams:
        return cls(**known_fields(cls, data, "generation parameter"))


@dataclass(frozen=True)
class GenerationRequest:
    key: str
    messages: list[dict]
    seed: int


@dataclass(frozen=True)
class GenerationOutput:
    key: str
    text: str
    prompt_tokens: int
    output_tokens: int  # generated tokens, including the end-of-turn token when one was produced
    finish_reason: str  # "stop" (end of turn) or "length" (max_new_tokens)
    seconds: float  # from the start of the row's batch until the row finished
    provenance: dict = field(default_factory=dict)
