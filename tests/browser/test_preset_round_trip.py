"""Each protocol preset end to end: created on the New study page, rated in the browser with the
keyboard, read on the results page, exported, and re-analysed by `analyze_ratings` to the same numbers."""

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse

from evalapp.models import Score, Study
from evalapp.results import study_results
from evalapp.rubric_presets import PRESETS
from raters import services
from raters.models import Role

from ..factories import ArmFactory, MembershipFactory, PromptFactory, ResponseFactory, UserFactory
from .conftest import log_in, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _answer_everything(page, rater_index: int, item_index: int) -> dict:
    """Answer each question of the item on screen by its key; returns {criterion: key pressed}."""
    pressed = {}
    fieldsets = page.eval_on_selector_all("fieldset.criterion", "els => els.map(e => e.dataset.scale)")
    for position, key in enumerate(fieldsets):
        keys = page.eval_on_selector_all(f"fieldset[data-scale={key}] input[type=radio]",
                                         "els => els.map(e => e.dataset.key)")
        usable = [k for k in keys if k]
        choice = usable[(rater_index + item_index + position) % len(usable)]
        if rater_index == 1 and item_index == 0 and "n" in usable:
            choice = "n"  # one "not sure" answer per study that offers it
        page.click(f"fieldset[data-scale={key}] legend")  # makes it the active question
        page.keyboard.press(choice)
        assert page.is_checked(f"fieldset[data-scale={key}] input[data-key='{choice}']")
        if page.query_selector(f"textarea[name=rationale-{key}]"):
            page.fill(f"textarea[name=rationale-{key}]", f"reason {key}")
        pressed[key] = choice
    page.click("fieldset.criterion legend")
    return pressed


@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_round_trip(live_server, page, researcher, preset, tmp_path):
    services.researcher_add(user=researcher)
    log_in(page, live_server, researcher.username)
    page.goto(f"{live_server.url}{reverse('study_new')}")
    page.fill("#id_title", f"Replication with {preset}")
    page.select_option("#id_preset", preset)
    page.fill("#id_ratings_per_response", "2")
    page.click("#create-study")
    page.wait_for_selector("#rubric")
    study = Study.objects.get(title=f"Replication with {preset}")
    assert [c["key"] for c in study.rubric()] == [c["key"] for c in PRESETS[preset]["criteria"]]
    assert PRESETS[preset]["criteria"][0]["question"] in page.inner_text("#rubric")

    arms = [ArmFactory(study=study, label="fine-tuned"), ArmFactory(study=study, label="baseline")]
    for prompt in PromptFactory.create_batch(3, study=study):
        for arm in arms:
            ResponseFactory(prompt=prompt, arm=arm, text=f"Reply to {prompt.external_id} by {arm.label}")
    services.consent_publish(study=study, text="We study chatbot replies.", withdrawal_policy="exclude")
    raters = [MembershipFactory(study=study, user=UserFactory(username=f"{preset}-r{i}"), role=Role.RATER).user
              for i in range(2)]
    for rater in raters:
        services.consent_accept(study=study, user=rater, version=study.consent_versions.first())
        services.calibration_decide(study=study, rater=rater, approve=True)
    services.study_open_for_rating(study=study)

    for i, rater in enumerate(raters):
        page.context.clear_cookies()
        log_in(page, live_server, rater.username)
        page.goto(f"{live_server.url}{reverse('rate', args=[study.id])}")
        for item in range(6):
            page.wait_for_selector("html[data-rating-ready=true] #rating-form")
            wait_until(page, f"document.querySelector('#progress-text').innerText === '{item + 1} of 6'")
            page.keyboard.press("?")
            assert page.is_visible("fieldset.criterion .hint")  # ? shows each question's keys
            # The phone layout holds (390 px wide, up to seven criteria): nothing wider than the screen.
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), preset
            _answer_everything(page, i, item)
            page.keyboard.press("Enter")
            # The next item, or the end (whose progress reads "6 of 6" too), or an error shown.
            wait_until(page, f"document.querySelector('#progress-text').innerText !== '{item + 1} of 6' || "
                       "document.querySelector('#all-done') || "
                       "(document.querySelector('#rate-error') || {}).textContent")
            error = page.query_selector("#rate-error")
            assert not (error and error.inner_text()), error.inner_text()
        page.wait_for_selector("#all-done")
    assert Score.objects.filter(rating__response__prompt__study=study).count() == 12 * len(PRESETS[preset]["criteria"])
    assert page.js_errors == []

    page.context.clear_cookies()
    log_in(page, live_server, researcher.username)
    page.goto(f"{live_server.url}{reverse('results', args=[study.id])}")
    for criterion in PRESETS[preset]["criteria"]:
        assert page.is_visible(f"#result-{criterion['key']}")
    export = page.request.get(f"{live_server.url}{reverse('export_csv', args=[study.id, 'ratings'])}")
    path = Path(tmp_path) / "ratings.csv"
    path.write_bytes(export.body())
    out = io.StringIO()
    call_command("analyze_ratings", str(path), "--json", "--n-boot", "50", "--no-mixed", stdout=out)
    again = json.loads(out.getvalue())["scales"]
    shown = study_results(study)["agreement"]["scales"]
    for criterion in PRESETS[preset]["criteria"]:
        key = criterion["key"]
        mine, theirs = again[key], shown[key]
        assert mine["level"] == theirs["level"] == criterion["level"]
        assert (mine["n_ratings"], mine["n_not_sure"]) == (theirs["n_ratings"], theirs["n_not_sure"])
        headline = theirs["alpha_headline"]
        assert mine[headline]["value"] == pytest.approx(theirs[headline]["value"], nan_ok=True) \
            if theirs[headline]["value"] is not None else mine[headline]["value"] is None
        if criterion["level"] == "nominal":
            assert mine["comparison"]["options"].keys() == theirs["comparison"]["options"].keys()
            for option, block in theirs["comparison"]["options"].items():
                assert mine["comparison"]["options"][option]["mean_diff"] == pytest.approx(block["mean_diff"])
        else:
            assert mine["comparison"]["mean_diff"] == pytest.approx(theirs["comparison"]["mean_diff"])
    if any(c["not_sure"] for c in PRESETS[preset]["criteria"]):
        assert sum(shown[c["key"]]["n_not_sure"] for c in PRESETS[preset]["criteria"]) > 0


def test_a_key_answers_the_question_that_has_focus(live_server, page, researcher):
    """Tab out of a rationale box moves focus to the next question: the next digit answers that one."""
    from evalapp.services import study_create

    study = study_create(owner=researcher, title="Focus", preset="epitome", ratings_per_response=1)
    ResponseFactory(prompt=PromptFactory(study=study), arm=ArmFactory(study=study, label="a"))
    services.consent_publish(study=study, text="We study chatbot replies.", withdrawal_policy="exclude")
    rater = MembershipFactory(study=study, user=UserFactory(username="focus-rater"), role=Role.RATER).user
    services.consent_accept(study=study, user=rater, version=study.consent_versions.first())
    services.calibration_decide(study=study, rater=rater, approve=True)
    services.study_open_for_rating(study=study)
    log_in(page, live_server, "focus-rater")
    page.goto(f"{live_server.url}{reverse('rate', args=[study.id])}")
    page.wait_for_selector("html[data-rating-ready=true] #rating-form")
    page.keyboard.press("1")
    page.click("textarea[name=rationale-emotional_reactions]")
    page.keyboard.type("warm")
    page.keyboard.press("Tab")
    page.keyboard.press("2")
    checked = page.eval_on_selector_all("input[type=radio]:checked", "els => els.map(e => e.name + '=' + e.value)")
    assert checked == ["score-emotional_reactions=1", "score-interpretations=2"]
