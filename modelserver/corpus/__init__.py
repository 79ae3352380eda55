"""Conversations as data, shared by the model library and the site's prompt import.

Pure Python (csv, json, re, nh3): no Django, no torch.  One definition each of

- what a conversation is (:func:`validate_messages`: user/assistant turns of text, no system
  message, ending with a user turn where a reply is wanted);
- tagged ``<USER>``/``<AI>`` transcripts (:mod:`.transcripts`) and the prompt ids a transcript
  gives (``t1-u1``, ``t1-u2``, ...);
- HTML and whitespace cleaning (:mod:`.text`);
- the bundled CounselChat files (Bertagnolli 2020, MIT licence in ``data/``) and their best
  answer per question (:mod:`.counselchat`).
"""

from .counselchat import (
    COUNSELCHAT_ANSWERS,
    COUNSELCHAT_LICENSE,
    COUNSELCHAT_QUESTIONS,
    best_counselchat_answer,
)
from .messages import MessageError, validate_messages
from .text import normalise_whitespace, strip_html
from .transcripts import parse_transcript, split_transcripts, transcript_id, user_turn_ids

__all__ = [
    "COUNSELCHAT_ANSWERS",
    "COUNSELCHAT_LICENSE",
    "COUNSELCHAT_QUESTIONS",
    "MessageError",
    "best_counselchat_answer",
    "normalise_whitespace",
    "parse_transcript",
    "split_transcripts",
    "strip_html",
    "transcript_id",
    "user_turn_ids",
    "validate_messages",
]
