"""Reads for raters: where a rater stands, their next item, and per-rater quality."""

from dataclasses import dataclass

from django.db.models import Count, Q

from evalapp.models import Study

from .models import Assignment, CalibrationAttempt, Consent, ConsentVersion, Role, StudyMembership


@dataclass(frozen=True)
class RaterStatus:
    is_rater: bool
    withdrawn: bool
    excluded: bool
    consent_version: ConsentVersion | None
    consented: bool
    calibration: str  # "none" (no items), "pending", "in_progress", "passed", "failed", "retry", "approved", "rejected"

    @property
    def can_rate(self) -> bool:
        return (
            self.is_rater
            and not self.withdrawn
            and not self.excluded
            and self.consented
            and self.calibration in ("none", "passed", "approved")
        )


def rater_status(*, study: Study, user) -> RaterStatus:
    membership = StudyMembership.objects.filter(study=study, user=user, role=Role.RATER).first()
    version = study.consent_versions.order_by("-version").first()
    if membership is None:
        return RaterStatus(False, False, False, version, False, "none")
    consented = version is None or Consent.objects.filter(
        study=study, user=user, version=version, withdrawn_at__isnull=True
    ).exists()
    return RaterStatus(
        is_rater=True,
        withdrawn=membership.withdrawn_at is not None,
        excluded=membership.excluded_at is not None,
        consent_version=version,
        consented=consented,
        calibration=_calibration_state(study, user, membership),
    )


def _calibration_state(study: Study, user, membership: StudyMembership) -> str:
    if membership.calibration_decision in ("approved", "rejected"):
        return membership.calibration_decision
    if not study.calibration_items.exists():
        return "none"
    attempts = list(CalibrationAttempt.objects.filter(study=study, rater=user).order_by("number"))
    if not attempts:
        return "pending"
    last = attempts[-1]
    if last.finished_at is None:
        return "in_progress"
    if last.passed:
        return "passed"
    return "retry" if last.number < 2 else "failed"


@dataclass(frozen=True)
class NextItem:
    assignment: Assignment | None
    done: int
    total: int


def next_item(*, study: Study, rater) -> NextItem:
    """The first unfinished slot of the rater's queue and the progress counts: two queries, whatever the size."""
    counts = Assignment.objects.filter(study=study, rater=rater).aggregate(
        total=Count("id"), done=Count("id", filter=Q(completed_at__isnull=False))
    )
    assignment = (
        Assignment.objects.filter(study=study, rater=rater, completed_at__isnull=True)
        .select_related("response__prompt", "gold_item")
        .order_by("position")
        .first()
    )
    return NextItem(assignment=assignment, done=counts["done"], total=counts["total"])


def study_raters(*, study: Study):
    return (
        StudyMembership.objects.filter(study=study, role=Role.RATER)
        .select_related("user")
        .annotate(
            n_assigned=Count("user__assignments", filter=Q(user__assignments__study=study), distinct=True),
            n_done=Count(
                "user__assignments",
                filter=Q(user__assignments__study=study, user__assignments__completed_at__isnull=False),
                distinct=True,
            ),
        )
        .order_by("pseudonym")
    )
