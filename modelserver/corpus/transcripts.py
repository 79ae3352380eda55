"""Tagged transcripts: ``<USER> ... <AI> ...`` turns, several to a ``.txt`` file between lines of ``---``.

A study importing transcript ``t`` gets one prompt per user turn, ``t-u1``, ``t-u2``, ...
(:func:`user_turn_ids`); training records the same ids, so a study's prompts can be checked
against an adapter's training data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from .messages import MessageError

_TURN_TAG = re.compile(r"<(USER|AI)>\s*:?", re.I)
_SEPARATOR = re.compile(r"^\s*---+\s*$", re.M)


def split_transcripts(text: str) -> Iterator[tuple[int, str]]:
    """(number, transcript) for each non-empty transcript of a file; numbers count empty ones too."""
    for number, chunk in enumerate(_SEPARATOR.split(text), start=1):
        if chunk.strip():
            yield number, chunk


def transcript_id(number: int) -> str:
    """The id of the ``number``-th transcript of a ``.txt`` file."""
    return f"t{number}"


def parse_transcript(transcript: str) -> list[dict]:
    """The turns of one transcript, stripped; :class:`MessageError` (field ``transcript``) if it has no tags."""
    parts = _TURN_TAG.split(transcript)
    if parts[0].strip():
        raise MessageError("transcript", "must start with a <USER> or <AI> tag")
    return [
        {"role": "user" if tag.upper() == "USER" else "assistant", "content": content.strip()}
        for tag, content in zip(parts[1::2], parts[2::2], strict=True)
    ]


def user_turn_ids(external_id: str, turns: Sequence[dict]) -> list[str]:
    """The prompt id of each user turn: ``<id>-u1``, ``<id>-u2``, ..."""
    users = sum(1 for turn in turns if turn["role"] == "user")
    return [f"{external_id}-u{k}" for k in range(1, users + 1)]
