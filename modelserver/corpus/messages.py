"""The one definition of a conversation: what generation, the CLI, prompt import, training and the
playground accept."""

from __future__ import annotations

from collections.abc import Sequence

ROLES = ("user", "assistant")


class MessageError(ValueError):
    """A conversation that is not user/assistant turns of text.

    ``field`` names the offending part (``"messages"`` or ``"messages[i]"``) so a file import can
    point at it; ``str(exc)`` reads as one sentence.
    """

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field} {reason}")
        self.field = field
        self.reason = reason


def validate_messages(messages: Sequence[dict], *, final_user: bool = True, blank_ok: bool = False) -> list[dict]:
    """Copies of the turns (``role`` and ``content`` only), or :class:`MessageError`.

    The system prompt is a setting (of an arm or a training run), never part of a conversation.
    ``final_user=False`` accepts a conversation ending with the assistant (training data);
    ``blank_ok=True`` leaves empty turns to a later cleaning step that counts them.
    """
    if not isinstance(messages, (list, tuple)) or not messages:
        raise MessageError("messages", "must be a non-empty list of {role, content} turns")
    clean = []
    for index, message in enumerate(messages):
        field = f"messages[{index}]"
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise MessageError(field, "needs a text 'content'")
        role = message.get("role")
        if role == "system":
            raise MessageError(field, "is a system message; the system prompt is a setting, not part of a conversation")
        if role not in ROLES:
            raise MessageError(field, f"has unsupported role {role!r}; use 'user' or 'assistant'")
        if not blank_ok and not message["content"].strip():
            raise MessageError(field, "is empty or whitespace only")
        clean.append({"role": role, "content": message["content"]})
    if final_user and clean[-1]["role"] != "user":
        raise MessageError("messages", "must end with a user turn")
    return clean
