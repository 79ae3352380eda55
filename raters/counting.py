"""Which ratings count: the one rule that the design, adjudication, results and exports share.

A rating counts unless its rater withdrew or was excluded from the study. (Responses excluded after a
safety review are left out of the analysis by the results, not here: their ratings still count toward
the design and adjudication, which is where the exclusion was decided.)
"""

from django.db.models import QuerySet

from evalapp.models import PairJudgment, Rating, Study

from .models import Role, StudyMembership


def left_out_raters(study: Study) -> dict[int, str]:
    """user id -> why that rater's ratings do not count (withdrawn, or excluded with the reason)."""
    reasons = {}
    for user_id, withdrawn, excluded, reason in (
        StudyMembership.objects.filter(study=study, role=Role.RATER)
        .exclude(withdrawn_at__isnull=True, excluded_at__isnull=True)
        .values_list("user_id", "withdrawn_at", "excluded_at", "excluded_reason")
    ):
        reasons[user_id] = "rater withdrew" if withdrawn else f"rater excluded: {reason}"
    return reasons


def left_out_rater_ids(study: Study) -> QuerySet:
    """The same raters as a subquery, for filtering in the database."""
    return (
        StudyMembership.objects.filter(study=study, role=Role.RATER)
        .exclude(withdrawn_at__isnull=True, excluded_at__isnull=True)
        .values("user_id")
    )


def counted_ratings(study: Study) -> QuerySet:
    """The study's ratings that count, as a queryset (filter it further, e.g. to one response)."""
    return Rating.objects.filter(response__prompt__study=study).exclude(rater_id__in=left_out_rater_ids(study))


def counted_pair_judgments(study: Study) -> QuerySet:
    """The pairwise phase's judgments that count, by the same rule."""
    return PairJudgment.objects.filter(pair__study=study).exclude(rater_id__in=left_out_rater_ids(study))
