"""The rating hot path's fewer round trips (issue 18): prepared statements, reads sent together, the
rating written in one statement. Each must answer exactly as the plain path it replaced."""

import pytest
from django.db import DatabaseError, connection, transaction
from django.http import Http404
from django.template.loader import render_to_string
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from evalapp.models import Rating, Score
from raters import selectors, services
from raters.access import get_study_for
from raters.compiled import RawRead, _numbered, _parameter_type, rows_together, run_together
from raters.models import Assignment, Role
from raters.services import Submission
from raters.services import ratings as rating_services
from raters.templatetags.scales import rubric_for_display, scales

from .conftest import add_rater

pytestmark = pytest.mark.django_db
postgresql = pytest.mark.skipif("connection.vendor != 'postgresql'")  # SQLite (the demo) keeps the plain path


def _prepared_names() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return {row[0] for row in cursor.fetchall()}


def _rated(study, rater, answers, **extra):
    item = selectors.next_item(study=study, rater=rater).assignment
    outcome = services.rating_submit(study=study, rater=rater, item_public_id=item.response.public_id,
                                     submission=Submission(answers, **extra))
    rating = Rating.objects.get(response=item.response, rater=rater)
    scores = sorted(Score.objects.filter(rating=rating).values_list(
        "criterion__key", "value", "not_sure", "min_value", "max_value", "rationale"))
    done = Assignment.objects.get(id=item.id).completed_at is not None
    return outcome, (rating.unsafe, rating.unsafe_category, rating.comment, rating.seconds_on_item), scores, done


@postgresql
def test_a_first_rating_is_one_statement_and_writes_what_the_transaction_wrote(open_study, settings, monkeypatch):
    fast, slow = add_rater(open_study, "fast"), add_rater(open_study, "slow")
    answers = {"empathy": 7, "fluency": 2}
    extra = {"unsafe": True, "unsafe_category": "self_harm", "comment": "  worrying  "}
    with CaptureQueriesContext(connection) as queries:
        by_statement = _rated(open_study, fast, answers, **extra)
    # One query: the rating, its scores and the item done in one statement (prepared, or EXECUTEd once it is).
    sql = " ".join(q["sql"] for q in queries.captured_queries)
    assert sql.count("EXECUTE " + rating_services._statement_name()) == 1
    assert not any(q["sql"].startswith("INSERT INTO \"evalapp_score\"") for q in queries.captured_queries)
    monkeypatch.setattr(rating_services, "_written_in_one_statement", lambda *args: (False, []))
    by_transaction = _rated(open_study, slow, answers, **extra)
    assert by_statement[0] == by_transaction[0] == "created"
    assert by_statement[1][:3] == by_transaction[1][:3] == (True, "self_harm", "worrying")
    assert by_statement[2] == by_transaction[2] and by_statement[3] and by_transaction[3]
    assert [s[1:3] for s in by_statement[2]] == [(7, False), (2, False)]


@postgresql
def test_not_sure_answers_go_through_the_statement_as_nulls(open_study):
    rater = add_rater(open_study, "r1")
    item = selectors.next_item(study=open_study, rater=rater).assignment
    # Every value NULL: the arrays carry no element to infer a type from, the statement's casts do.
    answers = {"empathy": (None, True, "can't tell"), "fluency": (None, True, "")}
    assert rating_services._written_in_one_statement(open_study, item, rater, Submission({}), answers) == (True, [])
    assert sorted(Score.objects.filter(rating__rater=rater).values_list("value", "not_sure", "rationale")) == [
        (None, True, ""), (None, True, "can't tell")]


@postgresql
def test_a_resubmit_and_a_study_with_a_cap_take_the_transaction(open_study):
    rater = add_rater(open_study, "r1")
    item = selectors.next_item(study=open_study, rater=rater).assignment.response.public_id
    first = services.rating_submit(study=open_study, rater=rater, item_public_id=item,
                                   submission=Submission({"empathy": 3, "fluency": 4}))
    again = services.rating_submit(study=open_study, rater=rater, item_public_id=item,
                                   submission=Submission({"empathy": 5, "fluency": 4}))
    assert (first, again) == ("created", "revised")
    assert sorted(Score.objects.filter(rating__rater=rater).values_list("value", flat=True)) == [4, 5]
    services.welfare_save(study=open_study, actor=open_study.owner, cap_per_day=1)
    open_study.refresh_from_db()
    nxt = selectors.next_item(study=open_study, rater=rater).assignment.response.public_id
    with pytest.raises(services.RatingError, match="limit"):  # the cap is counted, under its lock
        services.rating_submit(study=open_study, rater=rater, item_public_id=nxt,
                               submission=Submission({"empathy": 3, "fluency": 4}))
    assert Rating.objects.filter(rater=rater).count() == 1


@postgresql
def test_a_failed_statement_writes_nothing(open_study):
    rater = add_rater(open_study, "r1")
    study = open_study
    item = selectors.next_item(study=study, rater=rater).assignment
    # 11 on a 1-10 scale: parse_answers would refuse it; past it, the database's constraint does.
    answers = {"empathy": (11, False, ""), "fluency": (5, False, "")}
    with pytest.raises(DatabaseError), transaction.atomic():
        rating_services._written_in_one_statement(study, item, rater, Submission({}), answers)
    assert not Rating.objects.filter(rater=rater).exists() and not Score.objects.filter(rating__rater=rater).exists()
    assert Assignment.objects.get(id=item.id).completed_at is None


@postgresql
def test_reads_together_answer_as_one_by_one_and_are_prepared(open_study, settings):
    rater = add_rater(open_study, "r1")
    queries = [selectors.next_item_query(study=open_study, rater=rater),
               services.rater_state_query(open_study, rater),
               services.item_query(study_id=open_study.id, rater=rater, item_public_id="nope")]
    with CaptureQueriesContext(connection) as captured:
        together = run_together(*queries)
    # One query, logged with its values in it as Django logs its own: three EXECUTEs.
    assert len(captured) == 1 and captured.captured_queries[0]["sql"].count("EXECUTE ee_") == 3
    assert "'nope'" in captured.captured_queries[0]["sql"]
    with CaptureQueriesContext(connection) as again:
        one_by_one = [run_together(q)[0] for q in queries]
    assert "PREPARE" not in " ".join(q["sql"] for q in again.captured_queries)  # prepared once per connection
    settings.PREPARED_STATEMENTS = False
    with CaptureQueriesContext(connection) as unprepared:
        plain = [run_together(q)[0] for q in queries]
    assert len(unprepared) == 3 and "EXECUTE" not in " ".join(q["sql"] for q in unprepared.captured_queries)
    assert together[0].assignment == one_by_one[0].assignment == plain[0].assignment is not None
    assert (together[0].done, together[0].total) == (plain[0].done, plain[0].total) == (0, 12)
    assert together[1] == one_by_one[1] == plain[1] and together[2] is one_by_one[2] is plain[2] is None
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'ee%%'")
        assert cursor.fetchone()[0] >= 3


@postgresql
def test_an_error_in_reads_together_is_djangos_and_the_next_call_finds_what_was_prepared(study):
    bad = RawRead("SELECT 1 / %s", "zero")
    with pytest.raises(DatabaseError), transaction.atomic():
        rows_together((RawRead("SELECT %s::int", "n"), {"n": 1}), (bad, {"zero": 0}))
    # The first PREPARE ran before the error and outlived it; the next call starts again from none.
    assert rows_together((RawRead("SELECT %s::int", "n"), {"n": 4}), (bad, {"zero": 2})) == [[(4,)], [(0,)]]
    assert rows_together((RawRead("SELECT %s::int + 1", "n"), {"n": 1}))[0] == [(2,)]


def test_placeholders_are_numbered_and_a_literal_percent_kept():
    assert _numbered("SELECT %s, '50%%', %s::int[] WHERE x LIKE 'a%%b' AND y = %s") == (
        "SELECT $1, '50%%', $2::int[] WHERE x LIKE 'a%%b' AND y = $3")
    assert [_parameter_type(v) for v in (True, 3, 1.5, "x", None, [1], timezone.now())] == [
        "boolean", "bigint", "double precision", "unknown", "unknown", "unknown", "timestamptz"]


def test_the_raters_study_read_is_get_study_for_and_rater_status(open_study):
    rater = add_rater(open_study, "r1")
    item = selectors.next_item(study=open_study, rater=rater).assignment.response.public_id
    also = (services.item_query(study_id=open_study.id, rater=rater, item_public_id=item),)
    study, status, (assignment,) = selectors.rater_study(user=rater, study_id=open_study.id, also=also)
    assert study == get_study_for(rater, open_study.id, roles=[Role.RATER])
    assert status == selectors.rater_status(study=open_study, user=rater) and status.can_rate
    assert study.rubric() == open_study.rubric() and [c.key for c in study.criterion_rows()] == ["empathy", "fluency"]
    assert assignment.response.public_id == item and assignment.last_activity is not None
    with pytest.raises(Http404):  # the owner is no rater of it; a stranger is nothing
        selectors.rater_study(user=open_study.owner, study_id=open_study.id)
    with pytest.raises(Http404):
        selectors.rater_study(user=rater, study_id=open_study.id + 1000)


def test_the_scales_are_drawn_once_per_rubric_and_as_the_template_draws_them(open_study):
    criteria = rubric_for_display(open_study)
    for reference in (False, True):
        assert scales(criteria, reference) == render_to_string(
            "raters/_scales.html", {"criteria": criteria, "reference": reference})
    edited = [dict(criteria[0], question="How warm is it?"), criteria[1]]
    assert "How warm is it?" in scales(edited) and "How warm is it?" not in scales(criteria)


@pytest.mark.parametrize("cap", [None, 50], ids=["one statement", "transaction (a cap)"])
def test_the_reads_after_a_submit_see_it(open_study, cap):
    rater = add_rater(open_study, "r1")
    if cap:
        services.welfare_save(study=open_study, actor=open_study.owner, cap_per_day=cap)
        open_study.refresh_from_db()
    first = selectors.next_item(study=open_study, rater=rater).assignment
    outcome, (upcoming,) = services.rating_submit_then(
        study=open_study, rater=rater, item_public_id=first.response.public_id,
        submission=Submission({"empathy": 6, "fluency": 6}),
        then=lambda: (selectors.next_item_query(study=open_study, rater=rater),))
    assert outcome == "created" and upcoming.done == 1 and upcoming.assignment.id != first.id
    assert upcoming.assignment == selectors.next_item(study=open_study, rater=rater).assignment


@pytest.mark.parametrize("cap", [0, 50], ids=["one statement", "transaction (a cap)"])
def test_the_submit_that_makes_a_break_due_answers_with_the_break(client, open_study, cap):
    # The welfare state read with the write must count the item the write finished (its "now" after it).
    rater = add_rater(open_study, "r1")
    services.welfare_save(study=open_study, actor=open_study.owner, break_every_items=1, cap_per_day=cap)
    client.force_login(rater)
    item = selectors.next_item(study=open_study, rater=rater).assignment.response.public_id
    response = client.post(reverse("rate_submit", args=[open_study.id, item]),
                           {"score-empathy": 4, "score-fluency": 6}, headers={"X-Requested-With": "fetch"})
    assert response.status_code == 200 and 'id="welfare-break"' in response.content.decode()
