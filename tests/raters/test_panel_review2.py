"""Participant pools, the second round of fresh-eyes findings (issue 17): withdrawing as a pool participant,
skips in the payment sheet, the done page at a cap, the stop link, crisis resources after leaving, links on
a study that is not open, the rate page's count of comparisons, the effective rate, the reconcile report."""

import pytest
from django.test import Client
from django.urls import reverse

from raters import services
from raters.models import PanelLink, PanelParticipant

from .test_panel import PID, consent, enter, make_link, prolific
from .conftest import add_rater
from .test_pairwise_flow import _open as open_pairs
from .test_panel_pay import next_public, sheet, submit
from .test_panel_review import rate_some

pytestmark = pytest.mark.django_db


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
        # Not sent away by itself: they may have stopped because of what they read (the crisis resources).
        assert 'http-equiv="refresh"' not in text and "in 10 seconds" not in text
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


# ----------------------------------------------------------------------------- 3. the code page at a cap


def at_session_cap(client, study, researcher, **link_values):
    link = make_link(study, researcher, **link_values)
    services.welfare_save(study=study, actor=researcher, cap_per_session=2, break_every_items=0,
                          break_every_minutes=0)
    enter(client, link, **prolific())
    consent(client, study)
    rate_some(study, PanelParticipant.objects.get().user, 2)
    return link


def test_at_a_cap_the_rate_page_shows_one_way_to_the_code_and_the_code_page_gives_it(
        client, open_study, researcher):
    link = at_session_cap(client, open_study, researcher, code_returned="CRET")
    page = client.get(reverse("rate", args=[open_study.id])).content.decode()
    assert 'id="welfare-cap-finish"' in page
    assert 'id="panel-done-link"' not in page and 'id="panel-stop-link"' not in page
    # Following the code link anyway (an old tab): the completion code and why, never "go on rating".
    done = client.get(reverse("panel_done", args=[link.slug])).content.decode()
    assert 'id="panel-code">CDONE1<' in done and "Go on rating" not in done and "items left" not in done
    assert "reached the most this study asks anyone to read in one sitting (2 items)" in done
    assert "finished every item" not in done
    participant = PanelParticipant.objects.get()
    assert (participant.status, participant.outcome_code) == ("completed", "CDONE1")
    # Coming back to the page: the same code, the same reason.
    again = client.get(reverse("panel_done", args=[link.slug])).content.decode()
    assert 'id="panel-code">CDONE1<' in again and "in one sitting (2 items)" in again


def test_finishing_by_the_cap_box_says_the_cap_was_reached(client, open_study, researcher):
    at_session_cap(client, open_study, researcher)
    done = client.post(reverse("welfare_cap_finish", args=[open_study.id]), follow=True).content.decode()
    assert 'id="panel-code">CDONE1<' in done and "in one sitting (2 items)" in done
    assert "finished every item" not in done


# ----------------------------------------------------------------------------- 4. the stop link


def test_the_rate_and_compare_pages_offer_a_pool_participant_a_plain_stop_link(client, open_study, researcher):
    link = make_link(open_study, researcher, code_returned="CRET")
    enter(client, link, **prolific())
    consent(client, open_study)
    stop = f'href="{reverse("panel_done", args=[link.slug])}?stop=1" id="panel-stop-link">Stop and get your code</a>'
    rate_page = client.get(reverse("rate", args=[open_study.id])).content.decode()
    assert stop in rate_page and rate_page.index(stop) < rate_page.index("Withdraw from the study")
    open_pairs(open_study)
    compare_page = client.get(reverse("compare", args=[open_study.id])).content.decode()
    assert stop in compare_page and compare_page.index(stop) < compare_page.index("Withdraw from the study")
    # It leads to the confirmation, never straight to the end.
    confirm = client.get(reverse("panel_done", args=[link.slug]), {"stop": "1"}).content.decode()
    assert "ends for good" in confirm and PanelParticipant.objects.get().status == "active"
    # Without a code for stopping early (withdrawing is the way out then), and for an invited rater: none.
    PanelLink.objects.update(code_returned="")
    assert 'id="panel-stop-link"' not in client.get(reverse("rate", args=[open_study.id])).content.decode()
    other = Client()
    other.force_login(add_rater(open_study, "invited"))
    invited_page = other.get(reverse("rate", args=[open_study.id])).content.decode()
    assert "Withdraw from the study" in invited_page and 'id="panel-stop-link"' not in invited_page


# ----------------------------------------------------------------------------- 5. crisis resources after leaving


@pytest.fixture
def crisis(open_study, researcher):
    services.welfare_save(study=open_study, actor=researcher, crisis_text="Call the helpline any time.",
                          crisis_links=[{"label": "Helpline", "url": "tel:+15550100"}])


def assert_crisis(text):
    assert "Call the helpline any time." in text and 'href="tel:+15550100"' in text


def test_stopped_timed_out_and_finished_pages_show_the_crisis_resources(client, open_study, researcher, crisis):
    from .test_panel import PID2, rate_all
    from .test_panel_review import time_out

    link = make_link(open_study, researcher, code_returned="CRET", code_timed_out="CTIME")
    # Stopped early: on the page that gives the code, and again by the link.
    enter(client, link, **prolific())
    consent(client, open_study)
    stopped = client.post(reverse("panel_done", args=[link.slug]), {"action": "return", "confirm": "yes"})
    assert "CRET" in stopped.content.decode()
    assert_crisis(stopped.content.decode())
    again = enter(client, link, **prolific())
    assert again.status_code == 410 and 'id="panel-code">CRET<' in again.content.decode()
    assert_crisis(again.content.decode())
    # Timed out.
    idle = Client()
    enter(idle, link, **prolific(PID2))
    time_out(link)
    assert_crisis(enter(idle, link, **prolific(PID2)).content.decode())
    # Finished.
    finisher = Client()
    enter(finisher, link, **prolific("6aabbccddeeff00112233445"))
    consent(finisher, open_study)
    rate_all(open_study, PanelParticipant.objects.get(participant_id="6aabbccddeeff00112233445").user)
    done = finisher.get(reverse("panel_done", args=[link.slug])).content.decode()
    assert 'id="panel-code">CDONE1<' in done
    assert_crisis(done)


def test_the_support_page_still_shows_them(client, open_study, researcher, crisis):
    client.force_login(add_rater(open_study, "r1"))
    assert_crisis(client.get(reverse("support", args=[open_study.id])).content.decode())


# ----------------------------------------------------------------------------- 6. a link on a study that is not open


def test_a_link_on_a_study_not_open_warns_the_researcher_and_turns_participants_away_before_consent(
        client, rating_study, researcher):
    link = make_link(rating_study, researcher)
    client.force_login(researcher)
    page = client.get(reverse("panel_page", args=[rating_study.id])).content.decode()
    assert "not open for rating" in page and "no items to rate" not in page
    participant = Client()
    entered = enter(participant, link, **prolific())
    assert entered.status_code == 409 and "not open yet" in entered.content.decode()
    assert not PanelParticipant.objects.exists() and "_auth_user_id" not in participant.session
    services.study_open_for_rating(study=rating_study)
    page = client.get(reverse("panel_page", args=[rating_study.id])).content.decode()
    assert "panel-warning" not in page
    assert enter(participant, link, **prolific()).url == reverse("rate", args=[rating_study.id])


def test_a_link_on_an_empty_study_warns_that_there_is_nothing_to_rate(client, study, researcher):
    make_link(study, researcher)
    client.force_login(researcher)
    page = client.get(reverse("panel_page", args=[study.id])).content.decode()
    assert "no items to rate" in page and "not open for rating" in page


# ----------------------------------------------------------------------------- 7. the rate page counts comparisons


def test_the_rate_page_and_the_code_page_count_the_same_work(client, open_study, researcher):
    from .test_panel import rate_all

    link = make_link(open_study, researcher)
    enter(client, link, **prolific())
    consent(client, open_study)
    add_rater(open_study, "r1")
    rate_all(open_study, PanelParticipant.objects.get().user)
    open_pairs(open_study, k=2)
    done = client.get(reverse("panel_done", args=[link.slug])).content.decode()
    left = int(done.split('id="panel-not-done">You have ')[1].split(" ")[0])
    assert left > 0
    rate_page = client.get(reverse("rate", args=[open_study.id])).content.decode()
    assert "All done" not in rate_page and "rated every item" not in rate_page
    assert f"{left} comparisons (which of two responses is better) are left" in rate_page
    assert f'href="{reverse("compare", args=[open_study.id])}" id="go-comparing"' in rate_page


# ----------------------------------------------------------------------------- 9. the reconcile report


def test_the_reconcile_report_gives_every_problem_of_a_row_in_plain_words(client, open_study, researcher):
    from raters.panel_import import parse_submissions
    from raters.services.panel import normalise_participant_id

    data = ("Participant id,Status,Time taken\n"
            ",WHATEVER,abc\n"
            f"{PID},APPROVED,abc\n"
            "nothex,APPROVED,12\n").encode()
    parsed = parse_submissions(data, lambda raw: normalise_participant_id("prolific", raw))
    assert [str(e) for e in parsed.errors] == [
        "row 2, Participant id: empty participant id",
        "row 2, Status: 'WHATEVER' is not one of ACTIVE, APPROVED, AWAITING REVIEW, REJECTED, RETURNED, "
        "SCREENED OUT, TIMED-OUT",
        "row 2, Time taken: 'abc' is not a number of seconds",
        "row 3, Time taken: 'abc' is not a number of seconds",
        "row 4, Participant id: 'nothex' is not a participant id of this pool",
    ]
    dates = parse_submissions(f"Participant id,Status,Started at,Completed at\n{PID},APPROVED,yesterday,"
                              "2026-01-31 12:00:00\n".encode(), lambda raw: raw)
    assert [str(e) for e in dates.errors] == [
        "row 2, Started at: 'yesterday' is not a date and time like 2026-01-31 12:00:00"]
    # On the page, all of them.
    from django.core.files.uploadedfile import SimpleUploadedFile

    make_link(open_study, researcher)
    client.force_login(researcher)
    page = client.post(reverse("panel_reconcile", args=[open_study.id]),
                       {"file": SimpleUploadedFile("s.csv", data, content_type="text/csv")})
    text = page.content.decode()
    assert page.status_code == 400 and text.count("<li>row 2,") == 3 and "empty participant id" in text
