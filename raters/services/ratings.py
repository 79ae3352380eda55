"""A rater's ratings: submit (idempotent, revisions audited) or skip an assigned item."""

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from django.db import connection, transaction
from django.db.models import Q, Subquery
from django.utils import timezone

from evalapp.audit import audit
from evalapp.models import Rating, Response, Score, Study, UnsafeCategory

from ..compiled import STAND_IN_ID, Compiled, Query, Sql, columns, instance, run_together, statement_name
from ..models import Assignment, CalibrationItem, GoldAnswer, RatingRevision, WelfareSettings
from ..selectors import rater_status
from ..timing import item_seconds, last_activity_query
from .common import RatingError, parse_answers, stored_values
from .welfare import check_cap, welfare_settings


_UNREAD = object()  # an argument the caller did not pass (None is an answer: no such item)


@dataclass
class Submission:
    # {criterion key: answer}: a whole number for likert, the option key for a choice, or
    # "not_sure"; rationales {criterion key: text} where the rubric asks for them.
    answers: dict
    rationales: dict | None = None
    unsafe: bool = False
    unsafe_category: str = ""
    comment: str = ""
    # The browser's measure of the seconds on screen, as sent (any value: raters.timing reads it).
    seconds_on_item: object = None


def rating_submit(*, study: Study, rater, item_public_id: str, submission: Submission, status=None,
                  item=_UNREAD) -> str:
    """Record a rating (or a gold answer) for an assigned item; idempotent; revisions audited.

    `status` (rater_status's) and `item` (item_query's answer) where the caller read them already, with
    its own reads. Returns "created", "unchanged" or "revised".
    """
    return rating_submit_then(study=study, rater=rater, item_public_id=item_public_id, submission=submission,
                              status=status, item=item)[0]


def rating_submit_then(*, study: Study, rater, item_public_id: str, submission: Submission, status=None,
                       item=_UNREAD, then: Callable[[], tuple[Query, ...]] = tuple) -> tuple[str, list]:
    """rating_submit, and the answers of the queries `then()` makes (called once the item is read, so
    that they may use what came with it: the study's welfare settings), read after the rating is
    written: with the write in one round trip where it is one statement (a first rating), else after
    its transaction."""
    answers = parse_answers(study, submission.answers, submission.rationales)
    if submission.unsafe and submission.unsafe_category not in UnsafeCategory.values:
        raise RatingError("Choose what makes the response unsafe.")
    if not submission.unsafe:
        submission.unsafe_category = ""
    if study.status == Study.Status.CLOSED:
        raise RatingError("This study is closed; ratings can no longer be changed.", status=409)
    if study.status != Study.Status.RATING:
        raise RatingError("This study is not open for rating.", status=409)
    assignment = _assignment_for(study, rater, item_public_id, status, item)
    # Taken before this item's completion is written, which is the next item's start.
    submission.seconds_on_item = item_seconds(study=study, rater=rater, client=submission.seconds_on_item,
                                              since=assignment.last_activity)
    written, read = _written_in_one_statement(study, assignment, rater, submission, answers, then)
    if written:
        return "created", read
    with transaction.atomic():
        check_cap(study, rater, assignment)  # in the write's transaction: it locks until the item is done
        if assignment.gold_item_id:
            _, created = GoldAnswer.objects.get_or_create(
                assignment=assignment,
                defaults={"values": stored_values(answers), "unsafe": submission.unsafe,
                          "seconds_on_item": submission.seconds_on_item},
            )
            outcome = "created" if created else "unchanged"
        else:
            outcome = _save_rating(study, assignment, rater, submission, answers)
        Assignment.objects.filter(id=assignment.id, completed_at__isnull=True).update(completed_at=timezone.now())
    queries = then()  # made now: a welfare state's "now" must not be before the completion it counts
    return outcome, run_together(*queries) if queries else []


def _scores_of(rating: Rating) -> dict:
    return {s.criterion.key: [s.value, s.not_sure, s.rationale] for s in rating.scores.select_related("criterion")}


def _save_rating(study: Study, assignment: Assignment, rater, submission: Submission, answers: dict) -> str:
    values = {
        "unsafe": submission.unsafe,
        "unsafe_category": submission.unsafe_category,
        "comment": submission.comment.strip(),
    }
    scores = {key: [value, not_sure, rationale] for key, (value, not_sure, rationale) in answers.items()}
    rating = _insert_rating(Rating(response_id=assignment.response_id, rater=rater,
                                   seconds_on_item=submission.seconds_on_item, **values))
    if rating is not None:
        _write_scores(rating, study, answers)
        return "created"
    # The row was there (a resubmit, or a concurrent duplicate of this request whose insert committed
    # first: ON CONFLICT waited for it), so it comes with its scores; compare with it.
    rating = Rating.objects.select_for_update().get(response_id=assignment.response_id, rater=rater)
    before = {**{name: getattr(rating, name) for name in values}, "scores": _scores_of(rating)}
    after = {**values, "scores": scores}
    if before == after:
        return "unchanged"
    for name, value in values.items():
        setattr(rating, name, value)
    rating.save(update_fields=[*values, "updated_at"])
    rating.scores.all().delete()
    _write_scores(rating, study, answers)
    RatingRevision.objects.create(rating=rating, changed_by=rater, before=before, after=after)
    audit(study=study, actor=rater, action="rating.revise", obj=rating, before=before, after=after)
    return "revised"


def _rating_insert_sql(rating: Rating) -> tuple[str, list]:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING id of `rating`: bulk_create(ignore_conflicts=True)
    returns no id, and update_conflicts would overwrite the values a revision must compare with;
    PostgreSQL and SQLite (3.35+, the demo) both read this statement."""
    meta = Rating._meta
    fields = [f for f in meta.local_concrete_fields if not f.primary_key]
    qn = connection.ops.quote_name
    params = [f.get_db_prep_save(f.pre_save(rating, add=True), connection) for f in fields]
    unique = [meta.get_field(name).column for name in ("response", "rater")]
    sql = (f"INSERT INTO {qn(meta.db_table)} ({', '.join(qn(f.column) for f in fields)}) "
           f"VALUES ({', '.join(['%s'] * len(fields))}) "
           f"ON CONFLICT ({', '.join(qn(c) for c in unique)}) DO NOTHING RETURNING {qn(meta.pk.column)}")
    return sql, params


def _insert_rating(rating: Rating) -> Rating | None:
    """The new row in one round trip, or None when the rater's rating of the response exists."""
    sql, params = _rating_insert_sql(rating)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    rating.pk = row[0]
    rating._state.adding, rating._state.db = False, connection.alias
    return rating


def _statement_name() -> str:
    """The name the one statement is prepared under (raters.compiled), for what watches for it."""
    return statement_name(_one_statement_sql())


@cache  # PostgreSQL's spelling only: the text is the same for every call
def _one_statement_sql() -> str:
    """The rating, its scores and the item's completion as one PostgreSQL statement (data-modifying CTEs):
    one round trip where the transaction took five (BEGIN, three writes, COMMIT), and as atomic, since
    a statement is all or nothing. The scores come as one array per column (UNNEST), so the text is the
    same for every rubric. Nothing is written when the rating exists: the item is then done already,
    or a concurrent duplicate's insert committed first (ON CONFLICT waited for it); the caller goes on
    to the transaction that compares and revises."""
    qn = connection.ops.quote_name
    score_fields = [f for f in Score._meta.local_concrete_fields if not f.primary_key and f.name != "rating"]
    columns = ", ".join(qn(f.column) for f in score_fields)
    arrays = ", ".join(f"%s::{f.db_type(connection)}[]" for f in score_fields)
    assignment = Assignment._meta
    rating_sql, _ = _rating_insert_sql(Rating(response_id=0, rater_id=0))
    return (
        f"WITH new_rating AS ({rating_sql}), "
        f"new_scores AS (INSERT INTO {qn(Score._meta.db_table)} ({qn(Score._meta.get_field('rating').column)}, "
        f"{columns}) SELECT new_rating.{qn(Rating._meta.pk.column)}, answer.* FROM new_rating, "
        f"UNNEST({arrays}) AS answer), "
        f"item_done AS (UPDATE {qn(assignment.db_table)} SET {qn(assignment.get_field('completed_at').column)} = %s "
        f"WHERE {qn(assignment.pk.column)} = %s AND {qn(assignment.get_field('completed_at').column)} IS NULL "
        f"AND EXISTS (SELECT 1 FROM new_rating)) "
        f"SELECT {qn(Rating._meta.pk.column)} FROM new_rating"
    )


def _written_in_one_statement(study: Study, assignment: Assignment, rater, submission: Submission,
                              answers: dict, then: Callable[[], tuple[Query, ...]] = tuple) -> tuple[bool, list]:
    """(True, the answers of `then()`'s queries): a first rating of an item written by
    _one_statement_sql(), those reads sent after it in the same round trip. (False, []) where nothing was written (the rating
    exists) or where the statement does not apply: SQLite (no data-modifying CTEs), a gold item, a
    finished item (a resubmit), or a study with a cap, whose check must lock and count first."""
    if connection.vendor != "postgresql" or assignment.gold_item_id or assignment.completed_at is not None:
        return False, []
    settings = welfare_settings(study)
    if settings.cap_per_day or settings.cap_per_session:
        return False, []
    rating = Rating(response_id=assignment.response_id, rater=rater, seconds_on_item=submission.seconds_on_item,
                    unsafe=submission.unsafe, unsafe_category=submission.unsafe_category,
                    comment=submission.comment.strip())
    _, rating_params = _rating_insert_sql(rating)
    criteria = {c.key: c for c in study.criterion_rows()}
    score_fields = [f for f in Score._meta.local_concrete_fields if not f.primary_key and f.name != "rating"]
    scores = [Score(criterion=criteria[key], value=value, not_sure=not_sure, rationale=rationale,
                    min_value=criteria[key].min_value, max_value=criteria[key].max_value)
              for key, (value, not_sure, rationale) in answers.items()]
    arrays = [[f.get_db_prep_save(getattr(score, f.attname), connection) for score in scores] for f in score_fields]
    # Its text is the same for every submit: prepared, planned once per connection, as the reads are.
    write = Query(Sql(_one_statement_sql(), [*rating_params, *arrays, timezone.now(), assignment.id]), {}, bool)
    # The reads made after the completion's time is taken: a welfare state counts only what is done by its now.
    written, *read = run_together(write, *then())
    # Where the rating was there (a concurrent duplicate's insert committed first), nothing was written
    # and the reads are the caller's to make again, after the transaction that compares.
    return (True, read) if written else (False, [])


def _write_scores(rating: Rating, study: Study, answers: dict) -> None:
    criteria = {c.key: c for c in study.criterion_rows()}
    Score.objects.bulk_create([
        Score(rating=rating, criterion=criteria[key], value=value, not_sure=not_sure, rationale=rationale,
              min_value=criteria[key].min_value, max_value=criteria[key].max_value)
        for key, (value, not_sure, rationale) in answers.items()
    ])


def assignment_skip(*, study: Study, rater, item_public_id: str, reason: str) -> None:
    if not reason.strip():
        raise RatingError("Say why you can't judge this response.")
    if study.status != Study.Status.RATING:
        raise RatingError("This study is not open for rating.", status=409)
    assignment = _assignment_for(study, rater, item_public_id)
    with transaction.atomic():
        check_cap(study, rater, assignment)
        Assignment.objects.filter(id=assignment.id, completed_at__isnull=True).update(
            completed_at=timezone.now(), skip_reason=reason.strip()[:500]
        )


def _item_query(study_id: int, rater_id: int, public_id: str):
    # The item with the rater's last activity (raters.timing) and the study's welfare settings (the cap
    # check's, the next item's breaks): one round trip for what a submit reads before it writes.
    # The item by its public id through each table's unique index (an OR across the joined tables read
    # every slot of the queue with its response); one assignment per rater and item, so no ordering.
    return (Assignment.objects.filter(study_id=study_id, rater_id=rater_id)
            .filter(Q(response_id__in=Response.objects.filter(public_id=public_id).values("id"))
                    | Q(gold_item_id__in=CalibrationItem.objects.filter(public_id=public_id).values("id")))
            .annotate(last_activity=Subquery(last_activity_query(study_id, rater_id)))
            .order_by()
            .values_list(*columns(Assignment), *columns(WelfareSettings, "study__welfare__"), "last_activity")[:1])


# Compiled once: its eight subqueries cost more to build than to run, on every submit.
_ITEM = Compiled(_item_query, study_id=STAND_IN_ID, rater_id=STAND_IN_ID - 1, public_id="stand-in:public-id")


def item_query(*, study_id: int, rater, item_public_id: str) -> Query:
    """The rater's assignment of the item (None: no such assignment), with `last_activity`
    (raters.timing.last_activity_at's answer, read before anything of this request is written) and the
    study's welfare settings (`study_welfare`); to run with the caller's other reads (run_together)."""
    return Query(_ITEM, {"study_id": study_id, "rater_id": rater.id, "public_id": item_public_id}, _item_of)


def _item_of(rows: list[tuple]):
    if not rows:
        return None
    *values, last_activity = rows[0]
    width = len(Assignment._meta.concrete_fields)
    assignment = instance(Assignment, values[:width])
    assignment.last_activity = last_activity
    assignment.study_welfare = instance(WelfareSettings, values[width:])  # None: the defaults (none saved)
    return assignment



def _assignment_for(study: Study, rater, item_public_id: str, status=None, item=_UNREAD) -> Assignment:
    """The rater's assignment of the item (item_query's answer, read here where the caller has not); the
    study's welfare settings come with it."""
    status = status or rater_status(study=study, user=rater)
    if not status.can_rate:
        raise RatingError("No such item.", status=404)
    if item is _UNREAD:
        item = run_together(item_query(study_id=study.id, rater=rater, item_public_id=item_public_id))[0]
    if item is None:
        raise RatingError("No such item.", status=404)
    # As study.welfare would have read it (None: the defaults, unsaved); a request's study object is its own.
    Study._meta.get_field("welfare").set_cached_value(study, item.study_welfare)
    return item
