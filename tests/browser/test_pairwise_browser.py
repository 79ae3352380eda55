"""A rater's pairwise session in a real browser: keyboard only (a, b, s, Enter), several pairs in a row
without a page reload, and the two responses side by side on a wide screen, stacked on a phone."""

import pytest
from django.urls import reverse

from evalapp.models import PairJudgment
from raters import services
from raters.models import PairAssignment, Role

from ..factories import ArmFactory, MembershipFactory, PromptFactory, ResponseFactory, StudyFactory, UserFactory
from .conftest import log_in, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# What each key means on screen: A is the left response, B the right one.
ON_SCREEN = {"a": "left", "b": "right", "s": "tie"}


@pytest.fixture
def pairwise_study(researcher):
    study = StudyFactory(owner=researcher, title="Pairwise browser study", ratings_per_response=1, gold_rate=0)
    arms = [ArmFactory(study=study, label="fine-tuned"), ArmFactory(study=study, label="baseline")]
    for prompt in PromptFactory.create_batch(4, study=study):
        for arm in arms:
            ResponseFactory(prompt=prompt, arm=arm, text=f"{arm.label} answers {prompt.external_id}. " * 8)
    version = services.consent_publish(study=study, text="We study chatbot replies.", withdrawal_policy="exclude")
    rater = MembershipFactory(study=study, user=UserFactory(username="pair-rater"), role=Role.RATER).user
    services.consent_accept(study=study, user=rater, version=version)
    services.study_open_for_rating(study=study)
    services.pair_phase_save(study=study, criteria=[{"key": "empathy", "question": "Which is more supportive?"},
                                                    {"key": "fluency", "question": "Which reads better?"}],
                             judgments_per_pair=1, gold_rate=0.0, reason="optional")
    services.pair_phase_open(study=study)
    return study, rater


def expected_verdict(key: str, first_on_left: bool) -> str:
    shown = ON_SCREEN[key]
    if shown == "tie":
        return "tie"
    return "first" if (shown == "left") == first_on_left else "second"


def test_a_rater_compares_pairs_with_the_keyboard_only(live_server, page, pairwise_study):
    study, rater = pairwise_study
    log_in(page, live_server, "pair-rater")
    page.goto(f"{live_server.url}{reverse('compare', args=[study.id])}")
    page.wait_for_selector("html[data-rating-ready=true] #rating-form")
    total = PairAssignment.objects.filter(rater=rater).count()
    assert total == 4 and page.inner_text("#progress-text") == f"1 of {total}"
    page.evaluate("window.__samePage = true")
    presses = [("a", "b"), ("b", "s"), ("s", "a")]
    shown = []
    for step, keys in enumerate(presses):
        action = page.get_attribute("#rating-form", "action")
        shown.append((action.rstrip("/").rsplit("/", 1)[1], keys))
        for key in keys:  # each answer moves on to the next question (data-advance)
            page.keyboard.press(key)
        assert page.is_checked(f'fieldset[data-scale="empathy"] input[data-key="{keys[0]}"]')
        assert page.is_checked(f'fieldset[data-scale="fluency"] input[data-key="{keys[1]}"]')
        page.keyboard.press("Enter")
        wait_until(page, f"document.querySelector('#progress-text').innerText === '{step + 2} of {total}'")
    assert page.evaluate("window.__samePage") is True, page.js_errors  # the fetch path: no full page reload
    assert page.js_errors == []

    for public_id, (empathy_key, fluency_key) in shown:
        slot = PairAssignment.objects.get(rater=rater, pair__public_id=public_id)
        judgment = PairJudgment.objects.get(rater=rater, pair=slot.pair)
        assert judgment.first_on_left == slot.first_on_left and slot.completed_at is not None
        assert dict(judgment.verdicts.values_list("key", "verdict")) == {
            "empathy": expected_verdict(empathy_key, slot.first_on_left),
            "fluency": expected_verdict(fluency_key, slot.first_on_left)}
    # The sides differ between pairs (balanced per rater), so the keys were not all read one way.
    assert {PairAssignment.objects.get(rater=rater, pair__public_id=p).first_on_left for p, _ in shown} == {True, False}


def boxes(page):
    a, b = page.locator("#response-a").bounding_box(), page.locator("#response-b").bounding_box()
    assert a and b and a["height"] > 0 and b["height"] > 0
    return a, b


def test_the_two_responses_stack_on_a_phone_and_sit_side_by_side_on_a_wide_screen(live_server, page,
                                                                                  pairwise_study):
    study, _ = pairwise_study
    log_in(page, live_server, "pair-rater")
    page.goto(f"{live_server.url}{reverse('compare', args=[study.id])}")
    page.wait_for_selector("#response-b")
    a, b = boxes(page)  # the page fixture is 390 px wide
    assert b["y"] >= a["y"] + a["height"] and abs(b["x"] - a["x"]) < 1, (a, b)
    page.set_viewport_size({"width": 1280, "height": 900})
    a, b = boxes(page)
    assert abs(b["y"] - a["y"]) < 1 and b["x"] >= a["x"] + a["width"], (a, b)
