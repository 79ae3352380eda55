"""Participant pools as a new researcher and their participants found them (issue 17): coming back after a
time-out, stopping early, the screen-out page, the link form, labels and deleting links, progress and
names across the researcher's pages, who takes released work, the beat schedule and the idle clock."""

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from evalapp.models import AuditEvent
from raters import services
from raters.models import Assignment, PanelLink, PanelParticipant
from raters.services import RatingError, Submission
from raters.services.panel import panel_release_idle_lazily
from raters.welfare_models import WelfareSettings

from .conftest import add_rater
from .test_panel import PID, PID2, consent, enter, make_link, prolific, rate_all

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def rate_some(study, user, n):
    for a in Assignment.objects.filter(study=study, rater=user, completed_at__isnull=True,
                                       response__isnull=False).order_by("position")[:n]:
        services.rating_submit(study=study, rater=user, item_public_id=a.response.public_id,
                               submission=Submission({"empathy": 4, "fluency": 4}, seconds_on_item=20))


def time_out(link):
    return services.panel_release_idle(now=timezone.now() + timedelta(minutes=link.idle_minutes + 1))


def link_form(**values):
    return {"preset": "prolific", "enabled": "on", "id_param": "", "code_completed": "DONE1",
            "code_screened_out": "SCREEN1", "idle_minutes": "45", "gap_minutes": "5", **values}


# ----------------------------------------------------------------------------- 1. coming back after a time-out


def test_a_timed_out_participant_who_comes_back_is_told_so_with_their_code_never_the_login(
        client, open_study, researcher):
    link = make_link(open_study, researcher, code_timed_out="CTIME")
    enter(client, link, **prolific())
    consent(client, open_study)
    rate_some(open_study, PanelParticipant.objects.get().user, 2)
    assert len(time_out(link)) == 1
    # By the pool's link again, in the same browser or another.
    for browser in (client, Client()):
        page = enter(browser, link, **prolific())
        text = page.content.decode()
        assert page.status_code == 410 and "session timed out" in text and "CTIME" in text
        assert "kept and counts: 2 answers" in text and 'name="password"' not in text
    # Through the pages they had open: the rate page's login redirect and the code link both end on it.
    for url in (reverse("rate", args=[open_study.id]), reverse("panel_done", args=[link.slug])):
        final = client.get(url, follow=True)
        text = final.content.decode()
        assert "session timed out" in text and "CTIME" in text and 'name="password"' not in text, url
    # The code they were given is on the researcher's page.
    assert PanelParticipant.objects.get().outcome_code == "CTIME"


def test_without_a_timed_out_code_they_are_told_to_contact_the_researcher(client, open_study, researcher):
    link = make_link(open_study, researcher)
    enter(client, link, **prolific())
    time_out(link)
    text = enter(Client(), link, **prolific()).content.decode()
    assert "session timed out" in text and "contact the researcher" in text
    assert "nothing of yours was kept" in text
    # Someone else's browser with no session of a participant still gets the ordinary login.
    assert 'name="password"' in Client().get(reverse("login")).content.decode()


# ----------------------------------------------------------------------------- 2. stopping early


def test_stopping_early_asks_for_confirmation_first(client, open_study, researcher):
    link = make_link(open_study, researcher, code_returned="CRET")
    enter(client, link, **prolific())
    consent(client, open_study)
    done_url = reverse("panel_done", args=[link.slug])
    page = client.get(done_url).content.decode()
    assert 'value="return"' not in page and "?stop=1" in page  # the done page only leads to the question
    # The old one-click request (no confirmation) only asks.
    asked = client.post(done_url, {"action": "return"})
    assert asked.status_code == 200 and "ends for good" in asked.content.decode()
    assert PanelParticipant.objects.get().status == "active" and "CRET" not in asked.content.decode()
    confirm = client.get(done_url, {"stop": "1"}).content.decode()
    assert "ends for good" in confirm and 'name="confirm" value="yes"' in confirm
    stopped = client.post(done_url, {"action": "return", "confirm": "yes"})
    assert "CRET" in stopped.content.decode() and PanelParticipant.objects.get().status == "returned"


# ----------------------------------------------------------------------------- 3. the screen-out page


def test_the_screen_out_page_says_screened_out_and_never_completed(client, open_study, researcher):
    link = make_link(open_study, researcher, redirect_screened_out="https://pool.example/out?c={code}")
    enter(client, link, **prolific())
    consent(client, open_study)
    services.rater_exclude(study=open_study, rater=PanelParticipant.objects.get().user, reason="careless",
                           actor=researcher)
    text = client.get(reverse("panel_done", args=[link.slug])).content.decode()
    assert "You have been screened out" in text and "screen-out code" in text and "CSCREEN" in text
    assert 'href="https://pool.example/out?c=CSCREEN"' in text
    assert "completion code" not in text.lower() and "finished every item" not in text
    assert "<title>Screened out" in text


# ----------------------------------------------------------------------------- 4. the link form


def test_codes_are_stripped_and_must_tell_the_outcomes_apart(study, researcher):
    link = make_link(study, researcher, code_completed="  DONE2 \t", code_screened_out=" OUT2")
    assert (link.code_completed, link.code_screened_out) == ("DONE2", "OUT2")
    with pytest.raises(RatingError, match="same as the completed code"):
        make_link(study, researcher, code_completed="SAME", code_screened_out="SAME")
    with pytest.raises(RatingError, match="same as the screened out code"):
        make_link(study, researcher, code_returned="CSCREEN")
    with pytest.raises(RatingError, match="no spaces"):
        make_link(study, researcher, code_completed="AB CD")


def test_the_form_shows_each_problem_beside_its_field_never_a_database_error(client, open_study, researcher):
    client.force_login(researcher)
    url = reverse("panel_page", args=[open_study.id])
    same = client.post(url, link_form(code_screened_out="DONE1"))
    text = same.content.decode()
    assert same.status_code == 200 and "own code" in text and not PanelLink.objects.exists()
    assert client.post(url, link_form(label="Pilot")).status_code == 302
    twice = client.post(url, link_form(label="Pilot", code_completed="DONE9", code_screened_out="SCREEN9"))
    text = twice.content.decode()
    assert twice.status_code == 200 and "Another link of this study has this label" in text
    assert "IntegrityError" not in text and "duplicate key" not in text and "Constraint" not in text
    assert PanelLink.objects.count() == 1
    zero = client.post(url, link_form(gap_minutes="0", code_completed="DONE8", code_screened_out="SCREEN8"))
    text = zero.content.decode()
    assert "must be at least 1" in text and "Constraint" not in text and PanelLink.objects.count() == 1


# ----------------------------------------------------------------------------- 5. labels, closing and deleting


def test_links_have_labels_and_only_unused_ones_can_be_deleted(client, open_study, researcher):
    client.force_login(researcher)
    page_url = reverse("panel_page", args=[open_study.id])
    client.post(page_url, link_form(label="Prolific pilot"))
    client.post(page_url, link_form(label="Prolific main", code_completed="DONE3", code_screened_out="SCREEN3"))
    pilot, main = PanelLink.objects.get(label="Prolific pilot"), PanelLink.objects.get(label="Prolific main")
    page = client.get(page_url).content.decode()
    assert "Prolific pilot" in page and "Prolific main" in page
    services.panel_enter(link=main, query=prolific())

    def change(link, action):
        return client.post(reverse("panel_link_change", args=[open_study.id, link.id]), {"action": action},
                           follow=True)

    assert client.get(reverse("panel_link_change", args=[open_study.id, pilot.id])).status_code == 405
    assert "Deleted Prolific pilot" in change(pilot, "delete").content.decode()
    assert not PanelLink.objects.filter(id=pilot.id).exists()
    assert AuditEvent.objects.filter(action="panel.link_delete", actor=researcher).count() == 1
    refused = change(main, "delete").content.decode()
    assert "close it instead" in refused and PanelLink.objects.filter(id=main.id).exists()
    change(main, "close")
    main.refresh_from_db()
    assert not main.enabled and PanelParticipant.objects.filter(link=main).count() == 1
    assert enter(Client(), main, **prolific(PID2)).status_code == 410
    change(main, "open")
    main.refresh_from_db()
    assert main.enabled


# ----------------------------------------------------------------------------- 6 and 7. progress and names


def test_the_panel_and_raters_pages_count_and_name_a_participant_alike(client, link, open_study, researcher):
    c = Client()
    enter(c, link, **prolific())
    consent(c, open_study)
    participant = PanelParticipant.objects.get()
    rate_some(open_study, participant.user, 2)
    time_out(link)
    pseudonym = participant.user.memberships.get(study=open_study).pseudonym
    client.force_login(researcher)
    panel = client.get(reverse("panel_page", args=[open_study.id])).content.decode()
    row = next(r for r in panel.split('id="panel-participants"')[1].split("<tr>") if PID in r)
    assert "Timed out" in row and '<td class="panel-ratings">2</td>' in row and pseudonym in row
    assert "Timed out: <strong>1</strong>" in panel
    raters = client.get(reverse("raters_page", args=[open_study.id])).content.decode()
    row = next(r for r in raters.split('id="quality"')[1].split("<tr>") if pseudonym in r)
    # The pool id first, the pseudonym beside it, the same status words, the same count of ratings.
    assert PID in row and "(timed out)" in row and "<td>2</td>" in row
    assert participant.user.username not in raters and "Ratings given" in raters and "Ratings given" in panel
    groups = client.get(reverse("rater_groups", args=[open_study.id])).content.decode()
    assert PID in groups and participant.user.username not in groups


@pytest.fixture
def link(open_study, researcher):
    return make_link(open_study, researcher)


# ----------------------------------------------------------------------------- 8. who takes released work


def test_released_work_goes_only_to_participants_still_active(client, link, open_study):
    done, idle = Client(), Client()
    enter(done, link, **prolific())
    consent(done, open_study)
    finished = PanelParticipant.objects.get(participant_id=PID)
    rate_all(open_study, finished.user)
    done.get(reverse("panel_done", args=[link.slug]))  # the code given: completed
    assert PanelParticipant.objects.get(participant_id=PID).status == "completed"
    enter(idle, link, **prolific(PID2))
    consent(idle, open_study)
    stays = add_rater(open_study, "stays")
    eligible = {u.id for u in services.eligible_raters(open_study)}
    assert finished.user_id not in eligible and stays.id in eligible
    time_out(link)
    gone = PanelParticipant.objects.get(participant_id=PID2)
    assert gone.status == "timed_out" and gone.user_id not in {u.id for u in services.eligible_raters(open_study)}
    # The released items went to the rater still here, none to the one who finished and left.
    assert not Assignment.objects.filter(study=open_study, rater=finished.user, completed_at__isnull=True).exists()
    assert Assignment.objects.filter(study=open_study, rater=stays, completed_at__isnull=True).exists()


# ----------------------------------------------------------------------------- 9. the beat schedule, and lazily


def test_celery_beat_runs_the_release_on_a_setting_and_compose_starts_beat():
    from evalapp.celery import app

    [entry] = [e for e in app.conf.beat_schedule.values() if e["task"] == "raters.release_idle_participants"]
    assert entry["schedule"] == settings.PANEL_RELEASE_IDLE_SECONDS > 0
    worker = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["worker"]
    assert "-B" in worker["command"]
    assert "PANEL_RELEASE_IDLE_SECONDS" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("page", ["panel_page", "raters_page"])
def test_viewing_the_participants_releases_the_idle_ones_first(client, link, open_study, researcher, page):
    enter(Client(), link, **prolific())
    PanelParticipant.objects.update(last_seen_at=timezone.now() - timedelta(hours=2))
    client.force_login(researcher)
    client.get(reverse(page, args=[open_study.id]))
    assert PanelParticipant.objects.get().status == "timed_out"


def test_a_page_with_no_one_idle_releases_no_one(client, link, open_study, researcher, django_assert_max_num_queries):
    enter(Client(), link, **prolific())
    with django_assert_max_num_queries(2):  # the shortest idle limit, and whether anyone is past it
        assert panel_release_idle_lazily(study=open_study) == []
    assert PanelParticipant.objects.get().status == "active"


# ----------------------------------------------------------------------------- 10. the idle limit and breaks


def test_the_idle_limit_must_exceed_the_prompted_break(client, open_study, researcher):
    with pytest.raises(RatingError, match="prompted break"):
        make_link(open_study, researcher, idle_minutes=5)
    assert make_link(open_study, researcher, idle_minutes=6).idle_minutes == 6
    client.force_login(researcher)
    page = client.post(reverse("panel_page", args=[open_study.id]),
                       link_form(idle_minutes="3", code_completed="D7", code_screened_out="S7"))
    assert page.status_code == 200 and "prompted break" in page.content.decode()


def test_the_idle_clock_stops_during_a_prompted_break(client, open_study, researcher, clock):
    WelfareSettings.objects.update_or_create(study=open_study, defaults={"break_every_items": 2})
    link = make_link(open_study, researcher, idle_minutes=6)
    enter(client, link, **prolific())
    consent(client, open_study)
    rate_some(open_study, PanelParticipant.objects.get().user, 2)  # a break is due now, for 5 minutes
    last = clock.now
    # 6.5 minutes on: idle for 1.5 of them once the break is left out, so not timed out.
    assert services.panel_release_idle(now=last + timedelta(minutes=6.5)) == []
    # Without a break due, the same wait times out (a second participant, one item only).
    other = Client()
    enter(other, link, **prolific(PID2))
    consent(other, open_study)
    rate_some(open_study, PanelParticipant.objects.get(participant_id=PID2).user, 1)
    released = services.panel_release_idle(now=clock.now + timedelta(minutes=6.5))
    assert [p.participant_id for p in released] == [PID2]
    # Past the break and the idle limit after it: timed out.
    assert [p.participant_id for p in services.panel_release_idle(now=last + timedelta(minutes=11.5))] == [PID]
