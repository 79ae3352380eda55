"""Consent: publish a version, accept the current one, withdraw (the study's policy decides the ratings)."""

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from evalapp.audit import audit
from evalapp.models import AuditEvent, PairJudgment, Rating, Study

from ..models import Assignment, Consent, ConsentVersion, PairAssignment, Role, StudyMembership, WithdrawalPolicy
from .common import RatingError
from .design import design_rebalance


def consent_publish(*, study: Study, text: str, withdrawal_policy: str) -> ConsentVersion:
    """A new version: raters must accept it before they rate again, so their unrated work moves on."""
    if not text.strip():
        raise RatingError("The consent text is empty.")
    if withdrawal_policy not in WithdrawalPolicy.values:
        raise RatingError("Choose what happens to a withdrawn rater's ratings.")
    with transaction.atomic():
        Study.objects.select_for_update().filter(id=study.id).first()
        latest = study.consent_versions.aggregate(v=Max("version"))["v"] or 0
        version = ConsentVersion.objects.create(
            study=study, version=latest + 1, text=text.strip(), withdrawal_policy=withdrawal_policy
        )
        design_rebalance(study=study)
    return version


@transaction.atomic
def consent_accept(*, study: Study, user, version: ConsentVersion) -> Consent:
    current = study.consent_versions.order_by("-version").first()
    if current is None or current.id != version.id:
        raise RatingError("The consent text has changed; please read the current version.", status=409)
    consent, created = Consent.objects.get_or_create(study=study, user=user, version=version)
    if created:  # consenting may be the last step before rating (a study without calibration)
        design_rebalance(study=study)
    return consent


@transaction.atomic
def consent_withdraw(*, study: Study, user) -> str:
    """Withdraw a rater: they see nothing more, and the study's policy decides their ratings' fate."""
    policy_version = study.consent_versions.order_by("-version").first()
    policy = policy_version.withdrawal_policy if policy_version else WithdrawalPolicy.EXCLUDE
    now = timezone.now()
    Consent.objects.filter(study=study, user=user, withdrawn_at__isnull=True).update(withdrawn_at=now)
    StudyMembership.objects.filter(study=study, user=user, role=Role.RATER).update(withdrawn_at=now)
    redacted = 0
    if policy == WithdrawalPolicy.DELETE:
        # The trail keeps that they revised and when, but not what they answered: their revisions'
        # payloads are their ratings, which this policy deletes from every export.
        redacted = AuditEvent.objects.filter(study=study, actor=user,
                                             action__in=("rating.revise", "pair_judgment.revise")).update(
            before=None, after={"redacted": "rater withdrew (policy: delete)"})
    audit(study=study, actor=user, action="rater.withdraw", obj=user,
          after={"rater": user.id, "policy": policy, **({"redacted_revisions": redacted} if redacted else {})})
    if policy == WithdrawalPolicy.DELETE:
        Rating.objects.filter(rater=user, response__prompt__study=study).delete()
        Assignment.objects.filter(study=study, rater=user).delete()
        PairJudgment.objects.filter(rater=user, pair__study=study).delete()
        PairAssignment.objects.filter(study=study, rater=user).delete()
    else:
        Assignment.objects.filter(study=study, rater=user, completed_at__isnull=True).delete()
        PairAssignment.objects.filter(study=study, rater=user, completed_at__isnull=True).delete()
    try:
        with transaction.atomic():
            design_rebalance(study=study)
    except RatingError as exc:
        # Withdrawing is the rater's right and never waits on the design: when the raters left cannot cover
        # it, they keep their queues and the shortfall is on record for the researcher, who adds raters.
        audit(study=study, actor=user, action="design.rebalance_refused", obj=study, after={"reason": exc.message})
    return policy
