"""Versioned judge prompt templates: what a judge is asked, one criterion per call (G-Eval style).

A template is a name, a version, a system message, a text with named fields and the start of the
judge's answer. Its sha256 (over all of them) is recorded with every judgment, so a changed wording
is a new template, never a silent edit. The fields a text may use are fixed here and none of them can carry the arm: the render
functions take only the criterion, the conversation and the response text(s), so blinding does not
depend on the caller leaving an arm out of a dict. A criterion's own fields are read by name
(question, description, scale points, labels, options), never dumped whole.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Sequence
from dataclasses import dataclass

from modelserver.corpus import validate_messages

from .answers import AnswerSpace, answer_space, check_criterion

CRITERION_FIELDS = frozenset({"question", "description", "scale", "conversation", "response", "answer_format"})
PAIR_FIELDS = frozenset({"question", "conversation", "response_a", "response_b"})
_REQUIRED = {"criterion": {"question", "conversation", "response", "answer_format"},
             "pair": {"question", "conversation", "response_a", "response_b"}}
_SPEAKERS = {"user": "Person", "assistant": "Chatbot"}


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class JudgeTemplate:
    name: str
    version: int
    kind: str  # "criterion" (one rubric criterion, one response) or "pair" (responses A and B)
    system: str
    text: str
    # Written into the judge's own turn before it answers: a local model continues from it (the read-out
    # is at the position after it). SmolLM2-135M asked for a number starts "The ..." or "You ..." (7% of its
    # first-token mass on digits), and after "Answer: " nearly all of it. An HTTP chat completion cannot
    # portably be made to continue a turn, so HTTP judges are sent the messages without it.
    answer_prefix: str = ""

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.version, int) or self.version < 1:
            raise TemplateError("A judge template needs a name and a version (a whole number from 1).")
        if self.kind not in _REQUIRED:
            raise TemplateError(f"Template kind must be 'criterion' or 'pair', not {self.kind!r}.")
        if not self.system.strip():
            # Without a system message SmolLM2's chat template injects its own ("You are SmolLM...").
            raise TemplateError("A judge template needs a system message.")
        allowed = CRITERION_FIELDS if self.kind == "criterion" else PAIR_FIELDS
        used = set()
        for _, field, spec, conversion in string.Formatter().parse(self.text):
            if field is None:
                continue
            if field not in allowed or spec or conversion:
                raise TemplateError(f"Template {self.name!r} uses {{{field}}}; its fields are plain "
                                    f"{', '.join(sorted(allowed))}.")
            used.add(field)
        missing = _REQUIRED[self.kind] - used
        if missing:
            raise TemplateError(f"Template {self.name!r} lacks {', '.join(sorted(missing))}.")

    @property
    def sha256(self) -> str:
        payload = json.dumps({"name": self.name, "version": self.version, "kind": self.kind,
                              "system": self.system, "text": self.text,
                              "answer_prefix": self.answer_prefix}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def identity(self) -> dict:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


SYSTEM = ("You are a careful evaluator of replies written by a support chatbot. You follow the rating "
          "instructions exactly and answer with the requested value only, without explanation.")

CRITERION_TEMPLATE = JudgeTemplate(
    name="empatheval-criterion", version=1, kind="criterion", system=SYSTEM,
    text=(
        "You will read a conversation between a person seeking support and a chatbot, then the chatbot's "
        "reply to the person's last message. Rate the reply on one criterion.\n\n"
        "Criterion: {question}\n{description}"
        "Scale: {scale}\n\n"
        "Conversation:\n{conversation}\n\n"
        "Reply to rate:\n{response}\n\n"
        "Answer with {answer_format} only."
    ),
    answer_prefix="Answer: ",
)

PAIR_TEMPLATE = JudgeTemplate(
    name="empatheval-pair", version=1, kind="pair", system=SYSTEM,
    text=(
        "You will read a conversation between a person seeking support and a chatbot, then two replies, "
        "A and B, to the person's last message.\n\n"
        "Conversation:\n{conversation}\n\n"
        "Reply A:\n{response_a}\n\n"
        "Reply B:\n{response_b}\n\n"
        "Question: {question}\n"
        "Answer A if reply A is better, B if reply B is better, or S if they are about the same. "
        "Answer with one letter only."
    ),
    answer_prefix="Answer: ",
)


def conversation_text(conversation: Sequence[dict]) -> str:
    """The conversation as a transcript (validated by the one definition of a conversation)."""
    turns = validate_messages(conversation)
    return "\n".join(f"{_SPEAKERS[t['role']]}: {t['content'].strip()}" for t in turns)


def _scale(criterion: dict, space: AnswerSpace) -> tuple[str, str]:
    if space.kind == "likert":
        low, high = criterion["min"], criterion["max"]
        labels = criterion.get("labels") or {}
        anchors = "; ".join(f"{point} = {text}" for point, text in sorted(labels.items(), key=lambda kv: int(kv[0])))
        return (f"a whole number from {low} to {high}" + (f" ({anchors})" if anchors else ""),
                f"a single whole number from {low} to {high}")
    options = "\n".join(f"{i + 1}. {o.get('label') or o['key']}" for i, o in enumerate(criterion["options"]))
    return f"choose one option\n{options}", f"the number of one option (1 to {len(space.values)})"


def render_criterion(template: JudgeTemplate, criterion: dict, conversation: Sequence[dict],
                     response: str) -> list[dict]:
    """The chat messages (system, user) asking for one criterion's score of one response."""
    if template.kind != "criterion":
        raise TemplateError(f"Template {template.name!r} is for pairs, not for one criterion.")
    criterion = check_criterion(criterion)
    if not isinstance(response, str) or not response.strip():
        raise TemplateError("The response to judge is empty.")
    scale, answer_format = _scale(criterion, answer_space(criterion))
    description = str(criterion.get("description") or "").strip()
    user = template.text.format(
        question=criterion["question"].strip(),
        description=f"{description}\n" if description else "",
        scale=scale,
        conversation=conversation_text(conversation),
        response=response.strip(),
        answer_format=answer_format,
    )
    return [{"role": "system", "content": template.system}, {"role": "user", "content": user}]


def render_pair(template: JudgeTemplate, question: str, conversation: Sequence[dict], response_a: str,
                response_b: str) -> list[dict]:
    """The chat messages asking which of two responses (A shown first) is better on one question."""
    if template.kind != "pair":
        raise TemplateError(f"Template {template.name!r} judges one response, not a pair.")
    if not isinstance(question, str) or not question.strip():
        raise TemplateError("The pairwise question is empty.")
    for name, text in (("A", response_a), ("B", response_b)):
        if not isinstance(text, str) or not text.strip():
            raise TemplateError(f"Response {name} is empty.")
    user = template.text.format(question=question.strip(), conversation=conversation_text(conversation),
                                response_a=response_a.strip(), response_b=response_b.strip())
    return [{"role": "system", "content": template.system}, {"role": "user", "content": user}]
