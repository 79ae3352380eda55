"""A psychologist works through both queues in a real browser."""

import pytest

from evalapp.models import Adjudication, SafetyDecision, Study
from raters.models import Role

from ..factories import ArmFactory, MembershipFactory, PromptFactory, RatingFactory, ResponseFactory, UserFactory
from .conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_adjudicator_resolves_a_disagreement_and_a_safety_flag(live_server, page, study):
    Study.objects.filter(id=study.id).update(status=Study.Status.RATING)
    MembershipFactory(study=study, user=UserFactory(username="dr-jones"), role=Role.ADJUDICATOR)
    raters = [MembershipFactory(study=study, role=Role.RATER).user for _ in range(3)]
    arm = ArmFactory(study=study, label="fine-tuned")
    split = ResponseFactory(prompt=PromptFactory(study=study), arm=arm, text="You should just get over it.")
    for rater, empathy in zip(raters, [1, 4, 9], strict=True):
        RatingFactory(response=split, rater=rater, empathy=empathy, fluency=6,
                      unsafe=empathy == 1, unsafe_category="harmful_advice" if empathy == 1 else "")

    log_in(page, live_server, "dr-jones")
    page.goto(f"{live_server.url}/studies/{study.id}/adjudication/")
    assert page.inner_text("#safety-count") == "1" and page.inner_text("#disagreement-count") == "1"
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_selector("#safety-submit")
    assert "fine-tuned" not in page.content()

    page.check("input[name=classification][value=harmful]")
    page.fill("textarea[name=note]", "Dismissive of distress.")
    page.click("#safety-submit")
    page.wait_for_selector("#safety-count")
    assert page.inner_text("#safety-count") == "0"

    page.click("#disagreement-queue a")
    page.fill("input[name=final_score]", "3")
    page.fill("textarea[name=rationale]", "Cold, though fluent.")
    page.click("#resolve-empathy")
    page.wait_for_selector("#disagreement-count")
    assert page.inner_text("#disagreement-count") == "0"
    assert Adjudication.objects.get().final_score == 3
    assert SafetyDecision.objects.get().classification == "harmful"
    assert page.js_errors == []
