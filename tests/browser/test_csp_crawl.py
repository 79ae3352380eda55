"""Every page a researcher, an adjudicator and a rater reach, crawled in Chromium with the enforced
Content-Security-Policy: zero violations, zero script errors."""

from urllib.parse import urljoin, urlparse

import pytest

from evalapp.models import Study
from raters import services
from raters.models import CalibrationItem, Role

from ..factories import ArmFactory, MembershipFactory, PromptFactory, RatingFactory, ResponseFactory, StudyFactory, UserFactory
from .conftest import log_in, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Runs before any page script, outside the page's policy: it only listens.
LISTEN = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " at " + e.sourceFile + ":" + e.lineNumber);
});
"""
SKIP = ("/accounts/logout", "/admin/", "/export", ".csv", ".zip", ".png", ".svg", "download=", "/api/schema")


@pytest.fixture
def full_study(researcher):
    study = StudyFactory(owner=researcher, title="Crawled study", ratings_per_response=3)
    arms = [ArmFactory(study=study, label="fine-tuned"), ArmFactory(study=study, label="baseline")]
    raters = [MembershipFactory(study=study, role=Role.RATER).user for _ in range(3)]
    MembershipFactory(study=study, user=UserFactory(username="dr-crawl"), role=Role.ADJUDICATOR)
    for i, prompt in enumerate(PromptFactory.create_batch(3, study=study)):
        for arm in arms:
            response = ResponseFactory(prompt=prompt, arm=arm, text=f"Reply {i} from {arm.label}")
            for rater, empathy in zip(raters, [2, 5, 9] if i == 0 else [6, 7, 7], strict=True):
                RatingFactory(response=response, rater=rater, empathy=empathy, fluency=7, unsafe=empathy == 2,
                              unsafe_category="harmful_advice" if empathy == 2 else "")
    services.consent_publish(study=study, text="We study chatbot replies.", withdrawal_policy="exclude")
    CalibrationItem.objects.create(
        study=study, messages=[{"role": "user", "content": "I failed my exam."}], response_text="That is hard.",
        references={"empathy": 8, "fluency": 9}, rationale="Validates.", created_by=researcher, use_as_gold=False)
    Study.objects.filter(id=study.id).update(status=Study.Status.RATING)
    return study


def crawl(page, live_server, start: str, limit: int = 60) -> tuple[list[str], list[str]]:
    page.add_init_script(LISTEN)
    seen, queue, violations = set(), [start], []
    while queue and len(seen) < limit:
        url = queue.pop(0)
        if url in seen:
            continue
        seen.add(url)
        page.goto(url)
        page.wait_for_load_state("networkidle")
        violations += [f"{url}: {v}" for v in page.evaluate("window.__csp")]
        for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))"):
            target = urljoin(url, href).split("#")[0]
            if urlparse(target).netloc == urlparse(live_server.url).netloc and not any(s in target for s in SKIP):
                queue.append(target)
    return sorted(seen), violations


def test_the_listener_sees_a_violation(live_server, page, researcher):
    # Without this, zero violations below could mean the listener never ran.
    log_in(page, live_server, researcher.username)
    page.add_init_script(LISTEN)
    page.goto(f"{live_server.url}/studies/")
    page.evaluate("document.body.setAttribute('style', 'color: red')")
    wait_until(page, "window.__csp.length > 0")
    assert "style-src" in page.evaluate("window.__csp")[0]


@pytest.mark.parametrize("who", ["researcher", "adjudicator", "rater"])
def test_no_page_violates_the_policy(live_server, page, full_study, researcher, who):
    username = {"researcher": researcher.username, "adjudicator": "dr-crawl",
                "rater": full_study.memberships.filter(role=Role.RATER).first().user.username}[who]
    log_in(page, live_server, username)
    pages, violations = crawl(page, live_server, f"{live_server.url}/studies/")
    assert violations == [] and page.js_errors == [], (violations, page.js_errors)
    study_url = f"/studies/{full_study.id}/"
    assert any(p.endswith(study_url) for p in pages), pages
    if who == "researcher":
        assert any("/results/" in p for p in pages) and any("/adjudication/" in p for p in pages), pages
        assert len(pages) >= 8, pages
