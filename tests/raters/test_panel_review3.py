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


# ----------------------------------------------------------------------------- 3, 4. an outcome, then the pages


def test_after_a_cap_the_rater_pages_lead_to_the_code_never_the_consent_form(client, open_study, researcher):
    from .test_panel_review2 import at_session_cap

    link = at_session_cap(client, open_study, researcher, code_returned="CRET")
    cap_page = client.get(reverse("rate", args=[open_study.id])).content.decode()
    assert "Thank you: you have finished" in cap_page and "Withdraw from the study" not in cap_page
    client.post(reverse("welfare_cap_finish", args=[open_study.id]))
    done_url = reverse("panel_done", args=[link.slug])
    for name in ("rate", "calibration", "consent"):
        page = client.get(reverse(name, args=[open_study.id]))
        assert page.status_code == 302 and page.url == done_url, name
    # The old consent form's "I agree" (an old tab): the code, never the same form again.
    agreed = consent(client, open_study)
    assert agreed.status_code == 302 and agreed.url == done_url
    from .test_pairwise_flow import _open as open_pairs

    open_pairs(open_study)
    compare = client.get(reverse("compare", args=[open_study.id]))
    assert compare.status_code == 302 and compare.url == done_url
    assert 'id="panel-code">CDONE1<' in client.get(done_url).content.decode()


def test_a_participant_who_finished_every_item_is_sent_to_the_code(client, open_study, researcher):
    link = make_link(open_study, researcher)
    enter(client, link, **prolific())
    consent(client, open_study)
    rate_all(open_study, PanelParticipant.objects.get().user)
    client.get(reverse("panel_done", args=[link.slug]))
    assert PanelParticipant.objects.get().status == "completed"
    assert client.get(reverse("consent", args=[open_study.id])).url == reverse("panel_done", args=[link.slug])


def test_a_screened_out_participant_is_told_so_and_sent_to_the_screen_out_code(client, open_study, researcher):
    from raters.models import CalibrationItem

    CalibrationItem.objects.create(study=open_study, messages=[{"role": "user", "content": "Hi"}],
                                   response_text="Ok.", references={"empathy": 10, "fluency": 10}, rationale="r",
                                   created_by=researcher)
    link = make_link(open_study, researcher, code_returned="CRET")
    enter(client, link, **prolific())
    consent(client, open_study)
    item = CalibrationItem.objects.get()
    for _ in range(2):
        client.get(reverse("calibration", args=[open_study.id]))
        last = client.post(reverse("calibration", args=[open_study.id]),
                           {"item": item.public_id, "score-empathy": "1", "score-fluency": "1"})
    assert "Not passed this time" in last.content.decode()
    done_url = reverse("panel_done", args=[link.slug])
    # Not yet recorded as screened out (no code page visited): the pages lead there all the same.
    assert PanelParticipant.objects.get().status == "active"
    for name in ("rate", "calibration", "consent"):
        page = client.get(reverse(name, args=[open_study.id]))
        assert page.status_code == 302 and page.url == done_url, name
    done = client.get(done_url).content.decode()
    assert "CSCREEN" in done and "completion code" not in done.lower()
    # The calibration page's own words for a pool participant who failed (as a POST error renders it).
    from django.template.loader import render_to_string
    from django.test import RequestFactory

    from raters import selectors

    request = RequestFactory().get("/")
    request.user = PanelParticipant.objects.get().user
    text = render_to_string("raters/calibration.html", {
        "study": open_study, "status": selectors.rater_status(study=open_study, user=request.user)}, request=request)
    assert "screened out" in text and "Get your screen-out code" in text and done_url in text
    assert "completion code" not in text and "researcher will decide" not in text


# ----------------------------------------------------------------------------- 5. all done


def test_with_nothing_left_the_rate_page_offers_only_the_completion_link(client, open_study, researcher):
    link = make_link(open_study, researcher, code_returned="CRET")
    enter(client, link, **prolific())
    consent(client, open_study)
    assert 'id="panel-stop-link"' in client.get(reverse("rate", args=[open_study.id])).content.decode()
    rate_all(open_study, PanelParticipant.objects.get().user)
    page = client.get(reverse("rate", args=[open_study.id])).content.decode()
    assert "All done: thank you!" in page and 'id="panel-done-link"' in page
    assert 'id="panel-stop-link"' not in page and "Stop and get your code" not in page


# ----------------------------------------------------------------------------- 6. withdrawing as a pool participant


@pytest.mark.parametrize("policy, says", [("exclude", "your ratings are kept but excluded from the analysis"),
                                          ("delete", "all your ratings are deleted")])
def test_the_withdraw_button_tells_a_pool_participant_the_code_and_the_policy(
        client, open_study, researcher, policy, says):
    services.consent_publish(study=open_study, text="Text.", withdrawal_policy=policy)
    link = make_link(open_study, researcher, code_returned="CRET")
    enter(client, link, **prolific())
    consent(client, open_study)
    page = client.get(reverse("rate", args=[open_study.id])).content.decode()
    form = page.split('class="withdraw"')[1].split("</form>")[0]
    confirm = form.split('data-confirm="')[1].split('"')[0]
    note = form.split('id="withdraw-note">')[1].split("</span>")[0]
    for text in (confirm, note):
        assert "the code for stopping early, not the completion code" in text and says in text
    assert "You will see nothing more" not in confirm


def test_an_invited_raters_withdraw_button_is_as_before(client, open_study):
    from .conftest import add_rater

    client.force_login(add_rater(open_study, "invited"))
    page = client.get(reverse("rate", args=[open_study.id])).content.decode()
    assert 'data-confirm="Withdraw from this study? You will see nothing more."' in page
    assert 'id="withdraw-note"' not in page


# ----------------------------------------------------------------------------- 7. the link form's labels


def test_the_link_form_uses_the_pages_words(client, open_study, researcher):
    client.force_login(researcher)
    page = client.get(reverse("panel_page", args=[open_study.id])).content.decode()
    for label in ("Code for stopping early", "Redirect after stopping early", "Break length (minutes)"):
        assert label in page
    for old in ("Code returned", "Redirect returned", "Gap minutes"):
        assert old not in page
