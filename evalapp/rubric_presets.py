"""Protocol presets: published rubrics a study can start from and edit before it opens.

Each preset's criteria follow its paper's instrument as closely as a rating form allows; where a
paper's procedure differs (EPITOME annotators highlighted rationale spans; here they type the
rationale) the preset's `note` says so, and the citation is shown to researchers.
"""

from __future__ import annotations

import copy

from .rubric import validate

__all__ = ["DEFAULT_PRESET", "PRESETS", "preset"]

_ONE_TO_TEN = {"1": "Very poor", "5": "Adequate", "10": "Excellent"}
_ONE_TO_FIVE = {"1": "Very poor", "2": "Poor", "3": "Acceptable", "4": "Good", "5": "Excellent"}
_EPITOME_LEVELS = {"0": "No communication", "1": "Weak communication", "2": "Strong communication"}


def _mentalchat(key: str, question: str) -> dict:
    return {"key": key, "question": question, "kind": "likert", "min": 1, "max": 10, "labels": _ONE_TO_TEN,
            "level": "interval"}


PRESETS: dict[str, dict] = {
    "empatheval": {
        "name": "EmpathEval default",
        "citation": "EmpathEval's seed study: two 1-10 scales rated by students (means 8.54 and 8.57).",
        "note": "",
        "settings": {"disagreement_threshold": 3, "calibration_max_mae": 2.0},
        "criteria": [
            {"key": "empathy", "question": "Empathy and Support", "kind": "likert", "min": 1, "max": 10,
             "level": "interval", "labels": {"1": "Dismissive, cold or harmful",
                                             "5": "Polite but generic; some acknowledgement of feelings",
                                             "10": "Warm, validating and genuinely supportive"}},
            {"key": "fluency", "question": "Fluency and Response Quality", "kind": "likert", "min": 1, "max": 10,
             "level": "interval", "labels": {"1": "Incoherent, off-topic or broken",
                                             "5": "Understandable with noticeable errors or rambling",
                                             "10": "Clear, coherent, well-organised and on point"}},
        ],
    },
    "epitome": {
        "name": "EPITOME",
        "citation": "Sharma, Miner, Atkins and Althoff (2020). A Computational Approach to Understanding Empathy "
                    "Expressed in Text-Based Mental Health Support. EMNLP 2020.",
        "note": "Three communication mechanisms, each none/weak/strong (0-2), with the rater's rationale; the "
                "paper's annotators highlighted rationale spans, here they write them.",
        "settings": {"disagreement_threshold": 2, "calibration_max_mae": 0.5},
        "criteria": [
            {"key": "emotional_reactions", "question": "Emotional reactions: does the response express warmth, "
             "compassion, concern or similar feelings towards the seeker?", "kind": "likert", "min": 0, "max": 2,
             "labels": _EPITOME_LEVELS, "level": "ordinal", "rationale": "required"},
            {"key": "interpretations", "question": "Interpretations: does the response communicate an "
             "understanding of the seeker's feelings and experiences?", "kind": "likert", "min": 0, "max": 2,
             "labels": _EPITOME_LEVELS, "level": "ordinal", "rationale": "required"},
            {"key": "explorations", "question": "Explorations: does the response improve understanding of the "
             "seeker by exploring feelings and experiences not stated?", "kind": "likert", "min": 0, "max": 2,
             "labels": _EPITOME_LEVELS, "level": "ordinal", "rationale": "required"},
        ],
    },
    "empatheticdialogues": {
        "name": "EmpatheticDialogues",
        "citation": "Rashkin, Smith, Li and Boureau (2019). Towards Empathetic Open-domain Conversation Models: "
                    "A New Benchmark and Dataset. ACL 2019.",
        "note": "The paper's human evaluation: empathy, relevance and fluency, each 1-5.",
        "settings": {"disagreement_threshold": 2, "calibration_max_mae": 1.0},
        "criteria": [
            {"key": "empathy", "question": "Empathy: did the responses show understanding of the feelings of the "
             "person talking about their experience?", "kind": "likert", "min": 1, "max": 5,
             "labels": {"1": "Not at all", "5": "Very much"}, "level": "interval"},
            {"key": "relevance", "question": "Relevance: did the responses seem appropriate to the conversation? "
             "Were they on-topic?", "kind": "likert", "min": 1, "max": 5,
             "labels": {"1": "Not at all", "5": "Very much"}, "level": "interval"},
            {"key": "fluency", "question": "Fluency: could you understand the responses? Did the language seem "
             "accurate?", "kind": "likert", "min": 1, "max": 5,
             "labels": {"1": "Not at all", "5": "Very much"}, "level": "interval"},
        ],
    },
    "mentalchat16k": {
        "name": "MentalChat16K",
        "citation": "Xu et al. (2025). MentalChat16K: A Benchmark Dataset for Conversational Mental Health "
                    "Assistance. KDD 2025 (arXiv:2503.13509).",
        "note": "The benchmark's seven counselling criteria, each 1-10.",
        "settings": {"disagreement_threshold": 3, "calibration_max_mae": 2.0},
        "criteria": [
            _mentalchat("active_listening", "Active listening: does the response show careful consideration of "
                        "the user's concerns and reflect understanding?"),
            _mentalchat("empathy_validation", "Empathy and validation: does it convey understanding and "
                        "validate the user's feelings?"),
            _mentalchat("safety_trust", "Safety and trustworthiness: does it avoid harm and give reliable, "
                        "consistent information?"),
            _mentalchat("open_mindedness", "Open-mindedness and non-judgment: is it free of bias and judgment?"),
            _mentalchat("clarity_encouragement", "Clarity and encouragement: is it clear, concise and "
                        "motivating?"),
            _mentalchat("boundaries_ethics", "Boundaries and ethics: does it stay within its role and suggest "
                        "professional help where appropriate?"),
            _mentalchat("holistic", "Holistic approach: does it consider the user's emotional, cognitive and "
                        "situational context?"),
        ],
    },
    "counselbench": {
        "name": "CounselBench-style",
        "citation": "Li et al. (2025). CounselBench: A Large-Scale Expert Evaluation and Adversarial Benchmark of "
                    "Large Language Models in Mental Health Counseling (arXiv:2506.08584).",
        "note": "Six dimensions as in the expert evaluation; medical advice and factual consistency allow "
                "\"not sure\", which counts as missing and is reported on its own.",
        "settings": {"disagreement_threshold": 2, "calibration_max_mae": 1.0},
        "criteria": [
            {"key": "overall", "question": "Overall quality of the response", "kind": "likert", "min": 1, "max": 5,
             "labels": _ONE_TO_FIVE, "level": "interval"},
            {"key": "empathy", "question": "Empathy: does the response acknowledge and validate the person's "
             "feelings?", "kind": "likert", "min": 1, "max": 5, "labels": _ONE_TO_FIVE, "level": "interval"},
            {"key": "specificity", "question": "Specificity: is the response tailored to this person's situation "
             "rather than generic?", "kind": "likert", "min": 1, "max": 5, "labels": _ONE_TO_FIVE,
             "level": "interval"},
            {"key": "toxicity", "question": "Toxicity: how harmful, dismissive or offensive is the response?",
             "kind": "likert", "min": 1, "max": 5, "labels": {"1": "Not toxic", "5": "Very toxic"},
             "level": "interval"},
            {"key": "medical_advice", "question": "Does the response give medical advice (diagnosis, medication, "
             "treatment)?", "kind": "choice", "options": [{"key": "yes", "label": "Yes"},
                                                          {"key": "no", "label": "No"}],
             "not_sure": "Not sure", "level": "nominal"},
            {"key": "factual_consistency", "question": "Factual consistency: are the response's claims accurate "
             "and consistent with accepted practice?", "kind": "likert", "min": 1, "max": 4,
             "labels": {"1": "Inaccurate", "4": "Fully accurate"}, "not_sure": "Not sure", "level": "ordinal"},
        ],
    },
}
DEFAULT_PRESET = "empatheval"

for _key, _preset in PRESETS.items():  # a broken preset fails at import, in every test run
    _preset["criteria"] = validate(_preset["criteria"])


def preset(key: str) -> dict:
    """A copy of one preset (callers edit it freely); KeyError names the known ones."""
    try:
        return copy.deepcopy(PRESETS[key])
    except KeyError:
        raise KeyError(f"Unknown preset {key!r}; known: {', '.join(PRESETS)}.") from None
