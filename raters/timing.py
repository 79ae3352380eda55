"""How long an item was on screen, as the study records it (and pool participants are paid for it).

The browser measures the seconds an item was shown (rate.js), but that number is the client's word: a
participant could post 590 for every item. The server cannot see the screen, but it knows when the rater
last did something in this study (finished or skipped an item, revised a rating or judgment, answered
calibration, consented, entered by the pool's link, or joined), so an item cannot have been worked on for
longer than the time since then. Every item's seconds are therefore min(the client's, the observed), and
when the client sends none (no JavaScript) or something that is not a finite number of seconds, the observed
time stands in: the rating itself is never refused over its timing, and NaN or infinity is never stored.

Because each item's observed interval ends where the next one's begins (the item's completion is written
after its time is taken), the seconds recorded for a rater can never add up to more than wall time.
"""

import math
from datetime import UTC, datetime

from django.db.models import DateTimeField, Max, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from evalapp.models import PairJudgment, Rating, Study

from .compiled import STAND_IN_ID, Compiled
from .models import Assignment, CalibrationAnswer, Consent, PairAssignment, Role, StudyMembership
from .panel_models import PanelParticipant

# A day: no item is on screen longer; a client's larger number is a broken clock, not work.
MAX_CLIENT_SECONDS = 86400.0
_NEVER = Value(datetime(1970, 1, 1, tzinfo=UTC), output_field=DateTimeField())
_UNREAD = object()


def parse_seconds(raw) -> float | None:
    """The client's seconds as a finite number >= 0, or None for anything else (missing, "abc", "NaN",
    "inf", negative, a boolean, over a day): the timing is not the rater's answer, so it is dropped rather
    than the rating refused."""
    if raw is None or isinstance(raw, bool):
        return None
    if isinstance(raw, str):
        raw = raw.strip()
        if not raw:
            return None
    try:
        value = float(raw)
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(value) or value < 0 or value > MAX_CLIENT_SECONDS:
        return None
    return value


def _latest(queryset, group: str, field: str):
    """The latest `field` of the rows (grouped by the rater's column `group`), as a one-value subquery;
    the epoch when there are none, so that Greatest reads the same on every database."""
    return Coalesce(Subquery(queryset.order_by().values(group).annotate(t=Max(field)).values("t")[:1],
                             output_field=DateTimeField()), _NEVER)


def last_activity_query(study_id: int, rater_id: int):
    """last_activity_at's read, as a one-value queryset (for a Subquery of a read that wants it too)."""
    member = OuterRef("user_id")
    latest = Greatest(
        "created_at",  # joining the study: the anchor when nothing else has happened yet
        # finishing or skipping an item (a gold answer and a distress skip included)
        _latest(Assignment.objects.filter(study_id=study_id, rater=member), "rater_id", "completed_at"),
        _latest(PairAssignment.objects.filter(study_id=study_id, rater=member), "rater_id", "completed_at"),
        # revising an earlier rating or judgment
        _latest(Rating.objects.filter(response__prompt__study_id=study_id, rater=member), "rater_id", "updated_at"),
        _latest(PairJudgment.objects.filter(pair__study_id=study_id, rater=member), "rater_id", "updated_at"),
        _latest(CalibrationAnswer.objects.filter(attempt__study_id=study_id, attempt__rater=member),
                "attempt__rater_id", "answered_at"),
        _latest(Consent.objects.filter(study_id=study_id, user=member), "user_id", "accepted_at"),
        # entering (or coming back) by the pool's link
        _latest(PanelParticipant.objects.filter(study_id=study_id, user=member), "user_id", "last_seen_at"),
        output_field=DateTimeField(),
    )
    return (StudyMembership.objects.filter(study_id=study_id, user_id=rater_id, role=Role.RATER)
            .annotate(latest=latest).values_list("latest")[:1])


# Compiled once: building these seven subqueries cost more than running them, on every submit.
_LAST_ACTIVITY = Compiled(last_activity_query, study_id=STAND_IN_ID, rater_id=STAND_IN_ID - 1)


def last_activity_at(*, study: Study, rater):
    """When the rater last did something in this study (one query), or None when they are no rater of it."""
    rows = _LAST_ACTIVITY.rows(study_id=study.id, rater_id=rater.id)
    return rows[0][0] if rows else None


def item_seconds(*, study: Study, rater, client, now=None, since=_UNREAD) -> float | None:
    """The seconds to record for the item being submitted now: the client's, parsed, bounded by the time
    observed since the rater's last activity; the observed time alone when the client's is missing or
    malformed. Call it before the item's own completion is written. `since`: the last activity where
    the caller read it already (the rating submit reads it with the item, last_activity_query)."""
    claimed = parse_seconds(client)
    if since is _UNREAD:
        since = last_activity_at(study=study, rater=rater)
    if since is None:  # not a rater of the study: the submit is refused after this anyway
        return claimed
    observed = max(0.0, ((now or timezone.now()) - since).total_seconds())
    return observed if claimed is None else min(claimed, observed)
