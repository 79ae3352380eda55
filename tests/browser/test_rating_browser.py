"""A rater's whole path in a real browser, and what outsiders get."""

import pytest
from django.urls import reverse

from evalapp.models import Rating
from raters import services
from raters.models import Assignment, CalibrationItem, Role

from ..factories import (
    ArmFactory,
    MembershipFactory,
    PromptFactory,
    ResponseFactory,
    StudyFactory,
    UserFactory,
    score_of,
)
from .conftest import log_in, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def open_study(researcher):
    study = StudyFactory(owner=researcher, title="Browser study", ratings_per_response=1, gold_rate=0)
    arms = [ArmFactory(study=study, label="fine-tuned"), ArmFactory(study=study, label="baseline")]
    for prompt in PromptFactory.create_batch(4, study=study):
        for arm in arms:
            ResponseFactory(prompt=prompt, arm=arm, text=f"Answer to {prompt.external_id}")
    services.consent_publish(study=study, text="We study chatbot replies.", withdrawal_policy="exclude")
    CalibrationItem.objects.create(
        study=study, messages=[{"role": "user", "content": "I failed my exam."}],
        response_text="That must be disappointing. Want to talk about it?",
        references={"empathy": 8, "fluency": 9}, rationale="Validates, then invites reflection.",
        created_by=researcher, use_as_gold=False,
    )
    services.study_open_for_rating(study=study)
    return study


def progress(page):
    return page.inner_text("#progress-text")


def test_invited_rater_consents_calibrates_and_rates_with_the_keyboard(live_server, page, open_study, researcher):
    _, token = services.invitation_create(study=open_study, created_by=researcher, role=Role.RATER)
    page.goto(f"{live_server.url}{reverse('invitation_accept', args=[token])}")
    page.fill("#id_username", "student-a")
    page.fill("#id_password1", "a-long-pass-phrase-9")
    page.fill("#id_password2", "a-long-pass-phrase-9")
    page.click("#accept")

    page.wait_for_selector("#consent-text")
    page.check("#agree")
    page.click("#consent-accept")

    page.wait_for_selector("html[data-rating-ready=true] #rating-form")
    page.keyboard.press("8")
    page.keyboard.press("Tab")
    page.keyboard.press("9")
    page.keyboard.press("Enter")
    page.wait_for_selector("#calibration-feedback")
    assert "Validates, then invites reflection." in page.inner_text("#calibration-feedback")
    page.click("#calibration-next")
    page.wait_for_selector("#calibration-result")
    page.click("text=Start rating")

    page.wait_for_selector("html[data-rating-ready=true] #rating-form")
    total = Assignment.objects.filter(rater__username="student-a").count()
    assert total == 8 and progress(page) == f"1 of {total}"
    page.evaluate("window.__samePage = true")
    for expected in range(2, 4):
        page.keyboard.press("7")
        page.keyboard.press("Tab")
        page.keyboard.press("0")
        page.keyboard.press("Enter")
        wait_until(page, f"document.querySelector('#progress-text').innerText === '{expected} of {total}'")
    assert page.evaluate("window.__samePage") is True, page.js_errors  # no full page reload between items
    ratings = Rating.objects.filter(rater__username="student-a")
    assert ratings.count() == 2 and {(score_of(r, "empathy"), score_of(r, "fluency")) for r in ratings} == {(7, 10)}
    assert all(r.seconds_on_item is not None for r in ratings)

    page.reload()  # resumes where they were
    assert progress(page) == f"3 of {total}"
    assert page.js_errors == []


def test_double_submit_makes_one_rating(live_server, page, open_study):
    rater = MembershipFactory(study=open_study, user=UserFactory(username="rater-b"), role=Role.RATER).user
    services.consent_accept(study=open_study, user=rater, version=open_study.consent_versions.first())
    services.calibration_decide(study=open_study, rater=rater, approve=True)
    log_in(page, live_server, "rater-b")
    page.goto(f"{live_server.url}{reverse('rate', args=[open_study.id])}")
    page.wait_for_selector("html[data-rating-ready=true] #rating-form")
    page.click("fieldset[data-scale=empathy] label:nth-child(6)")
    page.click("fieldset[data-scale=fluency] label:nth-child(7)")
    page.dblclick("#submit")
    wait_until(page, "document.querySelector('#progress-text').innerText.startsWith('2 of')")
    # A browser retry of the same request (the form posted again without JavaScript).
    first = Rating.objects.get(rater=rater)
    page.evaluate(
        """([url, token]) => fetch(url, {method: 'POST', body: new URLSearchParams({'score-empathy': '6', 'score-fluency': '7',
            csrfmiddlewaretoken: token}), headers: {'X-Requested-With': 'fetch'}})""",
        [reverse("rate_submit", args=[open_study.id, first.response.public_id]),
         page.eval_on_selector("input[name=csrfmiddlewaretoken]", "e => e.value")],
    )
    assert Rating.objects.filter(rater=rater).count() == 1
    assert (score_of(first, "empathy"), score_of(first, "fluency")) == (6, 7)


def test_outsider_and_rater_of_another_study_get_404(live_server, page, open_study):
    other = StudyFactory(title="Other study")
    MembershipFactory(study=other, user=UserFactory(username="other-rater"), role=Role.RATER)
    UserFactory(username="nobody")
    for username in ["nobody", "other-rater"]:
        page.context.clear_cookies()
        log_in(page, live_server, username)
        for name in ["study_detail", "rate", "consent", "calibration", "raters_page"]:
            response = page.goto(f"{live_server.url}{reverse(name, args=[open_study.id])}")
            assert response.status == 404, (username, name)
