"""Participant pools: how far each participant has got, and how the researcher's pages name them.

One count for every page that shows a participant's progress (the panel page, the raters page): ratings
given, and queue items done of assigned, each labelled as what it is.
"""

from dataclasses import dataclass

from django.db.models import Count, Q

from evalapp.models import Rating, Study

from ..models import Assignment
from ..panel_models import PanelParticipant, ParticipantStatus


@dataclass(frozen=True)
class Progress:
    """One participant's progress, counted as the raters page counts it (ratings given, kept or not) and as
    their own rate page counts it (queue items done of assigned: ratings, skips and hidden gold items)."""
    ratings: int
    items_done: int
    items_assigned: int


def panel_progress(study: Study) -> dict[int, Progress]:
    """user id -> Progress for the study's pool participants, in two queries."""
    users = study.panel_participants.values("user_id")
    ratings = dict(Rating.objects.filter(response__prompt__study=study, rater_id__in=users).values("rater_id")
                   .annotate(n=Count("id")).values_list("rater_id", "n"))
    queues = {row["rater_id"]: row for row in Assignment.objects.filter(study=study, rater_id__in=users)
              .values("rater_id").annotate(total=Count("id"), done=Count("id", filter=Q(completed_at__isnull=False)))}
    return {user_id: Progress(ratings.get(user_id, 0), queues.get(user_id, {}).get("done", 0),
                              queues.get(user_id, {}).get("total", 0))
            for user_id in users.values_list("user_id", flat=True)}


def panel_status_counts(participants: list[PanelParticipant]) -> list[tuple[str, int]]:
    """(status label, how many) in ParticipantStatus's order, the statuses someone has only."""
    counts = {status: 0 for status in ParticipantStatus.values}
    for participant in participants:
        counts[participant.status] += 1
    return [(ParticipantStatus(status).label, n) for status, n in counts.items() if n]


def panel_identities(study: Study) -> dict[int, PanelParticipant]:
    """user id -> their pool participant row: how the researcher's pages name a pool participant (the pool's
    id, which the researcher reconciles against, with the rater's pseudonym beside it)."""
    return {p.user_id: p for p in study.panel_participants.all()}
