"""Calibration: up to two attempts at the study's items, scored against the references."""

from django.db import IntegrityError, transaction
from django.utils import timezone

from evalapp.models import Study
from evalapp.rubric import answer_errors

from ..models import CalibrationAnswer, CalibrationAttempt, CalibrationItem, Role, StudyMembership
from .common import RatingError, parse_answers, stored_values
from .design import design_rebalance


def calibration_pool(study: Study):
    """The items raters calibrate on: every item that is not a hidden gold check."""
    return study.calibration_items.filter(use_as_gold=False)


def calibration_attempt_start(*, study: Study, rater) -> CalibrationAttempt:
    if not calibration_pool(study).exists():
        raise RatingError("This study has no calibration items yet.", status=409)
    attempts = list(CalibrationAttempt.objects.filter(study=study, rater=rater).order_by("number"))
    if attempts and attempts[-1].finished_at is None:
        return attempts[-1]
    if any(a.passed for a in attempts):
        raise RatingError("You have already passed calibration.", status=409)
    if len(attempts) >= 2:
        raise RatingError("You have used both calibration attempts; the researcher will decide.", status=409)
    try:
        with transaction.atomic():
            return CalibrationAttempt.objects.create(study=study, rater=rater, number=len(attempts) + 1)
    except IntegrityError:  # a concurrent request started it
        return CalibrationAttempt.objects.get(study=study, rater=rater, number=len(attempts) + 1)


def calibration_answer(*, attempt: CalibrationAttempt, item: CalibrationItem, answers: dict,
                       rationales: dict | None = None):
    """Record one answer ({criterion key: answer}, as a rating's); the last one scores the attempt."""
    values = stored_values(parse_answers(attempt.study, answers, rationales))
    if attempt.finished_at is not None:
        raise RatingError("This calibration attempt is finished.", status=409)
    if item.study_id != attempt.study_id or item.use_as_gold:  # a gold item's reference is never shown
        raise RatingError("No such calibration item.", status=404)
    answer, _ = CalibrationAnswer.objects.get_or_create(
        attempt=attempt, item=item, defaults={"values": values}
    )
    total = calibration_pool(attempt.study).count()
    if attempt.answers.count() >= total:
        _calibration_finish(attempt)
    return answer


def _calibration_finish(attempt: CalibrationAttempt) -> None:
    errors = []
    rubric = attempt.study.rubric()
    for answer in attempt.answers.select_related("item"):
        errors += answer_errors(rubric, answer.values, answer.item.references)
    # No comparable answer at all (every one "not sure") is no evidence of calibration.
    mae = sum(errors) / len(errors) if errors else None
    passed = mae is not None and mae <= attempt.study.calibration_max_mae
    CalibrationAttempt.objects.filter(id=attempt.id, finished_at__isnull=True).update(
        finished_at=timezone.now(), mean_absolute_error=mae, passed=passed
    )
    attempt.refresh_from_db()
    if passed:
        design_rebalance(study=attempt.study)


def calibration_decide(*, study: Study, rater, approve: bool) -> None:
    StudyMembership.objects.filter(study=study, user=rater, role=Role.RATER).update(
        calibration_decision="approved" if approve else "rejected"
    )
    design_rebalance(study=study)


@transaction.atomic
def calibration_item_remove(*, study: Study, item: CalibrationItem) -> None:
    """Remove an item no rater has answered or been given as gold; attempts that had answered every
    other item are scored now, so no rater is left waiting on an item that is gone."""
    if item.answers.exists() or item.assignments.exists():
        raise RatingError("Raters have already answered this item; it stays as their record.", status=409)
    item.delete()
    remaining = calibration_pool(study).count()
    for attempt in CalibrationAttempt.objects.filter(study=study, finished_at__isnull=True):
        if remaining and attempt.answers.count() >= remaining:
            _calibration_finish(attempt)
