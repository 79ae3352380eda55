"""What every rater service shares: the error it raises and the reading of answers to a rubric."""

from evalapp.errors import ServiceError
from evalapp.models import Study
from evalapp.rubric import RubricError, parse_answer


class RatingError(ServiceError):
    """A request a rater or researcher made that cannot be carried out; the message says why."""


Answer = tuple[int | None, bool, str]  # (stored value, not sure, rationale)


def parse_answers(study: Study, answers: dict, rationales: dict | None = None) -> dict[str, Answer]:
    """Each of the study's criteria answered, in stored form; RatingError names the first problem."""
    rubric = study.rubric()
    if not isinstance(answers, dict):
        raise RatingError("Answers must map each criterion's key to its answer.")
    unknown = sorted(set(answers) - {c["key"] for c in rubric})
    if unknown:
        raise RatingError(f"This study's rubric has no criterion {', '.join(unknown)}; "
                          f"it asks {', '.join(c['key'] for c in rubric)}.")
    rationales = rationales if isinstance(rationales, dict) else {}
    out = {}
    for criterion in rubric:
        try:
            out[criterion["key"]] = parse_answer(criterion, answers.get(criterion["key"]),
                                                 rationales.get(criterion["key"], ""))
        except RubricError as exc:
            raise RatingError(str(exc)) from None
    return out


def stored_values(answers: dict[str, Answer]) -> dict[str, int | None]:
    """{key: value} as calibration and gold answers keep them (None = not sure)."""
    return {key: value for key, (value, _, _) in answers.items()}
