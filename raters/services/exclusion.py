"""A researcher's quality decision: exclude a rater (kept, marked, left out of the analysis)."""

from django.db import transaction
from django.utils import timezone

from evalapp.audit import audit
from evalapp.models import Study

from ..models import Assignment, PairAssignment, Role, StudyMembership
from .common import RatingError
from .design import design_rebalance


@transaction.atomic
def rater_exclude(*, study: Study, rater, reason: str, actor=None) -> None:
    if not reason.strip():
        raise RatingError("Give a reason for excluding the rater.")
    StudyMembership.objects.filter(study=study, user=rater, role=Role.RATER).update(
        excluded_at=timezone.now(), excluded_reason=reason.strip()[:500]
    )
    audit(study=study, actor=actor or rater, action="rater.exclude", obj=rater,
          after={"rater": rater.id, "reason": reason.strip()[:500]})
    Assignment.objects.filter(study=study, rater=rater, completed_at__isnull=True).delete()
    PairAssignment.objects.filter(study=study, rater=rater, completed_at__isnull=True).delete()
    design_rebalance(study=study)
