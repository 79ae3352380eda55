"""LLM judges: a model asked the rubric's questions about a response, read as probabilities over the
valid answers (local models) or from an OpenAI-compatible endpoint's logprobs or text.

No Django here (layer 1, like ``modelserver.inference``, usable from a plain script or
``python -m modelserver judge``); torch is imported inside the functions that run a model. Where
things are: ``answers`` (the valid answers of a question, parsing text), ``templates`` (versioned
prompts that cannot name the arm), ``scoring`` (the probability read-out, one result's fields),
``judge`` (batched local judging with provenance), ``http`` (allow-listed endpoints), ``cli``.
"""

from .answers import PAIR_SPACE, AnswerError, AnswerSpace, answer_space, parse_answer
from .judge import JudgeItem, PairItem, items_from_rows, judge_items, judge_pairs
from .scoring import JudgeScore
from .templates import CRITERION_TEMPLATE, PAIR_TEMPLATE, JudgeTemplate, TemplateError, render_criterion, render_pair

__all__ = [
    "CRITERION_TEMPLATE",
    "PAIR_SPACE",
    "PAIR_TEMPLATE",
    "AnswerError",
    "AnswerSpace",
    "JudgeItem",
    "JudgeScore",
    "JudgeTemplate",
    "PairItem",
    "TemplateError",
    "answer_space",
    "items_from_rows",
    "judge_items",
    "judge_pairs",
    "parse_answer",
    "render_criterion",
    "render_pair",
]
