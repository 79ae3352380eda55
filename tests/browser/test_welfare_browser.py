"""Rater welfare in a real browser: the notice before consent, the distress button by click and by key, the
break prompt, the cap, the crisis link; and the screenshot an ethics board asks for (docs/welfare.png)."""

import os
from pathlib import Path

import pytest
from django.urls import reverse

from evalapp.models import Rating
from raters import services
from raters.models import DistressReport, Role, WelfareBreak

from ..factories import ArmFactory, MembershipFactory, PromptFactory, ResponseFactory, StudyFactory, UserFactory
from .conftest import log_in, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "welfare.png"


@pytest.fixture
def welfare_study(researcher):
    study = StudyFactory(owner=researcher, title="Welfare study", ratings_per_response=1, gold_rate=0)
    arms = [ArmFactory(study=study, label="fine-tuned"), ArmFactory(study=study, label="baseline")]
    for prompt in PromptFactory.create_batch(4, study=study):
        for arm in arms:
            ResponseFactory(prompt=prompt, arm=arm, text="I'm sorry you are carrying this. Would it help to talk "
                                                         "about what happened?")
    services.consent_publish(study=study, text="We study chatbot replies.", withdrawal_policy="exclude")
    services.welfare_save(study=study, actor=researcher, break_every_items=3, break_every_minutes=0, cap_per_day=5,
                          crisis_links=[{"label": "Campus counselling", "url": "tel:+15550100"}])
    services.study_open_for_rating(study=study)
    return study


def progress(page):
    return page.inner_text("#progress-text")


def rate_by_keys(page):
    page.keyboard.press("7")
    page.keyboard.press("Tab")
    page.keyboard.press("0")
    page.keyboard.press("Enter")


def test_notice_distress_break_cap_and_crisis_link(live_server, page, welfare_study, tmp_path):
    study = welfare_study
    rater = MembershipFactory(study=study, user=UserFactory(username="wanda"), role=Role.RATER).user
    log_in(page, live_server, "wanda")
    page.goto(f"{live_server.url}{reverse('consent', args=[study.id])}")
    notice, consent = page.locator("#content-notice"), page.locator("#consent-text")
    assert "Self-harm and suicide" in notice.inner_text()
    assert notice.bounding_box()["y"] < consent.bounding_box()["y"]  # read before the consent text
    assert page.locator("#support-link").is_visible()
    page.check("#agree")
    page.click("#consent-accept")

    page.wait_for_selector("html[data-rating-ready=true] #rating-form")
    assert rater.welfare_notices_seen.filter(study=study).count() == 1
    assert progress(page) == "1 of 8" and page.locator("#support-link").is_visible()
    target = tmp_path / "welfare.png"
    if os.environ.get("UPDATE_SCREENSHOTS"):
        target = SCREENSHOT
        target.parent.mkdir(exist_ok=True)
    page.set_viewport_size({"width": 640, "height": 900})
    page.screenshot(path=str(target), full_page=True, type="png")
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size < 400_000
    page.set_viewport_size({"width": 390, "height": 844})

    page.click("#distress")  # by click
    wait_until(page, "document.querySelector('#progress-text').innerText === '2 of 8'")
    page.keyboard.press("!")  # by key
    wait_until(page, "document.querySelector('#progress-text').innerText === '3 of 8'")
    assert DistressReport.objects.filter(rater=rater).count() == 2 and not Rating.objects.filter(rater=rater).exists()

    rate_by_keys(page)  # the third item read: a break is due
    page.wait_for_selector("#welfare-break")
    assert page.locator("#rating-form").count() == 0
    assert page.get_attribute("#welfare-break #break-support-link", "href") == reverse("support", args=[study.id])
    page.click("#break-continue")
    page.wait_for_selector("html[data-rating-ready=true] #rating-form")
    assert WelfareBreak.objects.filter(rater=rater).count() == 1

    rate_by_keys(page)
    wait_until(page, "document.querySelector('#progress-text').innerText === '5 of 8'")
    rate_by_keys(page)  # the fifth item today: the cap
    page.wait_for_selector("#welfare-cap")
    assert "come back tomorrow" in page.inner_text("#welfare-cap") and page.locator("#rating-form").count() == 0
    assert Rating.objects.filter(rater=rater).count() == 3

    page.click("#support-link")
    page.wait_for_selector("#crisis-text")
    assert "local emergency services" in page.inner_text("#crisis-text")
    assert page.get_attribute("#crisis-links a", "href") == "tel:+15550100"
    assert page.js_errors == []


def test_the_researchers_welfare_page_prints_with_labels_above_and_no_address_broken(
        live_server, page, welfare_study, researcher):
    long_url = "https://example.org/support/for-raters/of-this-study/crisis-lines-and-counselling-services"
    services.welfare_save(study=welfare_study, actor=researcher,
                          crisis_links=[{"label": "Counselling", "url": long_url}])
    log_in(page, live_server, researcher.username)
    page.set_viewport_size({"width": 640, "height": 900})
    page.goto(f"{live_server.url}{reverse('welfare_page', args=[welfare_study.id])}")
    summary, form = page.locator("#welfare-measures"), page.locator("#welfare-form")
    assert summary.bounding_box()["y"] < form.bounding_box()["y"]
    for name in ("notice", "crisis_text", "crisis_links", "other_topics"):
        label, field = page.locator(f"label[for=id_{name}]").bounding_box(), page.locator(f"#id_{name}").bounding_box()
        assert label["y"] + label["height"] <= field["y"] + 1, name
    # One line per link in the field (scrolls sideways rather than breaking the address), and in the summary.
    links = page.locator("#id_crisis_links")
    assert links.evaluate("el => el.scrollWidth > el.clientWidth")
    card, address = summary.bounding_box(), page.locator("#measure-crisis a")
    box = address.bounding_box()
    assert box["x"] + box["width"] <= card["x"] + card["width"], "the address pushes the summary out of its card"
    page.emulate_media(media="print")
    assert not page.locator("#welfare-save").is_visible()
    assert page.js_errors == []
