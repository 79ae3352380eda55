"""A pool participant's whole path in a real browser, for each pool: in by the link, consent,
calibration where the study has it, rate everything, the completion code and the way back; a cap reached
by an in-place submit, and withdrawing from the rate page."""

import pytest
from django.urls import reverse

from evalapp.models import Rating
from raters import services
from raters.models import Assignment, CalibrationItem, PanelParticipant

from ..factories import ArmFactory, PromptFactory, ResponseFactory, StudyFactory
from .conftest import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

POOLS = {
    "prolific": ({"PROLIFIC_PID": "5f0c1a2b3c4d5e6f7a8b9c0d", "STUDY_ID": "st1", "SESSION_ID": "se1"},
                 "https://app.prolific.com/submissions/complete?cc={code}",
                 "https://app.prolific.com/submissions/complete?cc=PROCODE"),
    "sona": ({"id": "40123"}, "https://uni.sona-systems.com/webstudy_credit.aspx?survey_code={participant_id}&c={code}",
             "https://uni.sona-systems.com/webstudy_credit.aspx?survey_code=40123&c=SONACODE"),
    "mturk": ({"workerId": "A1B2C3D4E5F6G7", "assignmentId": "3XYZ", "hitId": "H9"},
              "https://www.mturk.com/mturk/externalSubmit?assignmentId={assignment_id}&code={code}",
              "https://www.mturk.com/mturk/externalSubmit?assignmentId=3XYZ&code=MTURKCODE"),
}


def pool_study(researcher, preset: str, calibration: bool):
    study = StudyFactory(owner=researcher, title=f"{preset} study", ratings_per_response=1, gold_rate=0)
    arms = [ArmFactory(study=study, label="fine-tuned"), ArmFactory(study=study, label="baseline")]
    for prompt in PromptFactory.create_batch(2, study=study):
        for arm in arms:
            ResponseFactory(prompt=prompt, arm=arm, text=f"Answer to {prompt.external_id}")
    services.consent_publish(study=study, text="We study chatbot replies.", withdrawal_policy="exclude")
    if calibration:
        CalibrationItem.objects.create(
            study=study, messages=[{"role": "user", "content": "I failed my exam."}],
            response_text="That must be disappointing.", references={"empathy": 8, "fluency": 9},
            rationale="Validates.", created_by=researcher)
    services.study_open_for_rating(study=study)
    return study


@pytest.mark.parametrize("preset", list(POOLS))
def test_a_pool_participant_rates_everything_and_gets_the_code(live_server, page, researcher, preset):
    query, template, expected_url = POOLS[preset]
    study = pool_study(researcher, preset, calibration=preset == "prolific")
    code = f"{preset.upper()}CODE" if preset != "prolific" else "PROCODE"
    link = services.panel_link_save(study=study, actor=researcher, values={
        "preset": preset, "code_completed": code, "code_screened_out": "OUT", "redirect_completed": template})
    params = "&".join(f"{k}={v}" for k, v in query.items())
    page.goto(f"{live_server.url}{reverse('panel_enter', args=[link.slug])}?{params}")

    page.wait_for_selector("#consent-text")
    page.check("#agree")
    page.click("#consent-accept")
    if preset == "prolific":
        page.wait_for_selector("html[data-rating-ready=true] #rating-form")
        page.keyboard.press("8")
        page.keyboard.press("Tab")
        page.keyboard.press("9")
        page.keyboard.press("Enter")
        page.wait_for_selector("#calibration-feedback")
        page.click("#calibration-next")
        page.wait_for_selector("#calibration-result")
        page.click("text=Start rating")

    page.wait_for_selector("html[data-rating-ready=true] #rating-form")
    participant = PanelParticipant.objects.get(study=study)
    total = Assignment.objects.filter(study=study, rater=participant.user).count()
    assert total == 4
    for expected in range(2, total + 2):
        page.keyboard.press("7")
        page.keyboard.press("Tab")
        page.keyboard.press("6")
        page.keyboard.press("Enter")
        if expected <= total:
            wait_until(page, f"document.querySelector('#progress-text').innerText === '{expected} of {total}'")
    page.wait_for_selector("#all-done")
    assert Rating.objects.filter(rater=participant.user).count() == total

    page.click("#panel-done-link")
    page.wait_for_selector("#panel-code")
    assert page.inner_text("#panel-code") == code
    assert page.get_attribute("#panel-redirect", "href") == expected_url
    participant.refresh_from_db()
    assert (participant.status, participant.outcome_code) == ("completed", code)
    assert page.js_errors == []


def test_stopping_early_is_confirmed_on_a_page_of_its_own_without_javascript(live_server, browser, researcher):
    study = pool_study(researcher, "prolific", calibration=False)
    link = services.panel_link_save(study=study, actor=researcher, values={
        "preset": "prolific", "code_completed": "PROCODE", "code_screened_out": "OUT", "code_returned": "RETCODE"})
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        params = "&".join(f"{k}={v}" for k, v in POOLS["prolific"][0].items())
        page.goto(f"{live_server.url}{reverse('panel_enter', args=[link.slug])}?{params}")
        page.check("#agree")
        page.click("#consent-accept")
        page.goto(f"{live_server.url}{reverse('panel_done', args=[link.slug])}")
        page.click("#panel-return")  # one click only asks
        page.wait_for_selector("#panel-stop-consequence")
        assert "ends for good" in page.inner_text("#panel-stop-consequence")
        assert PanelParticipant.objects.get(study=study).status == "active"
        page.click("#panel-stop-confirm")
        page.wait_for_selector("#panel-code")
        assert page.inner_text("#panel-code") == "RETCODE"
        assert PanelParticipant.objects.get(study=study).status == "returned"
    finally:
        context.close()


def test_at_a_cap_reached_by_a_submit_there_is_one_way_to_the_code(live_server, page, researcher):
    study = pool_study(researcher, "prolific", calibration=False)
    services.welfare_save(study=study, actor=researcher, cap_per_session=2, break_every_items=0, break_every_minutes=0)
    link = services.panel_link_save(study=study, actor=researcher, values={
        "preset": "prolific", "code_completed": "PROCODE", "code_screened_out": "OUT", "code_returned": "RETCODE"})
    params = "&".join(f"{k}={v}" for k, v in POOLS["prolific"][0].items())
    page.goto(f"{live_server.url}{reverse('panel_enter', args=[link.slug])}?{params}")
    page.check("#agree")
    page.click("#consent-accept")
    page.wait_for_selector("html[data-rating-ready=true] #rating-form")
    assert page.is_visible("#panel-done-link") and page.is_visible("#panel-stop-link")
    for step in range(2):  # submitted in place (rate.js): the page around the item is not reloaded
        page.keyboard.press("7")
        page.keyboard.press("Tab")
        page.keyboard.press("6")
        page.keyboard.press("Enter")
        if step == 0:
            wait_until(page, "document.querySelector('#progress-text').innerText === '2 of 4'")
    page.wait_for_selector("#welfare-cap-finish")
    assert not page.is_visible("#panel-done-link") and not page.is_visible("#panel-stop-link")
    # The box says the part is complete: withdrawing is no longer offered beside it.
    assert page.is_hidden("form.withdraw")
    page.click("#welfare-cap-finish")
    page.wait_for_selector("#panel-code")
    assert page.inner_text("#panel-code") == "PROCODE" and "in one sitting" in page.inner_text("#panel-outcome")
    assert page.is_visible("#crisis-text")
    assert page.js_errors == []


def test_withdrawing_on_the_rate_page_gives_the_stopped_early_code(live_server, page, researcher):
    study = pool_study(researcher, "prolific", calibration=False)
    link = services.panel_link_save(study=study, actor=researcher, values={
        "preset": "prolific", "code_completed": "PROCODE", "code_screened_out": "OUT", "code_returned": "RETCODE"})
    params = "&".join(f"{k}={v}" for k, v in POOLS["prolific"][0].items())
    page.goto(f"{live_server.url}{reverse('panel_enter', args=[link.slug])}?{params}")
    page.check("#agree")
    page.click("#consent-accept")
    page.wait_for_selector("html[data-rating-ready=true] #rating-form")
    asked = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.click("text=Withdraw from the study")
    page.wait_for_selector("#panel-code")
    assert page.inner_text("#panel-code") == "RETCODE"
    assert "the code for stopping early, not the completion code" in asked[0]
    assert "kept but excluded from the analysis" in asked[0]
    assert PanelParticipant.objects.get(study=study).status == "returned"
    page.goto(f"{live_server.url}{reverse('panel_enter', args=[link.slug])}?{params}")
    assert page.inner_text("#panel-code") == "RETCODE"
