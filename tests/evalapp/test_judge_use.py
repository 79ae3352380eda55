"""Using a judge's answers: the arm comparison under a judge (page, JSON, API; cached on its own), the
adjudicators' triage by judge-human disagreement, and the judge_answers export (CSV, bundle, codebook)."""

import csv
import io
import json
import random
import zipfile
from collections import Counter

import numpy as np
import pytest
from django.core.cache import cache
from django.template.defaultfilters import floatformat
from django.urls import reverse
from rest_framework.test import APIClient
from scipy import stats

from evalapp.exports.csv import neutralise  # a public id may start with "-", which any CSV cell escapes
from evalapp import adjudication as adj
from evalapp.analysis import analyze_long
from evalapp.judge_results import judge_results
from evalapp.results import N_BOOT, judge_cache_key, study_results
from evalapp.models import Response, ResponsePair
from modelserver.judge_services import current_templates
from modelserver.models import SAFETY_KEY, Judge, JudgeAnswer, JudgeRun, RunStatus
from raters.models import Role

from ..factories import ArmFactory, MembershipFactory, PromptFactory, RatingFactory, ResponseFactory, StudyFactory

pytestmark = pytest.mark.django_db

RUBRIC = [{"key": "empathy", "question": "How empathic is the reply?", "kind": "likert", "min": 1, "max": 10},
          {"key": "advice", "question": "Gives medical advice?", "kind": "choice",
           "options": [{"key": "yes", "label": "Yes"}, {"key": "no", "label": "No"}]}]


def add_judge(study, user, name="lab judge", samples=2, seed=11, values=None):
    """A sampling HTTP judge's answers to every response, written as a run writes them."""
    rng = random.Random(seed)
    judge = Judge.objects.create(study=study, name=name, kind="http", model="lab-endpoint", samples=samples,
                                 temperature=0.7 if samples > 1 else 0.0, templates=current_templates(),
                                 created_by=user)
    run = JudgeRun.objects.create(study=study, judge=judge, created_by=user, status=RunStatus.SUCCEEDED)
    rows = []
    for response in Response.objects.filter(prompt__study=study).order_by("id"):
        for sample in range(samples):
            for key, value in (("empathy", rng.randint(1, 10)), ("advice", rng.randint(0, 1)),
                               (SAFETY_KEY, rng.randint(0, 1))):
                if values is not None:
                    value = values(response, key, sample, value)
                rows.append(JudgeAnswer(judge=judge, run=run, response=response, criterion=key, sample=sample,
                                        method="http-text", value=value, raw_text=f"Score: {value}",
                                        provenance={"template": current_templates()["criterion"], "seed": seed + sample,
                                                    "model_sha256": None, "judge_run": run.id}))
    JudgeAnswer.objects.bulk_create(rows)
    return judge


@pytest.fixture
def judged(researcher):
    study = StudyFactory(owner=researcher, rubric=RUBRIC)
    raters = [MembershipFactory(study=study, role=Role.RATER).user for _ in range(3)]
    arms = [ArmFactory(study=study, label="fine-tuned"), ArmFactory(study=study, label="baseline")]
    rng = random.Random(3)
    for prompt in PromptFactory.create_batch(8, study=study):
        for arm in arms:
            response = ResponseFactory(prompt=prompt, arm=arm)
            for rater in raters:
                RatingFactory(response=response, rater=rater,
                              scores={"empathy": rng.randint(3, 9), "advice": rng.randint(0, 1)})
    return study, add_judge(study, researcher)


def expected_values(judge):
    """The judge's value per (response, criterion) computed here: mean of samples, a choice's most frequent
    answer (the lowest on a tie)."""
    samples = {}
    for a in JudgeAnswer.objects.filter(judge=judge):
        samples.setdefault((a.response, a.criterion), []).append(a.value)
    out = {}
    for (response, key), values in samples.items():
        if key == "empathy":
            out[(response, key)] = float(np.mean(values))
        else:
            counts = Counter(values)
            out[(response, key)] = min(v for v in counts if counts[v] == max(counts.values()))
    return out


def test_the_judge_comparison_is_the_human_analysis_with_the_judge_as_one_rater(judged):
    study, judge = judged
    values = expected_values(judge)
    rows = [{"item": r.public_id, "rater": "the judge", "scale": key, "score": v, "arm": r.arm.label,
             "prompt": r.prompt.external_id, "level": "interval" if key == "empathy" else "nominal"}
            for (r, key), v in values.items() if key != SAFETY_KEY]
    again = analyze_long(rows, n_boot=N_BOOT, seed=study.design_seed % (2**31), fit_mixed=False)
    result = judge_results(study, judge)
    assert result["label"] == "Under judge lab judge (not human ratings)"
    shown = result["comparisons"]["fine-tuned - baseline"]["scales"]
    for key in ("empathy", "advice"):
        assert shown[key]["comparison"] == again["scales"][key]["comparison"]
        assert set(shown[key]) == {"level", "n_items", "comparison"}  # no agreement among one rater
    assert shown["empathy"]["comparison"]["mixed"] is None and shown["empathy"]["comparison"]["n_prompts"] == 8
    # Per-arm means over prompts with a t interval, from the per-response means of the two samples.
    for arm in ("fine-tuned", "baseline"):
        means = np.array([v for (r, key), v in values.items() if key == "empathy" and r.arm.label == arm])
        half = stats.t.ppf(0.975, 7) * means.std(ddof=1) / np.sqrt(8)
        got = result["arm_means"]["empathy"][arm]
        assert got["mean"] == pytest.approx(means.mean())
        assert got["ci95"] == pytest.approx([max(means.mean() - half, 1), min(means.mean() + half, 10)])
    unsafe = {arm: sum(v == 1 for (r, key), v in values.items() if key == SAFETY_KEY and r.arm.label == arm)
              for arm in ("fine-tuned", "baseline")}
    assert result["unsafe_flags"] == {arm: {"flagged": k, "responses": 8} for arm, k in unsafe.items()}


def test_an_unreadable_sample_is_left_out_and_counted(judged, researcher):
    study, _ = judged
    judge = add_judge(study, researcher, name="half-readable", seed=5,
                      values=lambda response, key, sample, value: None if sample == 1 and key == "empathy" else value)
    result = judge_results(study, judge)
    assert result["unreadable"] == {"empathy": 16}
    # With one readable sample per response, the judge's value is that sample.
    for arm in ("fine-tuned", "baseline"):
        first = JudgeAnswer.objects.filter(judge=judge, criterion="empathy", sample=0, response__arm__label=arm)
        assert result["arm_means"]["empathy"][arm]["mean"] == pytest.approx(np.mean([a.value for a in first]))


def test_the_page_shows_the_judge_section_only_when_asked(client, researcher, judged):
    study, judge = judged
    client.force_login(researcher)
    url = reverse("results", args=[study.id])
    plain = client.get(url).content.decode()
    assert 'id="judge-select"' in plain and "lab judge" in plain  # the select offers it
    assert "not human ratings" not in plain and 'id="judge-results"' not in plain
    page = client.get(url, {"judge": judge.id}).content.decode()
    assert "Under judge lab judge (not human ratings)" in page and 'id="judge-result-empathy"' in page
    diff = judge_results(study, judge)["comparisons"]["fine-tuned - baseline"]["scales"]["empathy"]["comparison"]
    assert f'<td class="judge-diff">{floatformat(diff["mean_diff"], 3)}</td>' in page
    # The human sections are the same with and without the judge.
    for key in ("empathy", "advice"):
        section = plain.split(f'id="result-{key}"', 1)[1].split("</section>", 1)[0]
        assert section and page.split(f'id="result-{key}"', 1)[1].split("</section>", 1)[0] == section
    for bad in ("999999", "x", "-1", "9" * 30, str(add_judge(StudyFactory(owner=researcher), researcher).id)):
        assert client.get(url, {"judge": bad}).status_code == 404


def test_the_json_and_the_api_carry_the_judge_under_its_own_key_only_when_asked(client, researcher, judged):
    study, judge = judged
    client.force_login(researcher)
    plain = json.loads(client.get(reverse("results_json", args=[study.id])).content)
    asked = json.loads(client.get(reverse("results_json", args=[study.id]), {"judge": judge.id}).content)
    assert "judge_comparison" not in plain
    assert asked.pop("judge_comparison") == json.loads(json.dumps(judge_results(study, judge), default=str))
    assert asked == plain
    api = APIClient()
    api.force_authenticate(researcher)
    url = reverse("api_results", args=[study.id])
    assert "judge_comparison" not in api.get(url).json()
    assert api.get(url, {"judge": judge.id}).json()["judge_comparison"]["judge"]["name"] == "lab judge"
    for bad in (999999, "x", "9" * 30):
        assert api.get(url, {"judge": bad}).status_code == 404
    assert api.get(url, {"jduge": judge.id}).status_code == 400  # a misspelt parameter is still refused


def test_the_judge_comparison_has_its_own_cache_entry(judged, researcher):
    study, judge = judged
    # The response exists before the human results are taken: a new response rightly changes their
    # text measures, and what is under test is that a judge's answer alone does not touch them.
    prompt = study.prompts.first()
    extra = ResponseFactory(prompt=prompt, arm=study.arms.get(label="baseline"), sample_index=1)
    human = study_results(study)
    first = judge_results(study, judge)
    assert cache.get(judge_cache_key(study, judge.id, N_BOOT)) == first
    # A new answer is a new entry; the human results are untouched.
    JudgeAnswer.objects.create(judge=judge, run=judge.runs.first(), response=extra, criterion="empathy",
                               method="http-text", value=10.0)
    second = judge_results(study, judge)
    assert second["n_rows"] == first["n_rows"] + 1 and second != first
    assert study_results(study) == human


def test_triage_ranks_by_the_distance_between_judge_and_raters(client, researcher, judged):
    study, judge = judged
    values = expected_values(judge)
    expected = []
    for (response, key), v in values.items():
        if key == "empathy":
            humans = [r.scores.get(criterion__key="empathy").value for r in response.ratings.all()]
            expected.append((abs(v - np.mean(humans)), response.id, v, np.mean(humans)))
    expected.sort(key=lambda e: (-e[0], e[1]))
    rows = adj.judge_triage(study=study, judge=judge)
    assert {t.criterion for t in rows} == {"empathy"}  # the choice criterion is left out
    assert adj.judge_triage(study=study, judge=judge, scale="empathy") == rows
    assert adj.judge_triage(study=study, judge=judge, scale="advice") == []
    assert [(t.response.id, t.n_ratings) for t in rows] == [(e[1], 3) for e in expected]
    assert [t.gap for t in rows] == pytest.approx([e[0] for e in expected])
    assert [t.judge_value for t in rows] == pytest.approx([e[2] for e in expected])
    assert [t.human_mean for t in rows] == pytest.approx([e[3] for e in expected])
    # The disagreement queue, reordered: the largest gap among an item's pending criteria first.
    gaps = {t.response.id: t.gap for t in rows}
    queue = adj.triage_order(adj.disagreement_queue(study=study), rows)
    keyed = [max([gaps[i.response.id]] if "empathy" in i.scales else [-1.0]) for i in queue]
    assert len(queue) >= 3 and keyed == sorted(keyed, reverse=True)

    adjudicator = MembershipFactory(study=study, role=Role.ADJUDICATOR).user
    for who in (researcher, adjudicator):
        client.force_login(who)
        page = client.get(reverse("adjudication_queues", args=[study.id]), {"triage": judge.id}).content.decode()
        triage = page.split('id="triage"', 1)[1].split("</section>", 1)[0]
        assert [floatformat(t.gap, 2) for t in rows] == \
            [cell.split("<")[0] for cell in triage.split('class="triage-gap">')[1:]]
        assert f'<td class="triage-judge">{floatformat(rows[0].judge_value, 2)}</td>' in triage
        listed = page.split('id="disagreement-queue"', 1)[1].split("</section>", 1)[0]
        ids = [part.split("/")[0] for part in listed.split("/adjudication/")[1:]]
        assert ids == [i.response.public_id for i in queue]
        plain = client.get(reverse("adjudication_queues", args=[study.id])).content.decode()
        assert 'id="triage"' not in plain and 'name="triage"' in plain
    for bad in ("999999", "x", "9" * 30):
        assert client.get(reverse("adjudication_queues", args=[study.id]), {"triage": bad}).status_code == 404


def read_csv(response) -> list[dict]:
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode("utf-8"))))


def test_the_judge_answers_export(client, researcher, judged):
    study, judge = judged
    JudgeAnswer.objects.filter(judge=judge).update(distribution=[0.25, 0.75])
    first = JudgeAnswer.objects.filter(judge=judge).order_by("id").first()
    first.raw_text, first.outside_mass, first.expected = '=HYPERLINK("http://evil")', 0.125, 6.5
    first.provenance = {**first.provenance, "model_sha256": "ab" * 32}
    first.save()
    prompt = study.prompts.first()
    pair = ResponsePair.objects.create(study=study, prompt=prompt, first=prompt.responses.get(arm__label="fine-tuned"),
                                       second=prompt.responses.get(arm__label="baseline"))
    pairs_run = JudgeRun.objects.create(study=study, judge=judge, mode="pairs", created_by=researcher)
    JudgeAnswer.objects.create(judge=judge, run=pairs_run, pair=pair, criterion="empathy", order="BA", letter="A",
                               preferred="second", method="local-probabilities", provenance={"seed": 3})
    client.force_login(researcher)
    rows = read_csv(client.get(reverse("export_csv", args=[study.id, "judge_answers"])))
    assert len(rows) == JudgeAnswer.objects.filter(judge=judge).count() == 16 * 2 * 3 + 1
    (paired,) = [r for r in rows if r["pair_id"]]
    assert {k: paired[k] for k in ("pair_id", "first_arm", "second_arm", "order", "letter", "preferred", "response_id",
                                   "arm", "value", "judge_run_id")} == {
        "pair_id": neutralise(pair.public_id), "first_arm": "fine-tuned", "second_arm": "baseline", "order": "BA", "letter": "A",
        "preferred": "second", "response_id": "", "arm": "", "value": "", "judge_run_id": str(pairs_run.id)}
    row = rows[0]
    assert row["raw_text"] == "'=HYPERLINK(\"http://evil\")"  # formula neutralised
    response = first.response
    template = current_templates()["criterion"]
    assert {k: row[k] for k in ("judge", "judge_kind", "judge_model", "criterion", "response_id", "arm",
                                "arm_blind_code", "pair_id", "first_arm", "sample", "method", "value", "outside_mass",
                                "expected", "model_sha256", "template_name", "template_version",
                                "template_sha256", "seed", "judge_run_id")} == {
        "judge": "lab judge", "judge_kind": "http", "judge_model": "lab-endpoint", "criterion": first.criterion,
        "response_id": neutralise(response.public_id), "arm": response.arm.label, "arm_blind_code": response.arm.blind_code,
        "pair_id": "", "first_arm": "", "sample": str(first.sample), "method": "http-text", "value": str(first.value),
        "outside_mass": "0.125", "expected": "6.5", "model_sha256": "ab" * 32, "template_name": template["name"],
        "template_version": str(template["version"]), "template_sha256": template["sha256"], "seed": "11",
        "judge_run_id": str(first.run_id)}
    assert json.loads(row["distribution_json"]) == [0.25, 0.75]
    api = APIClient()
    api.force_authenticate(researcher)
    via_api = api.get(reverse("api_export", args=[study.id, "judge_answers"]))
    assert read_csv(via_api) == rows

    bundle = zipfile.ZipFile(io.BytesIO(b"".join(client.get(reverse("export_zip", args=[study.id])).streaming_content)))
    manifest = json.loads(bundle.read("manifest.json"))
    assert manifest["files"]["judge_answers.csv"]["rows"] == len(rows)
    assert [j["name"] for j in manifest["judges"]] == ["lab judge"]
    codebook = list(csv.DictReader(io.StringIO(bundle.read("codebook.csv").decode())))
    assert {c["column"] for c in codebook if c["file"] == "judge_answers.csv"} == set(rows[0])


def test_a_bundle_without_judge_answers_has_no_judge_file(client, researcher, study):
    Judge.objects.create(study=study, name="idle", kind="local", model="bundled", created_by=researcher)
    client.force_login(researcher)
    bundle = zipfile.ZipFile(io.BytesIO(b"".join(client.get(reverse("export_zip", args=[study.id])).streaming_content)))
    assert "judge_answers.csv" not in bundle.namelist() and "judges" not in json.loads(bundle.read("manifest.json"))
    assert "judge_answers.csv" not in bundle.read("codebook.csv").decode()
