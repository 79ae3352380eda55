"""Participant pools, the third round of fresh-eyes findings (issue 17): the pool's file and a timed-out or
returned participant, a participant with an outcome kept off the consent form, the screen-out and all-done
pages, withdrawing as a pool participant, the link form's labels."""

import pytest
from django.test import Client
from django.urls import reverse

from evalapp.models import Rating
from raters import services
from raters.models import PanelParticipant, StudyMembership

from .test_panel import PID, PID2, consent, enter, make_link, prolific, rate_all, submissions, upload
from .test_panel_review import rate_some, time_out

pytestmark = pytest.mark.django_db


@pytest.fixture
def open_study(rating_study):
    services.study_open_for_rating(study=rating_study)
    return rating_study


# ----------------------------------------------------------------------------- 1. the pool's TIMED-OUT


@pytest.mark.parametrize("policy", ["exclude", "delete"])
def test_the_pools_timed_out_keeps_what_a_timed_out_participant_rated(client, open_study, researcher, policy):
    services.consent_publish(study=open_study, text="Text.", withdrawal_policy=policy)
    link = make_link(open_study, researcher, code_timed_out="CTIME")
    participant_client = Client()
    enter(participant_client, link, **prolific())
    consent(participant_client, open_study)
    user = PanelParticipant.objects.get().user
    rate_some(open_study, user, 2)
    assert len(time_out(link)) == 1
    client.force_login(researcher)
    page = upload(client, open_study, submissions([PID, "TIMED-OUT", "3000"])).content.decode()
    assert "0 participants changed status" in page and 'id="reconcile-changes"' not in page
    participant = PanelParticipant.objects.get()
    assert (participant.status, participant.pool_status, participant.outcome_code) == ("timed_out", "TIMED-OUT",
                                                                                       "CTIME")
    assert StudyMembership.objects.get(user=user).withdrawn_at is None
    assert Rating.objects.filter(rater=user).count() == 2
    # What their page promises holds.
    assert "kept and counts: 2 answers" in enter(Client(), link, **prolific()).content.decode()


def test_the_pools_timed_out_times_out_an_active_participant_without_withdrawing(client, open_study, researcher):
    link = make_link(open_study, researcher, code_timed_out="CTIME")
    participant_client = Client()
    enter(participant_client, link, **prolific())
    consent(participant_client, open_study)
    user = PanelParticipant.objects.get().user
    rate_some(open_study, user, 1)
    client.force_login(researcher)
    page = upload(client, open_study, submissions([PID, "TIMED-OUT", ""])).content.decode()
    assert "1 participant changed status" in page
    changes = page.split('id="reconcile-changes"')[1].split("</table>")[0]
    assert f"<td>{PID}</td><td>Active</td><td>Timed out</td>" in changes
    participant = PanelParticipant.objects.get()
    assert (participant.status, participant.outcome_code) == ("timed_out", "CTIME")
    assert StudyMembership.objects.get(user=user).withdrawn_at is None and Rating.objects.filter(rater=user).exists()


def test_the_reconcile_report_lists_who_changed_from_what_to_what(client, open_study, researcher):
    link = make_link(open_study, researcher)
    for pid in (PID, PID2):
        c = Client()
        enter(c, link, **prolific(pid))
        consent(c, open_study)
    client.force_login(researcher)
    page = upload(client, open_study, submissions([PID, "RETURNED", ""], [PID2, "REJECTED", ""])).content.decode()
    assert "2 participants changed status" in page
    changes = page.split('id="reconcile-changes"')[1].split("</table>")[0]
    assert f"<td>{PID}</td><td>Active</td><td>Returned</td>" in changes
    assert f"<td>{PID2}</td><td>Active</td><td>Rejected</td>" in changes


# ----------------------------------------------------------------------------- 2. the pool's RETURNED


def test_a_participant_the_pool_returns_is_shown_the_stopped_early_code(client, open_study, researcher):
    link = make_link(open_study, researcher, code_returned="CRET",
                     redirect_returned="https://app.prolific.com/submissions/return?cc={code}")
    participant_client = Client()
    enter(participant_client, link, **prolific())
    consent(participant_client, open_study)
    client.force_login(researcher)
    upload(client, open_study, submissions([PID, "RETURNED", ""]))
    participant = PanelParticipant.objects.get()
    assert (participant.status, participant.outcome_code) == ("returned", "CRET") and participant.outcome_at
    again = enter(Client(), link, **prolific()).content.decode()
    assert "stopped the study before the end" in again and "CRET" in again
    assert "gives no code for stopping early" not in again
    assert "https://app.prolific.com/submissions/return?cc=CRET" in again and "cc=&" not in again
