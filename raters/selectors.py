"""Reads for raters: where a rater stands, their next item, and per-rater quality."""

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count, Exists, IntegerField, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404

from evalapp.models import Criterion, Prompt, Response, Study

from .access import get_study_for, studies_for
from .compiled import STAND_IN_ID, Compiled, Query, RawRead, columns, instance, run_together
from .models import (
    Assignment,
    CalibrationAttempt,
    CalibrationItem,
    Consent,
    ConsentVersion,
    PanelParticipant,
    ParticipantStatus,
    Role,
    StudyMembership,
)


@dataclass(frozen=True)
class RaterStatus:
    is_rater: bool
    withdrawn: bool
    excluded: bool
    consent_version_id: int | None
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


# Hand-written SQL: this runs on every rating request, and building the same
# statement through the ORM (five subqueries) cost more than running it.
_RATER_STATUS_SQL = """
SELECT m.withdrawn_at, m.excluded_at, m.calibration_decision, v.id AS version_id,
       EXISTS (SELECT 1 FROM raters_consent c WHERE c.study_id = m.study_id AND c.user_id = m.user_id
               AND c.withdrawn_at IS NULL AND c.version_id = v.id) AS consented,
       EXISTS (SELECT 1 FROM raters_calibrationitem i WHERE i.study_id = m.study_id AND NOT i.use_as_gold) AS has_items,
       a.number AS last_number, a.finished_at AS last_finished, a.passed AS last_passed
FROM raters_studymembership m
LEFT JOIN LATERAL (SELECT id FROM raters_consentversion WHERE study_id = m.study_id
                   ORDER BY version DESC LIMIT 1) v ON TRUE
LEFT JOIN LATERAL (SELECT number, finished_at, passed FROM raters_calibrationattempt
                   WHERE study_id = m.study_id AND rater_id = m.user_id ORDER BY number DESC LIMIT 1) a ON TRUE
WHERE m.study_id = %s AND m.user_id = %s AND m.role = %s
LIMIT 1
"""


_RATER_STATUS = RawRead(_RATER_STATUS_SQL, "study_id", "user_id", "role")


def rater_status(*, study: Study, user) -> RaterStatus:
    """Where a rater stands, in one query."""
    if connection.vendor == "postgresql":
        return _status_from(_RATER_STATUS.rows(study_id=study.id, user_id=user.id, role=Role.RATER))
    # SQLite (the demo) has no LATERAL; the ORM spelling of the same question.
    row = _with_status(study, StudyMembership.objects.filter(user=user)).values(*_STATUS_FIELDS).first()
    if row is None:
        return RaterStatus(False, False, False, None, False, "none")
    return _status_of(row)


def _status_from(rows: list[tuple]) -> RaterStatus:
    if not rows:
        return RaterStatus(False, False, False, None, False, "none")
    return _status_of(dict(zip(_STATUS_FIELDS, rows[0], strict=True)))


def _rater_study_query(study_id: int, user_id: int):
    # get_study_for's rule, for a rater: an unsaved user with that id filters as the user would.
    return studies_for(get_user_model()(id=user_id), [Role.RATER]).filter(id=study_id).values_list(*columns(Study))


_RATER_STUDY = Compiled(_rater_study_query, study_id=STAND_IN_ID, user_id=STAND_IN_ID - 1)
_CRITERIA = Compiled(lambda study_id: Criterion.objects.filter(study_id=study_id).values_list(*columns(Criterion)),
                     study_id=STAND_IN_ID)


def rater_study(*, user, study_id: int, also: tuple[Query, ...] = ()) -> tuple[Study, RaterStatus, list]:
    """get_study_for(user, study_id, roles=[RATER]) (404 where they have no such role) and rater_status,
    with the study's criteria (Study.rubric()), and the answers of the `also` queries: on PostgreSQL all
    in one round trip, for the rating page and its submit, which make these reads on every request.
    An `also` query must stand on its own (it runs whether or not the user is the study's rater)."""
    if connection.vendor != "postgresql":
        study = get_study_for(user, study_id, roles=[Role.RATER])
        return study, rater_status(study=study, user=user), run_together(*also) if also else []
    found = run_together(
        Query(_RATER_STUDY, {"study_id": study_id, "user_id": user.id}, list),
        Query(_RATER_STATUS, {"study_id": study_id, "user_id": user.id, "role": Role.RATER}, _status_from),
        Query(_CRITERIA, {"study_id": study_id}, list),
        *also,
    )
    (study_rows, status, criteria_rows), answers = found[:3], found[3:]
    if not study_rows:
        raise Http404("No such study.")
    study = instance(Study, study_rows[0])
    study.keep_criterion_rows([instance(Criterion, row) for row in criteria_rows])
    return study, status, answers


def eligible_raters(study: Study) -> list:
    """Raters who consented to the current version, passed calibration (or were approved), and are active:
    one query, whatever the number of raters.

    A pool participant is eligible only while their place is active: one who finished (a code in hand),
    was screened out, timed out, returned or was rejected has gone back to the pool and will not rate
    what a rebalance would give them."""
    members = _with_status(study, StudyMembership.objects.filter(withdrawn_at__isnull=True, excluded_at__isnull=True,
                                                                 user__is_active=True))
    members = members.exclude(Exists(PanelParticipant.objects.filter(study=study, user_id=OuterRef("user_id"))
                                     .exclude(status=ParticipantStatus.ACTIVE)))
    return [m.user for m in members.select_related("user")
            if _status_of({name: getattr(m, name) for name in _STATUS_FIELDS}).can_rate]


_STATUS_FIELDS = ("withdrawn_at", "excluded_at", "calibration_decision", "version_id", "consented", "has_items",
                  "last_number", "last_finished", "last_passed")


def _with_status(study: Study, members):
    """The study's rater memberships among `members`, each with the columns _status_of() reads."""
    latest = ConsentVersion.objects.filter(study=study).order_by("-version")
    attempts = CalibrationAttempt.objects.filter(study=study, rater=OuterRef("user_id")).order_by("-number")
    consents = Consent.objects.filter(study=study, user=OuterRef("user_id"), withdrawn_at__isnull=True,
                                      version_id=OuterRef("version_id"))
    return members.filter(study=study, role=Role.RATER).annotate(
        version_id=Subquery(latest.values("id")[:1]),
        consented=Exists(consents),
        has_items=Exists(CalibrationItem.objects.filter(study=study, use_as_gold=False)),
        last_number=Subquery(attempts.values("number")[:1]),
        last_finished=Subquery(attempts.values("finished_at")[:1]),
        last_passed=Subquery(attempts.values("passed")[:1]),
    )


def _status_of(row: dict) -> RaterStatus:
    return RaterStatus(
        is_rater=True,
        withdrawn=row["withdrawn_at"] is not None,
        excluded=row["excluded_at"] is not None,
        consent_version_id=row["version_id"],
        consented=row["version_id"] is None or bool(row["consented"]),
        calibration=_calibration_state(row),
    )


def _calibration_state(row: dict) -> str:
    if row["calibration_decision"] in ("approved", "rejected"):
        return row["calibration_decision"]
    if not row["has_items"]:
        return "none"
    if row["last_number"] is None:
        return "pending"
    if row["last_finished"] is None:
        return "in_progress"
    if row["last_passed"]:
        return "passed"
    return "retry" if row["last_number"] < 2 else "failed"


@dataclass(frozen=True)
class NextItem:
    assignment: Assignment | None
    done: int
    total: int


def _queue_head(study_id: int, rater_id: int):
    # The first unfinished slot of the queue by position (the index assignment_next_item answers it), or
    # the first finished one when nothing is left, so that a row carries the counts either way; the
    # counts are subqueries over the rater's queue, evaluated for that one row. The columns are those of
    # the assignment, its response and prompt, and its gold item (select_related's, by name), joined for
    # the one row only (a window over the whole queue joined every slot's response and prompt first).
    mine = Assignment.objects.filter(study_id=study_id, rater_id=rater_id).order_by()
    first_open = mine.filter(completed_at__isnull=True).order_by("position").values("id")[:1]
    first_done = mine.order_by("completed_at", "position").values("id")[:1]

    def count(field):
        return Subquery(mine.values("rater_id").annotate(n=Count(field)).values("n"), output_field=IntegerField())

    return (
        Assignment.objects.filter(id=Coalesce(Subquery(first_open), Subquery(first_done)))
        .annotate(queue_total=count("id"), queue_done=count("completed_at"))
        .order_by()
        .values_list(*_HEAD_COLUMNS, "queue_total", "queue_done")
    )


_HEAD_MODELS = ((Assignment, ""), (Response, "response__"), (Prompt, "response__prompt__"),
                (CalibrationItem, "gold_item__"))
_HEAD_COLUMNS = [name for model, prefix in _HEAD_MODELS for name in columns(model, prefix)]
# Compiled once: next_item runs on every rating page and submit, and building it cost more than running it.
_QUEUE_HEAD = Compiled(_queue_head, study_id=STAND_IN_ID, rater_id=STAND_IN_ID - 1)


def next_item(*, study: Study, rater) -> NextItem:
    """The first unfinished slot of the rater's queue and the progress counts: one query, whatever the size.
    The assignment comes with its response and prompt, or its gold item, as select_related would give them."""
    return run_together(next_item_query(study=study, rater=rater))[0]


def next_item_query(*, study: Study, rater) -> Query:
    """next_item's read, to run with others (raters.compiled.run_together)."""
    return Query(_QUEUE_HEAD, {"study_id": study.id, "rater_id": rater.id}, _next_item_of)


def _next_item_of(rows: list[tuple]) -> NextItem:
    if not rows:
        return NextItem(assignment=None, done=0, total=0)
    *values, total, done = rows[0]
    made, start = [], 0
    for model, _ in _HEAD_MODELS:
        width = len(model._meta.concrete_fields)
        made.append(instance(model, values[start:start + width]))
        start += width
    assignment, response, prompt, gold_item = made
    if assignment.completed_at is not None:
        return NextItem(assignment=None, done=done, total=total)
    if response is not None:
        response.prompt = prompt
    assignment.response, assignment.gold_item = response, gold_item
    return NextItem(assignment=assignment, done=done, total=total)


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
