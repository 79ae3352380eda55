"""A judge's answers stay apart from the human side: after a judge has answered every response and every pair,
and its comparison, triage and export have been computed, the human results, the counted ratings and
judgments, every rater's queue and k, the pairwise results and the raters' pages are exactly as before; no
page a rater can reach names a judge or shows what it answered; and no judge prompt contains an arm's label."""

import json
import re
from urllib.parse import urlparse

import pytest
from django.core.cache import cache
from django.urls import reverse

from evalapp import adjudication as adj
from evalapp.exports.tables import judge_answer_rows
from evalapp.judge_results import judge_results
from evalapp.models import Response, ResponsePair
from evalapp.pair_results import pairwise_results
from modelserver import judge_services
from modelserver.judge_services import current_templates, judge_questions
from modelserver.judging import CRITERION_TEMPLATE, PAIR_TEMPLATE, render_criterion, render_pair
from modelserver.models import SAFETY_KEY, Judge, JudgeAnswer, JudgeRun, RunStatus
from raters import services
from raters.counting import counted_pair_judgments, counted_ratings
from raters.models import Assignment, PairAssignment, Role
from raters.selectors import next_item
from raters.services import PairSubmission, Submission

from ..factories import ArmFactory, MembershipFactory, PromptFactory, ResponseFactory, UserFactory
from ..raters.test_blinding_crawl import Crawl, filled, item_on, open_study, secret  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db
PAIR_QUESTIONS = [{"key": "empathy", "question": "Which is more supportive?"},
                  {"key": "fluency", "question": "Which reads better?"}]
JUDGE_PICKER = re.compile(r'<form method="get" class="filters" id="judge-select">.*?</form>', re.DOTALL)
CSRF = re.compile(r'(name="csrfmiddlewaretoken" value=|csrftoken[=:] ?|"csrfToken": ?)"?[\w-]+')


def judge_everything(study, user, name=None, value=9.875, raw=None):
    """A judge whose answers cover every response (each criterion and the unsafe question) and every pair in
    both orders, with distinctive name, value and text."""
    judge = Judge.objects.create(study=study, name=name or secret("judgename"), kind="local", model="bundled",
                                 templates=current_templates(), created_by=user)
    raw = raw or secret("judgetext")
    rows = []
    items = JudgeRun.objects.create(study=study, judge=judge, created_by=user, status=RunStatus.SUCCEEDED)
    for response in Response.objects.filter(prompt__study=study):
        for q in judge_questions(judge, "items"):
            rows.append(JudgeAnswer(judge=judge, run=items, response=response, criterion=q["key"],
                                    method="local-probabilities", value=1.0 if q["key"] == SAFETY_KEY else value,
                                    raw_text=raw, top_tokens=[[raw, 0.5]], distribution=[0.5, 0.5],
                                    provenance={"judge_run": items.id, "seed": 0}))
    pairs = JudgeRun.objects.create(study=study, judge=judge, mode="pairs", created_by=user, status=RunStatus.SUCCEEDED)
    for pair in ResponsePair.objects.filter(study=study):
        for q in PAIR_QUESTIONS:
            for order in ("AB", "BA"):
                rows.append(JudgeAnswer(judge=judge, run=pairs, pair=pair, criterion=q["key"], order=order,
                                        method="local-probabilities", letter="A", raw_text=raw,
                                        preferred="first" if order == "AB" else "second",
                                        provenance={"judge_run": pairs.id, "seed": 0}))
    JudgeAnswer.objects.bulk_create(rows)
    return judge, raw


@pytest.fixture
def half_rated(study, researcher):
    """Two arms, six prompts, three raters with k = 2, halfway through both the 1-10 queue and the pairs."""
    arms = [ArmFactory(study=study, label=label) for label in ("fine-tuned", "baseline")]
    for prompt in PromptFactory.create_batch(6, study=study):
        for arm in arms:
            ResponseFactory(prompt=prompt, arm=arm, text=f"Reply from {arm.label} to {prompt.external_id}")
    study.gold_rate, study.ratings_per_response = 0, 2
    study.save()
    version = services.consent_publish(study=study, text="Your ratings are research data.", withdrawal_policy="exclude")
    raters = []
    for n in range(3):
        rater = MembershipFactory(study=study, user=UserFactory(username=f"kept-{n}"), role=Role.RATER).user
        services.consent_accept(study=study, user=rater, version=version)
        raters.append(rater)
    services.study_open_for_rating(study=study)
    services.pair_phase_save(study=study, criteria=PAIR_QUESTIONS, judgments_per_pair=2, gold_rate=0.0,
                             reason="optional")
    services.pair_phase_open(study=study)
    study.refresh_from_db()
    for n, rater in enumerate(raters):
        for step in range(4):
            slot = next_item(study=study, rater=rater).assignment
            services.rating_submit(study=study, rater=rater, item_public_id=slot.response.public_id,
                                   submission=Submission({"empathy": 2 + 3 * ((n + step) % 3), "fluency": 7}))
        for a in PairAssignment.objects.filter(study=study, rater=rater).order_by("position")[:3]:
            services.pair_judgment_submit(study=study, rater=rater, item_public_id=a.pair.public_id,
                                          submission=PairSubmission({"empathy": "a", "fluency": "same"}))
    return study, raters


def state(client, study, raters) -> dict:
    """Everything the human side computes or shows, computed afresh (the caches dropped first)."""
    cache.clear()  # this test's own Redis database: nothing computed before may answer for now
    services.design_rebalance(study=study)
    targets = services.design_targets(study)
    out = {
        "results": client.get(reverse("results_json", args=[study.id])).json(),
        # The pairwise page's numbers, with fewer resamples (its bootstraps are most of this test's time otherwise).
        "pairwise": pairwise_results(study, n_boot=50),
        # The page with the judge picker taken out (it offers the judges; the rest must not change).
        "results_page": JUDGE_PICKER.sub("", CSRF.sub("", client.get(reverse("results", args=[study.id])).content
                                                      .decode())),
        "counted": sorted(counted_ratings(study).values_list("id", "rater_id", "response_id", "updated_at")),
        "counted_pairs": sorted(counted_pair_judgments(study).values_list("id", "rater_id", "pair_id")),
        "k": {r: targets.of(r) for r in Response.objects.filter(prompt__study=study).values_list("id", flat=True)},
        "queues": sorted(Assignment.objects.filter(study=study).values_list("rater_id", "response_id", "position",
                                                                            "completed_at")),
        "pair_queues": sorted(PairAssignment.objects.filter(study=study).values_list(
            "rater_id", "pair_id", "position", "first_on_left", "completed_at")),
        "next": {r.id: next_item(study=study, rater=r).assignment.response_id for r in raters},
        "adjudication": [(i.response.id, i.scales) for i in adj.disagreement_queue(study=study)],
    }
    for rater in raters:
        client.force_login(rater)
        for url in (f"/studies/{study.id}/", f"/studies/{study.id}/rate/", f"/studies/{study.id}/compare/", "/",
                    "/studies/", f"/api/studies/{study.id}/rating/next/"):
            response = client.get(url)
            out[f"{rater.username} {url}"] = (response.status_code, CSRF.sub("", response.content.decode()))
    client.force_login(study.owner)
    return out


def test_a_judge_changes_nothing_on_the_human_side(client, half_rated, researcher):
    study, raters = half_rated
    client.force_login(researcher)
    before = state(client, study, raters)
    assert before["counted"] and before["counted_pairs"] and set(before["k"].values()) == {2}
    assert "<h2>" in before["results_page"] and before["results"]["agreement"]
    judge, raw = judge_everything(study, researcher)
    # The judge's own numbers computed and cached, its triage and its export read: none of it may leak across.
    assert judge_results(study, judge)["n_rows"] == 12 * 2
    assert len(adj.judge_triage(study=study, judge=judge)) > 0
    assert len(list(judge_answer_rows(study))) == JudgeAnswer.objects.filter(judge=judge).count()
    page = client.get(reverse("results", args=[study.id]), {"judge": judge.id}).content.decode()
    assert judge.name in page
    after = state(client, study, raters)
    assert after.keys() == before.keys()
    for key in before:
        assert after[key] == before[key], key
    for key, text in after.items():
        assert judge.name not in json.dumps(text, default=str) and raw not in json.dumps(text, default=str), key


def test_a_rater_crawling_everything_finds_no_judge(client, open_study):
    study, arms, rater, _ = open_study
    judge, raw = judge_everything(study, study.owner, value=9.8125)
    terms = {judge.name.lower(), raw.lower()}
    value = re.compile(r"(?<![\d.])9[.,]81(?:25?)?(?!\d)")  # the value, however a page would round it
    client.force_login(rater)
    crawl = Crawl(client, study)
    crawl.queue += ["/", "/studies/", f"/studies/{study.id}/", f"/studies/{study.id}/rate/",
                    f"/studies/{study.id}/consent/", f"/studies/{study.id}/calibration/",
                    f"/api/studies/{study.id}/", f"/api/studies/{study.id}/rating/next/"]
    crawl.run()
    rate = f"/studies/{study.id}/rate/"
    for step in range(Assignment.objects.filter(rater=rater).count()):
        crawl.visit("get", rate, fresh=True)
        public_id = item_on(crawl.last(f"GET {rate} "))
        assert public_id, f"no rating form at step {step}"
        action = f"{rate}{public_id}/"
        form = next(f for k, f in crawl.forms.items() if urlparse(k).path == action)
        crawl.visit("post", action, filled(form, step), headers={"X-Requested-With": "fetch"} if step % 2 else {})
        crawl.run()
    crawl.visit("get", rate, fresh=True)
    assert "All done" in crawl.last(f"GET {rate} ")
    # The judge's views are a researcher's and an adjudicator's: a rater asking for them gets nothing.
    for url in (f"/studies/{study.id}/results/?judge={judge.id}", f"/studies/{study.id}/results.json?judge={judge.id}",
                f"/studies/{study.id}/adjudication/?triage={judge.id}",
                f"/api/studies/{study.id}/results/?judge={judge.id}",
                f"/studies/{study.id}/export/judge_answers.csv", f"/api/studies/{study.id}/exports/judge_answers.csv"):
        assert crawl.visit("get", url).status_code == 404, url
    assert len(crawl.bodies) > 20
    for where, text in crawl.bodies:
        lowered = CSRF.sub("", text).lower()
        for term in terms:
            assert term not in lowered, f"{term!r} in {where}"
        assert not value.search(lowered), (where, value.search(lowered))


def test_no_judge_prompt_contains_an_arm_label(open_study, monkeypatch):
    """Every prompt a judge of the study would be sent, built by the service's own path and rendered."""
    study, arms, _, terms = open_study
    services.pair_phase_save(study=study, criteria=PAIR_QUESTIONS, judgments_per_pair=1, gold_rate=0.0,
                             reason="optional")
    services.pair_phase_open(study=study)
    judge = Judge.objects.create(study=study, name="prompt check", kind="local", model="bundled",
                                 templates=current_templates(), created_by=study.owner)
    seen = {"items": [], "pairs": []}

    def items(model, batch, questions, **kwargs):
        seen["items"] += [(item, questions) for item in batch]
        return []

    def pairs(model, batch, questions, **kwargs):
        seen["pairs"] += [(pair, questions) for pair in batch]
        return []

    import modelserver.judging as judging

    monkeypatch.setattr(judging, "judge_items", items)
    monkeypatch.setattr(judging, "judge_pairs", pairs)
    responses = list(Response.objects.filter(prompt__study=study).select_related("prompt"))
    found = list(ResponsePair.objects.filter(study=study).select_related("prompt", "first", "second"))
    assert len(responses) == 12 and len(found) == 4 * 3  # three arms: three pairs a prompt
    for mode, rows in (("items", responses), ("pairs", found)):
        judge_services._judge_texts(judge, mode, [(row, 0) for row in rows], judge_questions(judge, mode),
                                    progress=lambda done, total: None)
    assert len(seen["items"]) == 12 and len(seen["pairs"]) == 12
    rendered = []
    for item, questions in seen["items"]:
        assert [q["key"] for q in questions] == ["empathy", "fluency", SAFETY_KEY]
        rendered += [render_criterion(CRITERION_TEMPLATE, q, item.messages, item.response) for q in questions]
    for pair, questions in seen["pairs"]:
        for q in questions:
            rendered += [render_pair(PAIR_TEMPLATE, q["question"], pair.messages, a, b)
                         for a, b in ((pair.first, pair.second), (pair.second, pair.first))]
    assert len(rendered) == 12 * 3 + 12 * 2 * 2
    labels = {arm.label.lower() for arm in arms}
    assert labels <= terms
    for messages in rendered:
        text = json.dumps(messages).lower()
        for term in terms:
            assert term not in text, term
