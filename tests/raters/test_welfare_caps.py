"""Rater welfare, issue 17: the break's wording, when a cap lifts (with the zone), a cap enforced under
concurrent submits, a pool participant finishing at a cap, the API's next item behind breaks and caps, and
the distress flag's defaults as the researcher's page states them."""

import html
import threading
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from evalapp.models import AuditEvent, Rating
from raters import services
from raters import welfare as rules
from raters.models import Assignment, Consent, PanelParticipant, WelfareSettings
from raters.selectors import next_item
from raters.services import RatingError, Submission
from raters.services import welfare as welfare_services
from raters.services.panel import panel_link_save

from .test_welfare import current, open_study  # noqa: F401  (open_study is a fixture)

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
DAY = datetime(2026, 5, 4, tzinfo=UTC)
PID = "5f0c1a2b3c4d5e6f7a8b9c0d"


# ----------------------------------------------------------------------------- the pure rules


@pytest.mark.parametrize(("minutes", "words"), [
    (0, "less than a minute"), (0.4, "less than a minute"), (0.99, "less than a minute"), (1, "about 1 minute"),
    (1.4, "about 1 minute"), (2.6, "about 3 minutes"), (59.6, "about 1 hour"), (61, "about 1 hour 1 minute"),
    (125, "about 2 hours 5 minutes")])
def test_durations_read_as_words_never_about_zero_minutes(minutes, words):
    assert rules.duration_words(minutes) == words


def test_the_break_message_after_quick_items_says_less_than_a_minute():
    done = [T0 + timedelta(seconds=s) for s in range(0, 40, 2)]  # 20 items in 38 seconds
    state = rules.welfare_state(rules.Limits(break_every_items=20), done, [], now=T0 + timedelta(seconds=40),
                                day_start=DAY)
    assert state.break_due and state.break_message == "You have read 20 items in less than a minute."
    assert state.break_over_at == done[-1] + rules.REST
    one = rules.welfare_state(rules.Limits(break_every_minutes=1), [T0], [], now=T0 + timedelta(minutes=2),
                              day_start=DAY)
    assert one.break_due and one.break_message == "You have read 1 item in about 2 minutes."


def test_the_day_cap_lifts_at_the_next_local_midnight_across_a_dst_change():
    london = ZoneInfo("Europe/London")
    day_start = datetime(2026, 3, 29, tzinfo=london)  # the clocks go forward at 01:00 that night
    done = [datetime(2026, 3, 29, 9, m, tzinfo=london) for m in range(3)]
    state = rules.welfare_state(rules.Limits(cap_per_day=3), done, [], now=datetime(2026, 3, 29, 10, tzinfo=london),
                                day_start=day_start)
    assert state.cap == "day" and state.resume_at == datetime(2026, 3, 30, tzinfo=london)
    assert state.resume_at.astimezone(UTC) - day_start.astimezone(UTC) == timedelta(hours=23)


# ----------------------------------------------------------------------------- the rows and pages




def rate_one(study, rater):
    services.rating_submit(study=study, rater=rater, item_public_id=current(study, rater),
                           submission=Submission({"empathy": 5, "fluency": 6}, seconds_on_item=20))


@pytest.mark.django_db
def test_the_break_page_says_less_than_a_minute_not_about_0_minutes(client, open_study):
    study, (rita, *_) = open_study
    services.welfare_save(study=study, actor=study.owner, break_every_items=2, break_every_minutes=0)
    rate_one(study, rita)
    rate_one(study, rita)
    client.force_login(rita)
    page = client.get(reverse("rate", args=[study.id])).content.decode()
    assert "You have read 2 items in less than a minute." in page and "0 minute" not in page


@pytest.mark.django_db
@override_settings(TIME_ZONE="Europe/Berlin")
def test_the_cap_says_when_it_lifts_in_the_named_zone(client, open_study):
    study, (rita, *_) = open_study
    services.welfare_save(study=study, actor=study.owner, cap_per_day=2, break_every_items=0, break_every_minutes=0)
    rate_one(study, rita)
    rate_one(study, rita)
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    words = f"from 00:00 on {midnight:%A} {midnight.day} {midnight:%B} (Europe/Berlin time)"
    client.force_login(rita)
    page = html.unescape(client.get(reverse("rate", args=[study.id])).content.decode())
    assert "today's limit of 2 items (the daily cap)" in page and words in page
    refused = client.post(reverse("rate_submit", args=[study.id, current(study, rita)]),
                          {"score-empathy": "5", "score-fluency": "5"}, HTTP_X_REQUESTED_WITH="fetch")
    assert refused.status_code == 409 and words in html.unescape(refused.content.decode())
    # The session cap: from the session gap after the last item, with the zone named too.
    services.welfare_save(study=study, actor=study.owner, cap_per_day=0, cap_per_session=2)
    last = Assignment.objects.filter(rater=rita, completed_at__isnull=False).latest("completed_at").completed_at
    lifts = timezone.localtime(last + rules.SESSION_GAP)
    page = html.unescape(client.get(reverse("rate", args=[study.id])).content.decode())
    assert "this session's limit of 2 items (the per-session cap; a session ends after a pause of 30 minutes)" in page
    assert f"come back from {lifts:%H:%M} on {lifts:%A} {lifts.day} {lifts:%B} (Europe/Berlin time)" in page


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["rate", "skip"])
def test_two_submits_at_once_cannot_pass_the_cap_together(open_study, monkeypatch, kind):
    """Both requests read the count before either writes (the sleep widens that window); only the lock in
    check_cap makes the second wait and then see the first's item."""
    study, (rita, *_) = open_study
    services.welfare_save(study=study, actor=study.owner, cap_per_day=2, break_every_items=0, break_every_minutes=0)
    rate_one(study, rita)
    open_items = [a.response.public_id for a in Assignment.objects.filter(
        study=study, rater=rita, completed_at__isnull=True, response__isnull=False).order_by("position")[:2]]
    real_state = welfare_services.rater_state

    def slow_state(*args, **kwargs):
        state = real_state(*args, **kwargs)
        time.sleep(0.5)
        return state

    monkeypatch.setattr(welfare_services, "rater_state", slow_state)
    barrier, outcomes = threading.Barrier(2), []

    def go(public_id):
        try:
            barrier.wait()
            if kind == "rate":
                services.rating_submit(study=study, rater=rita, item_public_id=public_id,
                                       submission=Submission({"empathy": 5, "fluency": 6}))
            else:
                services.assignment_skip(study=study, rater=rita, item_public_id=public_id, reason="unclear")
            outcomes.append("ok")
        except RatingError as exc:
            outcomes.append((exc.status, str(exc)))
        finally:
            connection.close()

    threads = [threading.Thread(target=go, args=(public_id,)) for public_id in open_items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(str(o if o == "ok" else o[0]) for o in outcomes) == ["409", "ok"], outcomes
    assert any(o != "ok" and "today's limit of 2 items" in o[1] for o in outcomes)
    assert Assignment.objects.filter(study=study, rater=rita, completed_at__isnull=False).count() == 2
    assert Rating.objects.filter(rater=rita).count() == (2 if kind == "rate" else 1)


# ----------------------------------------------------------------------------- the API's next item


@pytest.mark.django_db
def test_the_api_next_item_answers_a_break_and_a_cap_as_the_page_does(open_study):
    study, (rita, *_) = open_study
    services.welfare_save(study=study, actor=study.owner, break_every_items=2, break_every_minutes=0)
    api = APIClient()
    api.force_authenticate(rita)
    url = reverse("api_rating_next", kwargs={"study_id": study.id})
    assert api.get(url).status_code == 200
    rate_one(study, rita)
    rate_one(study, rita)
    due = api.get(url)
    body = due.json()
    assert due.status_code == 429 and body["welfare"]["break_due"] and body["welfare"]["cap"] is None
    assert body["detail"].startswith("Time for a break. You have read 2 items in less than a minute.")
    last = Assignment.objects.filter(rater=rita, completed_at__isnull=False).latest("completed_at").completed_at
    assert datetime.fromisoformat(body["welfare"]["until"]) == last + rules.REST
    assert 0 < int(due["Retry-After"]) <= rules.REST.total_seconds()
    assert "public_id" not in body and "text" not in body
    # Continue, as on the page: the next item again.
    services.break_taken(study=study, rater=rita)
    assert api.get(url).status_code == 200
    # A cap: said so, with when, and a submit past it refused with the same message.
    services.welfare_save(study=study, actor=study.owner, cap_per_day=2, break_every_items=0)
    capped = api.get(url)
    assert capped.status_code == 429 and capped.json()["welfare"]["cap"] == "day"
    assert "today's limit of 2 items" in capped.json()["detail"] and "come back tomorrow, from 00:00" in capped.json()["detail"]
    assert int(capped["Retry-After"]) <= 86400
    public = current(study, rita)
    refused = api.post(reverse("api_rating_submit", kwargs={"study_id": study.id, "public_id": public}),
                       {"answers": {"empathy": 6, "fluency": 5}}, format="json")
    assert refused.status_code == 409 and refused.json()["detail"] == capped.json()["detail"]
    assert Rating.objects.filter(rater=rita).count() == 2


# ----------------------------------------------------------------------------- a pool participant at a cap


@pytest.fixture
def participant(open_study):
    study, _ = open_study
    link = panel_link_save(study=study, actor=study.owner, values={
        "preset": "prolific", "code_completed": "CDONE1", "code_screened_out": "CSCREEN",
        "redirect_completed": "https://app.prolific.com/submissions/complete?cc={code}"})
    client = Client()
    client.get(reverse("panel_enter", args=[link.slug]), {"PROLIFIC_PID": PID, "STUDY_ID": "st1", "SESSION_ID": "se1"})
    version = study.consent_versions.first()
    client.post(reverse("consent", args=[study.id]), {"version": version.version, "agree": "yes"})
    p = PanelParticipant.objects.get()
    assert Assignment.objects.filter(rater=p.user).exists()
    return client, p, link


@pytest.mark.django_db
def test_a_pool_participant_at_a_cap_finishes_with_the_completion_code(open_study, participant):
    study, (rita, *_) = open_study
    client, p, link = participant
    services.welfare_save(study=study, actor=study.owner, cap_per_day=2, break_every_items=0, break_every_minutes=0)
    finish = reverse("welfare_cap_finish", args=[study.id])
    # Not yet at the cap: refused, nothing changes.
    refused = client.post(finish, follow=True)
    assert "not reached a limit" in refused.content.decode()
    p.refresh_from_db()
    assert p.status == "active" and not p.outcome_code
    rate_one(study, p.user)
    rate_one(study, p.user)
    page = client.get(reverse("rate", args=[study.id])).content.decode()
    assert 'id="welfare-cap-finish"' in page and "come back tomorrow" not in page and 'id="rating-form"' not in page
    response = client.post(finish)
    assert response.status_code == 302 and response["Location"] == reverse("panel_done", args=[link.slug])
    done = client.get(response["Location"]).content.decode()
    assert 'id="panel-code">CDONE1<' in done and "submissions/complete?cc=CDONE1" in done
    p.refresh_from_db()
    assert p.status == "completed" and p.outcome_code == "CDONE1" and p.outcome_at is not None
    # What they rated stays; their unfinished items went to others; the design gives them nothing more.
    assert Rating.objects.filter(rater=p.user).count() == 2
    assert not Assignment.objects.filter(rater=p.user, completed_at__isnull=True).exists()
    assert not Consent.objects.filter(study=study, user=p.user, withdrawn_at__isnull=True).exists()
    assert AuditEvent.objects.filter(action="panel.cap_reached").count() == 1
    assert AuditEvent.objects.filter(action="panel.complete").count() == 1
    # A double click: the same code, recorded once.
    assert client.post(finish)["Location"] == reverse("panel_done", args=[link.slug])
    assert AuditEvent.objects.filter(action__in=("panel.cap_reached", "panel.complete")).count() == 2
    # A rater from no pool has no code to get: told so, nothing written.
    other = Client()
    other.force_login(rita)
    told = other.post(finish, follow=True).content.decode()
    assert "Only a participant from a study pool" in told
    assert Consent.objects.filter(study=study, user=rita, withdrawn_at__isnull=True).exists()


# ----------------------------------------------------------------------------- distress flags


@pytest.mark.django_db
def test_the_flag_defaults_need_three_reports_and_the_page_states_the_rule(client, open_study):
    study, (rita, sam, tess) = open_study
    assert (WelfareSettings().flag_min_reports, WelfareSettings().flag_min_percent) == (3, 20)
    target = next_item(study=study, rater=rita).assignment.response
    for rater in (sam, tess):
        if not Assignment.objects.filter(rater=rater, response=target).exists():
            Assignment.objects.create(study=study, rater=rater, response=target, position=999, design_seed=0)
    for rater in (rita, sam):
        services.distress_report(study=study, rater=rater, item_public_id=target.public_id)
    assert services.distress_summary(study)["flagged"] == 0  # two of two readers: no pattern yet
    services.distress_report(study=study, rater=tess, item_public_id=target.public_id)
    assert services.distress_summary(study)["flagged"] == 1
    client.force_login(study.owner)
    page = client.get(reverse("welfare_page", args=[study.id])).content.decode()
    assert ("An item is flagged for review when at least 3 raters and at least 20% of the raters who read it "
            "found it distressing.") in page
    assert "the server's time zone (UTC)" in html.unescape(page)
    detail = client.get(reverse("study_detail", args=[study.id])).content.decode()
    assert f'href="{reverse("welfare_page", args=[study.id])}" id="welfare-link"' in detail
