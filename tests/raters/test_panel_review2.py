"""Participant pools, the second round of fresh-eyes findings (issue 17): withdrawing as a pool participant,
skips in the payment sheet, the done page at a cap, the stop link, crisis resources after leaving, links on
a study that is not open, the rate page's count of comparisons, the effective rate, the reconcile report."""

import pytest
from django.test import Client
from django.urls import reverse

from raters import services
from raters.models import PanelParticipant

from .test_panel import PID, consent, enter, make_link, prolific
from .test_panel_pay import next_public, sheet, submit
from .test_panel_review import rate_some

pytestmark = pytest.mark.django_db


@pytest.fixture
def open_study(rating_study):
    services.study_open_for_rating(study=rating_study)
    return rating_study


# ----------------------------------------------------------------------------- 1. withdrawing


@pytest.mark.parametrize("code", ["CRET", ""])
def test_a_pool_participant_who_withdraws_has_stopped_early_with_the_code(client, open_study, researcher, code):
    link = make_link(open_study, researcher, code_returned=code,
                     redirect_returned="https://app.prolific.com/submissions/return?cc={code}" if code else "")
    enter(client, link, **prolific())
    consent(client, open_study)
    rate_some(open_study, PanelParticipant.objects.get().user, 1)
    page = client.post(reverse("withdraw", args=[open_study.id]))
    text = page.content.decode()
    participant = PanelParticipant.objects.get()
    assert page.status_code == 200 and participant.status == "returned" and participant.outcome_code == code
    assert "stopped the study before the end" in text
    if code:
        assert "CRET" in text and "https://app.prolific.com/submissions/return?cc=CRET" in text
    else:
        assert 'id="panel-contact"' in text
    # The researcher's pages say so.
    researcher_client = Client()
    researcher_client.force_login(researcher)
    assert "Returned" in researcher_client.get(reverse("panel_page", args=[open_study.id])).content.decode()
    row, = sheet(researcher_client, open_study, rate="12")
    assert (row["participant_id"], row["status"], row["outcome_code"]) == (PID, "returned", code)
    assert "Returned" in researcher_client.get(reverse("panel_reconcile", args=[open_study.id])).content.decode()
    # Following the link again (this browser or another), the code page and the login: their outcome, no 404.
    for browser in (client, Client()):
        again = enter(browser, link, **prolific())
        assert again.status_code == 410 and "stopped the study before the end" in again.content.decode()
        assert (code or 'id="panel-contact"') in again.content.decode()
    for url in (reverse("panel_done", args=[link.slug]), reverse("rate", args=[open_study.id])):
        final = client.get(url, follow=True)
        assert "stopped the study before the end" in final.content.decode(), url


def test_withdrawing_as_an_invited_rater_is_as_before(client, open_study, rater):
    client.force_login(rater)
    page = client.post(reverse("withdraw", args=[open_study.id]))
    assert page.status_code == 302 and page.url == reverse("study_list")


# ----------------------------------------------------------------------------- 2. skips in the payment sheet


def test_skipped_items_count_and_their_time_is_paid_a_distress_skip_never_against_the_rater(
        client, open_study, researcher, clock):
    link = make_link(open_study, researcher)
    participant_client = Client()
    enter(participant_client, link, **prolific())
    consent(participant_client, open_study)
    user = PanelParticipant.objects.get().user
    clock.advance(30)
    submit(open_study, user, None)
    clock.advance(40)  # read, then skipped as distressing
    distress = participant_client.post(reverse("rate_distress", args=[open_study.id, next_public(open_study, user)]))
    assert distress.status_code == 302
    clock.advance(20)
    submit(open_study, user, None)
    clock.advance(15)  # read, then "can't judge"
    skip = participant_client.post(reverse("rate_submit", args=[open_study.id, next_public(open_study, user)]),
                                   {"action": "skip", "skip_reason": "no context"})
    assert skip.status_code == 302
    client.force_login(researcher)
    [row] = sheet(client, open_study, rate="36")
    assert (row["items_done"], row["items_skipped"], row["items_skipped_distressing"]) == ("4", "1", "1")
    # 30 + 40 + 20 + 15 seconds, all of it read: paid at 36 an hour (0.01 a second).
    assert (row["active_seconds"], row["pay"], row["items_without_time"]) == ("105.0", "1.05", "0")
    assert "skip" in row["time_basis"]


def test_a_skip_longer_than_the_break_length_is_left_out_as_a_break(client, open_study, researcher, clock):
    link = make_link(open_study, researcher, gap_minutes=1)
    participant_client = Client()
    enter(participant_client, link, **prolific())
    consent(participant_client, open_study)
    user = PanelParticipant.objects.get().user
    clock.advance(30)
    submit(open_study, user, None)
    clock.advance(90)
    participant_client.post(reverse("rate_distress", args=[open_study.id, next_public(open_study, user)]))
    client.force_login(researcher)
    [row] = sheet(client, open_study, rate="36")
    assert (row["items_done"], row["active_seconds"], row["items_left_out_as_breaks"]) == ("2", "30.0", "1")


# ----------------------------------------------------------------------------- 8. the effective rate


def test_the_effective_rate_is_computed_from_the_pay_before_rounding(client, open_study, researcher, clock):
    link = make_link(open_study, researcher)
    enter(Client(), link, **prolific())
    consent_client = Client()
    enter(consent_client, link, **prolific())
    consent(consent_client, open_study)
    clock.advance(31)
    submit(open_study, PanelParticipant.objects.get().user, None)
    PanelParticipant.objects.update(pool_seconds=60)
    client.force_login(researcher)
    # 31 s at 12 an hour is 0.1033, paid as 0.10; over a minute that is 6.20 an hour, not 6.00.
    [row] = sheet(client, open_study, rate="12", minimum="6.1")
    assert (row["pay"], row["effective_hourly"], row["below_minimum_wage"]) == ("0.10", "6.2", "no")
