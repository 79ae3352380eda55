"""Participant pools: entering by link, completion codes, idle and returned participants, time and pay.

Long because the pool's whole path (link, entry, completion, time-out, the pool's file, pay) shares its
fixtures: a study with a link and participants part way through."""

import csv
import io
import threading
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from evalapp.models import AuditEvent, Rating, Study
from raters import services
from raters.models import (
    Assignment,
    CalibrationItem,
    PanelParticipant,
    Role,
    StudyMembership,
)
from raters.services import RatingError, Submission
from raters.services.panel import panel_link_save
from raters.services.panel_pay import active_seconds

from ..factories import MembershipFactory, StudyFactory, UserFactory

pytestmark = pytest.mark.django_db
User = get_user_model()
PID = "5f0c1a2b3c4d5e6f7a8b9c0d"
PID2 = "60aabbccddeeff0011223344"


def make_link(study, researcher, **values):
    return panel_link_save(study=study, actor=researcher, values={
        "preset": "prolific", "code_completed": "CDONE1", "code_screened_out": "CSCREEN",
        "redirect_completed": "https://app.prolific.com/submissions/complete?cc={code}", **values})


def enter(client, link, **query):
    return client.get(reverse("panel_enter", args=[link.slug]), query)


def prolific(pid=PID):
    return {"PROLIFIC_PID": pid, "STUDY_ID": "st1", "SESSION_ID": "se1"}


@pytest.fixture
def link(open_study, researcher):
    return make_link(open_study, researcher)


def consent(client, study):
    version = study.consent_versions.first()
    return client.post(reverse("consent", args=[study.id]), {"version": version.version, "agree": "yes"})


def rate_all(study, user, seconds=30.0):
    while (a := Assignment.objects.filter(study=study, rater=user, completed_at__isnull=True).order_by("position")
           .first()) is not None:
        public = a.gold_item.public_id if a.gold_item_id else a.response.public_id
        services.rating_submit(study=study, rater=user, item_public_id=public,
                               submission=Submission({"empathy": 5, "fluency": 5}, seconds_on_item=seconds))


# ----------------------------------------------------------------------------- entering


def test_entering_creates_a_pseudonymous_rater_and_the_same_id_resumes_it(client, link, open_study):
    response = enter(client, link, **prolific())
    assert response.status_code == 302 and response["Location"] == reverse("rate", args=[open_study.id])
    participant = PanelParticipant.objects.get()
    user = participant.user
    assert (participant.participant_id, participant.pool_study_id, participant.session_id) == (PID, "st1", "se1")
    assert user.username.startswith("panel-") and PID not in user.username and not user.has_usable_password()
    membership = StudyMembership.objects.get(study=open_study, user=user)
    assert membership.role == Role.RATER and membership.pseudonym.startswith("R-")
    # Signed in: the rate page sends them on to consent.
    assert client.get(reverse("rate", args=[open_study.id]))["Location"] == reverse("consent", args=[open_study.id])
    # The same id from another browser (a lost session) is the same account, never a second one; upper case too.
    other = Client()
    assert enter(other, link, **prolific(PID.upper())).status_code == 302
    assert other.session["_auth_user_id"] == str(user.id)
    assert PanelParticipant.objects.count() == 1 and StudyMembership.objects.filter(study=open_study).count() == 1
    assert User.objects.filter(username__startswith="panel-").count() == 1


def test_someone_signed_in_is_signed_out_by_the_link(client, link, open_study, researcher):
    client.force_login(researcher)
    enter(client, link, **prolific())
    assert client.session["_auth_user_id"] == str(PanelParticipant.objects.get().user_id)
    # The researcher's pages are no longer theirs in this browser.
    assert client.get(reverse("panel_page", args=[open_study.id])).status_code == 404


@pytest.mark.parametrize(("query", "says"), [
    ({}, "has no participant id"),
    ({"PROLIFIC_PID": ""}, "has no participant id"),
    ({"PROLIFIC_PID": "{{%PROLIFIC_PID%}}"}, "not in the form"),  # Prolific's preview, unsubstituted
    ({"PROLIFIC_PID": "x" * 5000}, "not in the form"),
    ({"PROLIFIC_PID": PID[:-1] + "g"}, "not in the form"),
    ({"PROLIFIC_PID": PID, "STUDY_ID": "a b"}, "not a valid id"),
])
def test_malformed_or_missing_ids_get_a_clear_page(client, link, query, says):
    response = enter(client, link, **query)
    assert response.status_code == 400 and says in response.content.decode()
    assert not PanelParticipant.objects.exists() and not User.objects.filter(username__startswith="panel-").exists()


@pytest.mark.parametrize(("preset", "query", "stored"), [
    ("sona", {"id": "123456"}, "123456"),
    ("mturk", {"workerId": "A1B2C3D4E5F6G7", "assignmentId": "3ABC_X", "hitId": "H1"}, "A1B2C3D4E5F6G7"),
    ("custom", {"pid": "abc-1.2"}, "abc-1.2"),
])
def test_each_preset_reads_its_own_parameters(client, open_study, researcher, preset, query, stored):
    link = make_link(open_study, researcher, preset=preset, id_param="pid", redirect_completed="")
    assert enter(client, link, **query).status_code == 302
    assert PanelParticipant.objects.get().participant_id == stored
    if preset == "mturk":
        assert PanelParticipant.objects.get().assignment_id == "3ABC_X"
    assert enter(Client(), link, **{k: v + "!" for k, v in query.items()}).status_code == 400


def test_unknown_disabled_and_other_link_ids(client, link, open_study, researcher):
    assert client.get(reverse("panel_enter", args=["no-such-link"]), prolific()).status_code == 404
    enter(client, link, **prolific())
    second = make_link(open_study, researcher, preset="custom", id_param="pid")
    refused = enter(Client(), second, pid=PID)
    assert refused.status_code == 409 and "another link" in refused.content.decode()
    link.enabled = False
    link.save()
    closed = enter(Client(), link, **prolific())
    assert closed.status_code == 410 and "not taking participants" in closed.content.decode()


def test_an_id_never_reaches_another_study(client, link, open_study, researcher):
    other_study = StudyFactory(owner=researcher, title="Other")
    services.consent_publish(study=other_study, text="Consent.", withdrawal_policy="exclude")
    Study.objects.filter(id=other_study.id).update(status=Study.Status.RATING)  # a link lets in only while open
    other_link = make_link(other_study, researcher)
    enter(client, link, **prolific())
    first = PanelParticipant.objects.get(study=open_study).user
    other = Client()
    enter(other, other_link, **prolific())
    second = PanelParticipant.objects.get(study=other_study).user
    # The same pool id in another study is another account: study A's session opens nothing of study B.
    assert first != second
    assert client.get(reverse("consent", args=[other_study.id])).status_code == 404
    assert other.get(reverse("consent", args=[open_study.id])).status_code == 404
    assert client.get(reverse("panel_done", args=[other_link.slug])).status_code == 404


def test_one_address_following_a_link_too_often_is_told_to_wait(client, link, settings):
    settings.PANEL_ENTRIES_PER_MINUTE = 2
    assert enter(client, link, **prolific()).status_code == 302
    assert enter(Client(), link, **prolific(PID2)).status_code == 302
    refused = enter(Client(), link, **prolific("70aabbccddeeff0011223344"))
    assert refused.status_code == 429 and "wait a minute" in refused.content.decode()
    assert PanelParticipant.objects.count() == 2


def test_a_study_without_consent_text_takes_no_one(client, study, researcher):
    link = make_link(study, researcher)
    assert enter(client, link, **prolific()).status_code == 409 and not PanelParticipant.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_double_request_makes_one_participant(rating_study, researcher):
    services.study_open_for_rating(study=rating_study)  # a link lets in only while the study is open
    link = make_link(rating_study, researcher)
    barrier, results = threading.Barrier(2), []

    def go():
        try:
            barrier.wait()
            results.append(services.panel_enter(link=link, query=prolific()).user_id)
        finally:
            connection.close()

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and len(set(results)) == 1
    assert PanelParticipant.objects.count() == 1 and StudyMembership.objects.filter(study=rating_study).count() == 1
    assert User.objects.filter(username__startswith="panel-").count() == 1


@pytest.mark.parametrize(("field", "value", "says"), [
    ("redirect_completed", "javascript:alert(1)", "http"),
    ("redirect_completed", "https://x.example/?cc={secret}", "Unknown placeholder"),
    ("redirect_completed", "https://x.example/?cc={code!r}", "Unknown placeholder"),
    ("redirect_completed", "https://x.example/?cc={code", "braces"),
    ("id_param", "1bad", "parameter name"),
    ("code_completed", "", "code_completed"),
])
def test_link_settings_are_checked(study, researcher, field, value, says):
    with pytest.raises(RatingError, match=says):
        make_link(study, researcher, preset="custom", **{"id_param": "pid", field: value})


# ----------------------------------------------------------------------------- completion


def test_finishing_the_queue_gives_the_code_and_the_way_back(client, link, open_study):
    enter(client, link, **prolific())
    consent(client, open_study)
    participant = PanelParticipant.objects.get()
    page = client.get(reverse("rate", args=[open_study.id])).content.decode()
    assert reverse("panel_done", args=[link.slug]) in page
    not_yet = client.get(reverse("panel_done", args=[link.slug]))
    assert "item" in not_yet.content.decode() and "CDONE1" not in not_yet.content.decode()
    rate_all(open_study, participant.user)
    done = client.get(reverse("panel_done", args=[link.slug])).content.decode()
    assert "CDONE1" in done
    assert 'href="https://app.prolific.com/submissions/complete?cc=CDONE1"' in done
    assert 'http-equiv="refresh"' in done
    participant.refresh_from_db()
    assert participant.status == "completed" and participant.outcome_code == "CDONE1" and participant.outcome_at
    assert AuditEvent.objects.filter(action="panel.complete").count() == 1
    # Entering again shows the code again, never a new queue.
    assert enter(Client(), link, **prolific())["Location"] == reverse("panel_done", args=[link.slug])


def test_failing_calibration_gives_the_screened_out_code(client, open_study, researcher):
    CalibrationItem.objects.create(study=open_study, messages=[{"role": "user", "content": "Hi"}],
                                   response_text="Ok.", references={"empathy": 10, "fluency": 10}, rationale="r",
                                   created_by=researcher)
    link = make_link(open_study, researcher, redirect_screened_out="https://pool.example/back?c={code}&p={participant_id}")
    enter(client, link, **prolific())
    consent(client, open_study)
    item = CalibrationItem.objects.get()
    for _ in range(2):
        client.get(reverse("calibration", args=[open_study.id]))
        client.post(reverse("calibration", args=[open_study.id]),
                    {"item": item.public_id, "score-empathy": "1", "score-fluency": "1"})
    # Screened out: the calibration page leads straight to the code page (issue 17, third round).
    assert client.get(reverse("calibration", args=[open_study.id])).url == reverse("panel_done", args=[link.slug])
    done = client.get(reverse("panel_done", args=[link.slug])).content.decode()
    assert "CSCREEN" in done and f"https://pool.example/back?c=CSCREEN&amp;p={PID}" in done
    assert PanelParticipant.objects.get().status == "screened_out"


def test_an_excluded_participant_is_screened_out_on_return(client, link, open_study, researcher):
    enter(client, link, **prolific())
    consent(client, open_study)
    user = PanelParticipant.objects.get().user
    services.rater_exclude(study=open_study, rater=user, reason="careless", actor=researcher)
    assert enter(Client(), link, **prolific())["Location"] == reverse("panel_done", args=[link.slug])
    assert "CSCREEN" in client.get(reverse("panel_done", args=[link.slug])).content.decode()


def test_stopping_early_gives_the_returned_code_and_withdraws(client, open_study, researcher):
    link = make_link(open_study, researcher, code_returned="CRET")
    enter(client, link, **prolific())
    consent(client, open_study)
    response = client.post(reverse("panel_done", args=[link.slug]), {"action": "return", "confirm": "yes"})
    assert "CRET" in response.content.decode()
    participant = PanelParticipant.objects.get()
    assert participant.status == "returned" and participant.outcome_code == "CRET"
    assert StudyMembership.objects.get(user=participant.user).withdrawn_at is not None
    assert enter(Client(), link, **prolific()).status_code == 410


# ----------------------------------------------------------------------------- idle and returned


def test_idle_participants_are_timed_out_and_their_open_items_reassigned(client, link, open_study):
    enter(client, link, **prolific())
    consent(client, open_study)
    user = PanelParticipant.objects.get().user
    from .conftest import add_rater

    others = [add_rater(open_study, f"stay{i}") for i in range(2)]
    mine = list(Assignment.objects.filter(study=open_study, rater=user, response__isnull=False).order_by("position"))
    assert len(mine) >= 3
    for a in mine[:2]:
        services.rating_submit(study=open_study, rater=user, item_public_id=a.response.public_id,
                               submission=Submission({"empathy": 4, "fluency": 4}, seconds_on_item=20))
    rated = {a.response_id for a in mine[:2]}
    unfinished = {a.response_id for a in mine[2:]}
    # Not idle yet: nothing happens.
    call_command("release_idle_participants", stdout=io.StringIO())
    assert PanelParticipant.objects.get().status == "active"
    later = timezone.now() + timedelta(minutes=link.idle_minutes + 1)
    assert [p.participant_id for p in services.panel_release_idle(now=later)] == [PID]
    participant = PanelParticipant.objects.get()
    assert participant.status == "timed_out"
    # What they rated is kept and still counts; nothing open is theirs; the others took their open items.
    assert set(Rating.objects.filter(rater=user).values_list("response_id", flat=True)) == rated
    assert not Assignment.objects.filter(study=open_study, rater=user, completed_at__isnull=True).exists()
    assert StudyMembership.objects.get(user=user).withdrawn_at is None
    for response_id in unfinished:
        assert Assignment.objects.filter(study=open_study, rater__in=others, response_id=response_id).exists()
    for response_id in rated:  # their rating counts toward k, so no one else was given these on their account
        target = open_study.ratings_per_response
        given = Assignment.objects.filter(study=open_study, response_id=response_id).count()
        assert given == target
    # Their session no longer signs in, and the link does not let them back.
    assert client.get(reverse("rate", args=[open_study.id])).status_code == 302
    assert enter(Client(), link, **prolific()).status_code == 410


def test_the_command_releases_idle_participants(client, link, open_study):
    enter(client, link, **prolific())
    PanelParticipant.objects.update(last_seen_at=timezone.now() - timedelta(hours=2))
    out = io.StringIO()
    call_command("release_idle_participants", "--study", str(open_study.id), stdout=out)
    assert "1 participant(s) timed out" in out.getvalue()
    assert PanelParticipant.objects.get().status == "timed_out"


def submissions(*rows, header=("Participant id", "Status", "Time taken")):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def upload(client, study, data):
    return client.post(reverse("panel_reconcile", args=[study.id]),
                       {"file": SimpleUploadedFile("export.csv", data, content_type="text/csv")})


def test_the_pools_file_with_bad_rows_writes_nothing_and_says_which(client, link, open_study, researcher):
    enter(Client(), link, **prolific())
    client.force_login(researcher)
    data = submissions([PID, "RETURNED", "600"], ["not-an-id", "APPROVED", "10"], [PID2, "LOST", "5"],
                       [PID, "APPROVED", "1"], ["70aabbccddeeff0011223344", "APPROVED", "ten"])
    response = upload(client, open_study, data)
    page = response.content.decode()
    assert response.status_code == 400 and "Nothing was written" in page
    for row in ("row 3, Participant id", "row 4, Status", "row 5, Participant id", "row 6, Time taken"):
        assert row in page
    participant = PanelParticipant.objects.get()
    assert (participant.status, participant.pool_status) == ("active", "")
    assert not AuditEvent.objects.filter(action="panel.submissions_import").exists()
    missing = upload(client, open_study, submissions([PID, "RETURNED"], header=("id", "Status")))
    assert missing.status_code == 400 and "Participant id" in missing.content.decode()


def test_the_pools_file_applies_statuses_and_reconciles(client, link, open_study, researcher):
    c1, c2, c3 = Client(), Client(), Client()
    pid3 = "70aabbccddeeff0011223344"
    for c, pid in ((c1, PID), (c2, PID2), (c3, pid3)):
        enter(c, link, **prolific(pid))
        consent(c, open_study)
    p1 = PanelParticipant.objects.get(participant_id=PID)
    a = Assignment.objects.filter(study=open_study, rater=p1.user, response__isnull=False).first()
    services.rating_submit(study=open_study, rater=p1.user, item_public_id=a.response.public_id,
                           submission=Submission({"empathy": 4, "fluency": 4}))
    stranger = "80aabbccddeeff0011223344"
    client.force_login(researcher)
    data = submissions([PID, "RETURNED", ""], [PID2, "APPROVED", "1200"], [stranger, "TIMED-OUT", ""],
                       header=("Participant id", "Status", "Time taken"))
    response = upload(client, open_study, data)
    page = response.content.decode()
    assert response.status_code == 200 and "1 participant changed status" in page
    p1.refresh_from_db()
    assert (p1.status, p1.pool_status) == ("returned", "RETURNED")
    # The study's policy (exclude) decides: withdrawn, the rating kept but no longer counted.
    assert StudyMembership.objects.get(user=p1.user).withdrawn_at is not None
    assert Rating.objects.filter(rater=p1.user).count() == 1
    p2 = PanelParticipant.objects.get(participant_id=PID2)
    assert (p2.status, p2.pool_status, p2.pool_seconds) == ("active", "APPROVED", 1200)
    assert stranger in page.split('id="only-in-file"')[1].split("</table>")[0]
    assert pid3 in page.split('id="only-here"')[1].split("</table>")[0]
    # Again: the same file changes nothing more.
    assert "0 participants changed status" in upload(client, open_study, data).content.decode()


def test_a_delete_policy_deletes_a_returned_participants_ratings(client, open_study, researcher):
    services.consent_publish(study=open_study, text="New text.", withdrawal_policy="delete")
    link = make_link(open_study, researcher)
    c = Client()
    enter(c, link, **prolific())
    consent(c, open_study)
    user = PanelParticipant.objects.get().user
    rate_all(open_study, user)
    assert Rating.objects.filter(rater=user).exists()
    client.force_login(researcher)
    upload(client, open_study, submissions([PID, "REJECTED", "60"]))
    assert PanelParticipant.objects.get().status == "rejected" and not Rating.objects.filter(rater=user).exists()


# ----------------------------------------------------------------------------- time and pay


def test_active_time_leaves_out_breaks_and_untimed_items():
    # 5-minute gap: 30 + 299.5 + 300 count, 301 and 3600 are breaks, None has no time.
    assert active_seconds([30, 299.5, 300, 301, 3600, None], 300) == (629.5, 2, 1)
    assert active_seconds([], 300) == (0.0, 0, 0)


def test_the_payment_sheet_by_hand(client, link, open_study, researcher, clock):
    c = Client()
    enter(c, link, **prolific())
    consent(c, open_study)
    participant = PanelParticipant.objects.get()
    user = participant.user
    items = list(Assignment.objects.filter(study=open_study, rater=user).order_by("position"))
    # 6 items: 60 s, 120 s, 600 s (a break over 5 minutes: left out), 240 s, no time sent (the server saw
    # 90 s), 180 s; each time the server saw pass too.
    for a, seconds, seen in zip(items, [60, 120, 600, 240, None, 180], [60, 120, 600, 240, 90, 180], strict=False):
        clock.advance(seen)
        services.rating_submit(study=open_study, rater=user, item_public_id=a.response.public_id,
                               submission=Submission({"empathy": 5, "fluency": 5}, seconds_on_item=seconds))
    # The pool says the session took 1800 s.
    PanelParticipant.objects.filter(id=participant.id).update(pool_seconds=1800)
    client.force_login(researcher)
    url = reverse("panel_payments", args=[open_study.id])
    response = client.get(url, {"rate": "12", "minimum": "10", "bonus": "0.5"})
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode()
    row = next(csv.DictReader(io.StringIO(text)))
    # Active: 60 + 120 + 240 + 90 + 180 = 690 s; pay 12 x 690 / 3600 = 2.30; over the 1800 s session: 4.60 an hour.
    assert (row["items_done"], row["active_seconds"], row["items_left_out_as_breaks"], row["items_without_time"]) == (
        "6", "690.0", "1", "0")
    assert (row["pay"], row["effective_hourly"], row["below_minimum_wage"]) == ("2.30", "4.6", "yes")
    assert row["break_over_seconds"] == "300" and row["session_seconds"] == "1800" and row["participant_id"] == PID and row["gold_accuracy"] == ""
    assert (row["bonus_threshold"], row["bonus_eligible"]) == ("0.5", "no (no gold answered)")
    assert AuditEvent.objects.filter(study=open_study, action="export.panel_payments", actor=researcher).count() == 1
    fine = next(csv.DictReader(io.StringIO(b"".join(
        client.get(url, {"rate": "60", "minimum": "10"}).streaming_content).decode())))
    assert (fine["pay"], fine["effective_hourly"], fine["below_minimum_wage"]) == ("11.50", "23.0", "no")
    assert (fine["bonus_threshold"], fine["bonus_eligible"]) == ("n/a (no threshold set)", "n/a (no threshold set)")
    for bad in ({}, {"rate": "x"}, {"rate": "-1"}, {"rate": "12", "bonus": "2"}):
        assert client.get(url, bad).status_code == 400


def test_gold_accuracy_and_bonus(client, rating_study, researcher):
    rating_study.gold_rate = 0.5
    rating_study.save()
    for score in (5, 9):
        CalibrationItem.objects.create(study=rating_study, messages=[{"role": "user", "content": "Gold?"}],
                                       response_text="Yes.", references={"empathy": score, "fluency": score},
                                       rationale="r", created_by=researcher, use_as_gold=True)
    services.study_open_for_rating(study=rating_study)
    link = make_link(rating_study, researcher)
    c = Client()
    enter(c, link, **prolific())
    consent(c, rating_study)
    user = PanelParticipant.objects.get().user
    assert Assignment.objects.filter(study=rating_study, rater=user, gold_item__isnull=False).count() == 2
    rate_all(rating_study, user)  # answers 5 everywhere: right on the 5 item, 4 points off on the 9 item
    rows = services.panel_pay_rows(study=rating_study, hourly_rate=10, bonus_accuracy=0.5)
    assert (rows[0].gold_answered, rows[0].gold_right, rows[0].gold_accuracy, rows[0].bonus) == (2, 1, 0.5, True)
    assert not services.panel_pay_rows(study=rating_study, hourly_rate=10, bonus_accuracy=0.75)[0].bonus


# ----------------------------------------------------------------------------- the researcher's pages


def test_the_panel_page_creates_a_link_and_shows_the_url(client, open_study, researcher):
    client.force_login(researcher)
    response = client.post(reverse("panel_page", args=[open_study.id]), {
        "preset": "prolific", "enabled": "on", "id_param": "", "code_completed": "ABC123",
        "code_screened_out": "NOPE", "redirect_completed": "https://app.prolific.com/submissions/complete?cc={code}",
        "idle_minutes": "45", "gap_minutes": "5"})
    assert response.status_code == 302
    link = open_study.panel_links.get()
    assert (link.id_param, link.idle_minutes, link.enabled) == ("PROLIFIC_PID", 45, True)
    services.panel_enter(link=link, query=prolific())
    page = client.get(reverse("panel_page", args=[open_study.id])).content.decode()
    assert f"/p/{link.slug}/?PROLIFIC_PID={{{{%PROLIFIC_PID%}}}}" in page
    assert PID in page.split('id="panel-participants"')[1] and "Active" in page
    assert reverse("panel_page", args=[open_study.id]) in client.get(
        reverse("raters_page", args=[open_study.id])).content.decode()
    bad = client.post(reverse("panel_page", args=[open_study.id]), {
        "preset": "prolific", "code_completed": "A", "code_screened_out": "B",
        "redirect_completed": "ftp://x", "idle_minutes": "45", "gap_minutes": "5"})
    assert bad.status_code == 200 and open_study.panel_links.count() == 1


def test_researcher_pages_are_researchers_only(client, link, open_study, rater, outsider):
    enter(Client(), link, **prolific())
    panel_user = PanelParticipant.objects.get().user
    for user in (rater, outsider, panel_user):
        client.force_login(user)
        for name in ("panel_page", "panel_reconcile"):
            assert client.get(reverse(name, args=[open_study.id])).status_code == 404
        assert client.get(reverse("panel_payments", args=[open_study.id]), {"rate": "10"}).status_code == 404
    # A rater who did not come by this link has no completion page.
    client.force_login(rater)
    assert client.get(reverse("panel_done", args=[link.slug])).status_code == 404


def test_deleting_the_study_removes_its_links_and_participants(link, open_study, researcher):
    from evalapp.services import study_delete

    services.panel_enter(link=link, query=prolific())
    study_delete(study=open_study, actor=researcher)
    assert not PanelParticipant.objects.exists() and not Study.objects.filter(id=open_study.id).exists()
    from raters.models import PanelLink

    assert not PanelLink.objects.exists()


def test_a_membership_factory_rater_is_no_panel_participant(client, open_study):
    user = MembershipFactory(study=open_study, user=UserFactory(username="plain"), role=Role.RATER).user
    client.force_login(user)
    services.consent_accept(study=open_study, user=user, version=open_study.consent_versions.first())
    assert "panel-done-link" not in client.get(reverse("rate", args=[open_study.id])).content.decode()
