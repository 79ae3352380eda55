"""Seconds on an item and what a pool participant is paid for them: the client's seconds are bounded by the
time the server saw (raters.timing), missing or malformed seconds fall back to that time, and the payment
sheet says what its numbers mean."""

import csv
import io
import math
import random
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from evalapp.models import PairJudgment, Rating
from raters import services
from raters.models import Assignment, CalibrationItem, GoldAnswer, PairAssignment, PairGoldAnswer, PanelParticipant
from raters.services import Submission
from raters.services.panel_pay import NO_THRESHOLD, TIME_BASIS
from raters.timing import last_activity_at, parse_seconds

from .conftest import add_rater
from .test_panel import consent, enter, make_link, prolific
from .test_pairwise_flow import _open as open_pairs

ANSWERS = {"empathy": 5, "fluency": 5}


def test_parse_seconds_keeps_only_finite_non_negative_numbers():
    assert [parse_seconds(v) for v in (12.5, "12.5", " 3 ", 0, "0", 86400)] == [12.5, 12.5, 3.0, 0.0, 0.0, 86400.0]
    for bad in (None, "", "abc", "NaN", "nan", "inf", "-inf", "Infinity", "-3", -0.5, "1e400", 86401, True, [], {},
                "12,5"):
        assert parse_seconds(bad) is None, bad


def next_public(study, user):
    a = Assignment.objects.filter(study=study, rater=user, completed_at__isnull=True).order_by("position").first()
    return a.gold_item.public_id if a.gold_item_id else a.response.public_id


def submit(study, user, seconds):
    public = next_public(study, user)
    services.rating_submit(study=study, rater=user, item_public_id=public,
                           submission=Submission(dict(ANSWERS), seconds_on_item=seconds))
    return Rating.objects.get(rater=user, response__public_id=public)


@pytest.mark.django_db
def test_inflated_seconds_are_capped_at_the_time_the_server_saw(open_study, clock):
    rater = add_rater(open_study, "r0")
    clock.advance(40)
    assert submit(open_study, rater, 590).seconds_on_item == 40  # 40 s since consent, not the 590 claimed
    clock.advance(25)
    assert submit(open_study, rater, 10).seconds_on_item == 10  # less than observed: the browser's own measure
    clock.advance(7)
    assert submit(open_study, rater, 7.5).seconds_on_item == 7  # since the previous item's completion


@pytest.mark.django_db
def test_no_seconds_or_malformed_seconds_keep_the_rating_and_record_the_observed_time(client, open_study, clock):
    rater = add_rater(open_study, "r0")
    client.force_login(rater)
    for posted, seen in ((None, 75), ("abc", 20), ("NaN", 30), ("inf", 40), ("-3", 50), ("1e400", 60),
                         ("4\x00", 70), ("9" * 5000, 80)):
        public = next_public(open_study, rater)
        clock.advance(seen)
        data = {"score-empathy": 6, "score-fluency": 4, **({} if posted is None else {"seconds": posted})}
        response = client.post(reverse("rate_submit", args=[open_study.id, public]), data)
        assert response.status_code == 302, posted
        rating = Rating.objects.get(rater=rater, response__public_id=public)
        assert rating.seconds_on_item == seen, posted
    assert Rating.objects.filter(rater=rater).count() == 8
    assert not any(math.isnan(s) or math.isinf(s) for s in Rating.objects.values_list("seconds_on_item", flat=True))


@pytest.mark.django_db
def test_the_api_bounds_seconds_and_takes_malformed_ones_as_missing(open_study, clock):
    rater = add_rater(open_study, "r0")
    api = APIClient()
    api.force_authenticate(rater)
    for claimed, seen, stored in ((590, 30, 30), ("NaN", 12, 12), ("abc", 8, 8), (None, 9, 9), (4.5, 9, 4.5)):
        public = next_public(open_study, rater)
        clock.advance(seen)
        url = reverse("api_rating_submit", kwargs={"study_id": open_study.id, "public_id": public})
        response = api.post(url, {"answers": ANSWERS, "seconds_on_item": claimed}, format="json")
        assert response.status_code == 201, (claimed, response.content)
        assert Rating.objects.get(rater=rater, response__public_id=public).seconds_on_item == stored


@pytest.mark.django_db
def test_pairwise_judgments_and_gold_pairs_are_bounded_too(client, rating_study, researcher, clock):
    services.gold_pair_add(study=rating_study, user=researcher,
                           messages=[{"role": "user", "content": "I lost my job and feel worthless."}],
                           better_text="That sounds painful.", worse_text="Just get another one.", rationale="r")
    rater = add_rater(rating_study, "r0")
    add_rater(rating_study, "r1")
    open_pairs(rating_study, k=2, gold_rate=0.5)
    client.force_login(rater)
    judged = 0
    for a in PairAssignment.objects.filter(rater=rater).order_by("position"):
        public = a.pair.public_id if a.pair_id else a.gold_pair.public_id
        clock.advance(15)
        # Alternate an inflated claim with a malformed one: both record the 15 s the server saw.
        posted = {"pick-empathy": "a", "pick-fluency": "same", "seconds": "900" if judged % 2 else "NaN"}
        assert client.post(reverse("compare_submit", args=[rating_study.id, public]), posted).status_code == 302
        judged += 1
    seconds = [*PairJudgment.objects.filter(rater=rater).values_list("seconds_on_item", flat=True),
               *PairGoldAnswer.objects.filter(assignment__rater=rater).values_list("seconds_on_item", flat=True)]
    assert len(seconds) == judged and PairGoldAnswer.objects.filter(assignment__rater=rater).exists()
    assert set(seconds) == {15}


@pytest.mark.django_db
def test_gold_answers_are_bounded_and_revisions_restart_the_clock(rating_study, researcher, clock):
    rating_study.gold_rate = 0.5
    rating_study.save()
    CalibrationItem.objects.create(study=rating_study, messages=[{"role": "user", "content": "Gold?"}],
                                   response_text="Yes.", references=dict(ANSWERS), rationale="r",
                                   created_by=researcher, use_as_gold=True)
    services.study_open_for_rating(study=rating_study)
    rater = add_rater(rating_study, "r0")
    first = None
    while Assignment.objects.filter(rater=rater, completed_at__isnull=True).exists():
        public = next_public(rating_study, rater)
        first = first or public
        clock.advance(20)
        services.rating_submit(study=rating_study, rater=rater, item_public_id=public,
                               submission=Submission(dict(ANSWERS), seconds_on_item=500))
    assert set(GoldAnswer.objects.filter(assignment__rater=rater).values_list("seconds_on_item", flat=True)) == {20}
    assert set(Rating.objects.filter(rater=rater).values_list("seconds_on_item", flat=True)) == {20}
    # Revising an earlier item is activity too: the next item's time starts there.
    clock.advance(100)
    revised = Rating.objects.filter(rater=rater).order_by("id").first()
    services.rating_submit(study=rating_study, rater=rater, item_public_id=revised.response.public_id,
                           submission=Submission({"empathy": 9, "fluency": 9}))
    clock.advance(3)
    assert last_activity_at(study=rating_study, rater=rater) == clock.now - timedelta(seconds=3)


@pytest.mark.django_db
def test_the_sum_of_recorded_seconds_never_exceeds_wall_time(open_study, clock):
    rater = add_rater(open_study, "r0")
    start = clock.now
    rng = random.Random(7)
    while Assignment.objects.filter(rater=rater, completed_at__isnull=True).exists():
        clock.advance(rng.uniform(0, 60))
        claimed = rng.choice([None, "abc", rng.uniform(0, 600), rng.uniform(0, 5)])
        if rng.random() < 0.2:  # a skip uses up time that no item is paid for
            services.assignment_skip(study=open_study, rater=rater, item_public_id=next_public(open_study, rater),
                                     reason="unsure")
        else:
            submit(open_study, rater, claimed)
    recorded = sum(Rating.objects.filter(rater=rater).values_list("seconds_on_item", flat=True))
    assert 0 < recorded <= (clock.now - start).total_seconds()


@pytest.mark.django_db
def test_the_time_since_the_last_action_is_one_query(open_study, django_assert_num_queries):
    rater = add_rater(open_study, "r0")
    submit(open_study, rater, 5)
    with django_assert_num_queries(1):
        assert last_activity_at(study=open_study, rater=rater) is not None


def sheet(client, study, **query):
    response = client.get(reverse("panel_payments", args=[study.id]), query)
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.mark.django_db
def test_a_participant_without_javascript_is_paid_and_an_inflater_only_for_the_time_seen(
        client, open_study, researcher, clock):
    link = make_link(open_study, researcher)
    honest, inflater = Client(), Client()
    enter(honest, link, **prolific("5f0c1a2b3c4d5e6f7a8b9c0d"))
    consent(honest, open_study)
    enter(inflater, link, **prolific("60aabbccddeeff0011223344"))
    consent(inflater, open_study)
    for _ in range(3):  # each item takes a minute of wall time for both
        clock.advance(60)
        for c in (honest, inflater):
            user = c.session["_auth_user_id"]
            public = next_public(open_study, user)
            posted = {"score-empathy": 5, "score-fluency": 5}
            if c is inflater:
                posted["seconds"] = "290"  # just under the 5-minute break length: all of it would be paid
            assert c.post(reverse("rate_submit", args=[open_study.id, public]), posted).status_code == 302
    client.force_login(researcher)
    rows = {r["participant_id"]: r for r in sheet(client, open_study, rate="12")}
    # The honest no-JS participant: 3 x 60 s seen = 180 s at 12/h = 0.60, not zero.
    no_js = rows["5f0c1a2b3c4d5e6f7a8b9c0d"]
    assert (no_js["active_seconds"], no_js["items_without_time"], no_js["pay"]) == ("180.0", "0", "0.60")
    # The inflater: 3 x 290 s claimed, 3 x 60 s seen; paid for 180 s, not 870.
    capped = rows["60aabbccddeeff0011223344"]
    assert (capped["active_seconds"], capped["pay"]) == ("180.0", "0.60")
    assert no_js["time_basis"] == TIME_BASIS and "capped at the time the server saw" in TIME_BASIS


@pytest.mark.django_db
def test_bonus_and_minimum_wage_columns_are_never_blank(client, open_study, researcher, clock):
    link = make_link(open_study, researcher)
    c = Client()
    enter(c, link, **prolific())
    consent(c, open_study)
    user = PanelParticipant.objects.get().user
    clock.advance(30)
    submit(open_study, user, None)
    PanelParticipant.objects.update(pool_seconds=60)  # the pool's time taken: 0.10 a minute is 6.00 an hour
    client.force_login(researcher)
    [row] = sheet(client, open_study, rate="12")
    assert (row["below_minimum_wage"], row["bonus_threshold"], row["bonus_eligible"]) == (
        "n/a (no minimum set)", NO_THRESHOLD, NO_THRESHOLD)
    [row] = sheet(client, open_study, rate="12", minimum="1", bonus="0.8")
    assert (row["below_minimum_wage"], row["bonus_threshold"], row["bonus_eligible"]) == (
        "no", "0.8", "no (no gold answered)")
    assert (row["pay"], row["active_seconds"], row["effective_hourly"]) == ("0.10", "30.0", "6.0")
    [row] = sheet(client, open_study, rate="12", minimum="10", bonus="0")
    assert (row["below_minimum_wage"], row["bonus_eligible"]) == ("yes", "no (no gold answered)")
    assert all(value != "" for key, value in row.items() if key not in ("gold_accuracy", "outcome_code"))


@pytest.mark.django_db
def test_the_effective_rate_can_be_recomputed_from_the_sheet_for_a_short_session(client, open_study, researcher,
                                                                                    clock):
    link = make_link(open_study, researcher)
    c = Client()
    enter(c, link, **prolific())
    consent(c, open_study)
    user = PanelParticipant.objects.get().user
    PanelParticipant.objects.update(created_at=clock.now)  # the model's default reads the real clock
    clock.advance(7.777)
    submit(open_study, user, None)
    clock.advance(3.333)
    submit(open_study, user, 1.111)
    client.force_login(researcher)
    [row] = sheet(client, open_study, rate="12")
    # Whole seconds (11) gave 9.71 from the sheet against the 9.60 printed: the seconds as printed are the
    # ones the rate is computed from.
    assert (row["active_seconds"], row["session_seconds"]) == ("8.89", "11.11")
    assert row["effective_hourly"] == str(round(12 * float(row["active_seconds"]) / float(row["session_seconds"]), 2))
    assert row["pay"] == f"{12 * 8.89 / 3600:.2f}"


@pytest.mark.django_db
def test_the_panel_page_says_skipped_items_count_as_done_and_are_paid(client, open_study, researcher):
    client.force_login(researcher)
    page = client.get(reverse("panel_page", args=[open_study.id])).content.decode()
    text = page[page.index("Time and payments"):]
    assert "A skipped item (can&#x27;t judge, or distressing)" in text or "A skipped item (can't judge, or distressing)" in text
    assert "counts as done and its time is paid" in text
