"""Results, plots and exports: the numbers on the page are recomputable from the exported CSV."""

import csv
import io
import json
import random
import zipfile
from hashlib import sha256

import pytest
from django.urls import reverse

from evalapp.analysis import analyze_long
from evalapp.exports.csv import neutralise
from evalapp.results import study_results

from ..factories import ArmFactory, MembershipFactory, PromptFactory, RatingFactory, ResponseFactory
from raters.models import Role

pytestmark = pytest.mark.django_db


@pytest.fixture
def rated_study(study):
    rng = random.Random(4)
    raters = [MembershipFactory(study=study, role=Role.RATER).user for _ in range(3)]
    arms = [ArmFactory(study=study, label="fine-tuned"), ArmFactory(study=study, label="baseline")]
    for i, prompt in enumerate(PromptFactory.create_batch(8, study=study, topic="anxiety")):
        for arm in arms:
            response = ResponseFactory(prompt=prompt, arm=arm)
            bonus = 1 if arm.label == "fine-tuned" else 0
            for rater in raters:
                RatingFactory(response=response, rater=rater, empathy=min(10, rng.randint(4, 8) + bonus),
                              fluency=rng.randint(5, 9), comment="=HYPERLINK(\"http://evil\")" if i == 0 else "")
    return study


def test_neutralise():
    assert [neutralise(v) for v in ["=1+1", "+x", "-y", "@z", "\tt", "\rr", "ok", -3, 2.5]] == [
        "'=1+1", "'+x", "'-y", "'@z", "'\tt", "'\rr", "ok", -3, 2.5]


def read_csv(client, url):
    response = client.get(url)
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode("utf-8"))))


def test_export_round_trip_reproduces_the_results(client, researcher, rated_study):
    client.force_login(researcher)
    rows = read_csv(client, reverse("export_csv", args=[rated_study.id, "ratings"]))
    assert len(rows) == 8 * 2 * 3 * 2
    assert rows[0]["arm"] in ("fine-tuned", "baseline") and rows[0]["rater"].startswith("R")
    assert {r["comment"] for r in rows} == {"", "'=HYPERLINK(\"http://evil\")"}  # formula neutralised
    records = [{"item": r["response_id"], "rater": r["rater"], "scale": r["scale"], "score": float(r["score"]),
                "arm": r["arm"], "prompt": r["prompt_id"]} for r in rows if r["excluded"] == "0"]
    page = json.loads(client.get(reverse("results_json", args=[rated_study.id])).content)
    again = analyze_long(records, n_boot=2000, seed=rated_study.design_seed % (2**31), fit_mixed=True)
    assert json.loads(json.dumps(again)) == page["agreement"]
    emp = page["comparison"]["scales"]["empathy"]["comparison"]
    assert emp["contrast"] == "fine-tuned - baseline" and emp["mean_diff"] > 0


def test_results_page_and_plots(client, researcher, rated_study):
    client.force_login(researcher)
    page = client.get(reverse("results", args=[rated_study.id])).content.decode()
    assert 'id="result-empathy"' in page and "Krippendorff" in page
    assert '<strong class="icc">ICC2 ' in page  # the same raters rated every item: two-way
    for name in ["distributions", "differences", "severity", "agreement"]:
        png = client.get(reverse("results_plot", args=[rated_study.id, name, "png"]))
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    svg = client.get(reverse("results_plot", args=[rated_study.id, "agreement", "svg"]) + "?download=1")
    assert b"<svg" in svg.content and "attachment" in svg["Content-Disposition"]


def test_zip_has_codebook_and_a_truthful_manifest(client, researcher, rated_study):
    client.force_login(researcher)
    response = client.get(reverse("export_zip", args=[rated_study.id]))
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert set(archive.namelist()) == {"ratings.csv", "responses.csv", "text_measures.csv", "audit.csv", "codebook.csv",
                                       "manifest.json"}
    manifest = json.loads(archive.read("manifest.json"))
    for name in ("ratings.csv", "responses.csv", "text_measures.csv", "audit.csv"):
        data = archive.read(name)
        assert manifest["files"][name]["sha256"] == sha256(data).hexdigest()
        assert manifest["files"][name]["rows"] == len(list(csv.DictReader(io.StringIO(data.decode()))))
    assert manifest["files"]["ratings.csv"]["rows"] == 8 * 2 * 3 * 2
    assert set(manifest["models"]) == {"fine-tuned", "baseline"}
    codebook = archive.read("codebook.csv").decode()
    header = archive.read("ratings.csv").decode().splitlines()[0].split(",")
    assert all(column in codebook for column in header)
    # The rubric exactly: each criterion's question, range and anchors; the intensifiers counted.
    rubric = [row for row in csv.DictReader(io.StringIO(codebook)) if row["file"] == "rubric"
              and row["column"] != "(source)"]
    assert [r["column"] for r in rubric] == ["empathy", "fluency"]
    assert '"Empathy and Support"' in rubric[0]["meaning"] and "whole numbers 1-10" in rubric[0]["meaning"]
    assert "10 = Warm, validating and genuinely supportive" in rubric[0]["meaning"]
    assert manifest["study"]["rubric"][1]["key"] == "fluency"
    assert manifest["study"]["rubric_source"]["name"] == "EmpathEval default" and "EmpathEval default" in codebook
    assert "really" in codebook and manifest["files"]["text_measures.csv"]["rows"] == 8 * 2


def test_excluded_raters_are_marked_and_left_out(client, researcher, rated_study):
    from django.utils import timezone

    from raters.models import StudyMembership

    membership = StudyMembership.objects.filter(study=rated_study, role=Role.RATER).first()
    StudyMembership.objects.filter(id=membership.id).update(excluded_at=timezone.now(), excluded_reason="careless")
    client.force_login(researcher)
    rows = read_csv(client, reverse("export_csv", args=[rated_study.id, "ratings"]))
    excluded = [r for r in rows if r["excluded"] == "1"]
    assert len(excluded) == 8 * 2 * 2 and {r["exclusion_reasons"] for r in excluded} == {"rater excluded: careless"}
    results = study_results(rated_study)
    assert results["agreement"]["scales"]["empathy"]["n_raters"] == 2


@pytest.mark.parametrize("persona", ["rater", "adjudicator", "outsider"])
def test_results_and_exports_are_for_researchers(client, personas, rated_study, persona):
    client.force_login(personas[persona])
    for url in [reverse("results", args=[rated_study.id]), reverse("results_json", args=[rated_study.id]),
                reverse("results_plot", args=[rated_study.id, "agreement", "png"]),
                reverse("export_csv", args=[rated_study.id, "ratings"]), reverse("export_zip", args=[rated_study.id])]:
        assert client.get(url).status_code == 404, url


def test_subgroups_state_the_number_of_comparisons(client, researcher, rated_study):
    from evalapp.models import Prompt

    Prompt.objects.filter(study=rated_study, id__in=list(rated_study.prompts.values_list("id", flat=True)[:4])).update(
        topic="grief")
    results = study_results(rated_study)
    tests = results["subgroups"]["tests"]
    assert {(t["value"], t["scale"]) for t in tests} == {(v, s) for v in ("anxiety", "grief") for s in ("empathy", "fluency")}
    assert results["subgroups"]["n_comparisons"] == sum(t["p"] is not None for t in tests)
    assert all(t["p_holm"] is None or t["p_holm"] >= t["p"] for t in tests)
    client.force_login(researcher)
    assert "comparisons, p-values Holm" in client.get(reverse("results", args=[rated_study.id])).content.decode()


def _two_arm_study(owner, n_prompts: int, n_raters: int):
    from ..factories import StudyFactory

    study = StudyFactory(owner=owner)
    raters = [MembershipFactory(study=study, role=Role.RATER).user for _ in range(n_raters)]
    arms = [ArmFactory(study=study, label="fine-tuned"), ArmFactory(study=study, label="baseline")]
    for i, prompt in enumerate(PromptFactory.create_batch(n_prompts, study=study)):
        for arm in arms:
            response = ResponseFactory(prompt=prompt, arm=arm)
            for j, rater in enumerate(raters):
                RatingFactory(response=response, rater=rater, empathy=1 + (i + j) % 10, fluency=1 + (i * j) % 10)
    return study


# Four cold plot requests: the first queues the computation (run eagerly here, reading the ratings once and
# writing its stages), every request fingerprints the data and reads the stored row; none depends on the size.
PLOT_PAGE_QUERIES = 72


@pytest.mark.parametrize("n_prompts, n_raters", [(3, 2), (25, 4)])
def test_the_four_plots_read_the_ratings_once(client, researcher, django_assert_num_queries, n_prompts, n_raters):
    from django.core.cache import cache

    study = _two_arm_study(researcher, n_prompts, n_raters)
    client.force_login(researcher)
    cache.clear()
    with django_assert_num_queries(PLOT_PAGE_QUERIES) as captured:
        for name in ["distributions", "differences", "severity", "agreement"]:
            assert client.get(reverse("results_plot", args=[study.id, name, "png"])).status_code == 200
    assert sum('"evalapp_score"."value"' in q["sql"] for q in captured.captured_queries) == 1


def test_plot_summary_matches_the_records(rated_study):
    from evalapp import plots
    from evalapp.exports.tables import analysis_records, rating_rows

    records = analysis_records(rating_rows(rated_study))
    summary = plots.summarize(records)
    assert summary["arms"] == ["baseline", "fine-tuned"] and summary["n_raters"] == 3
    assert sum(sum(c.values()) for c in summary["scores"]["empathy"].values()) == 8 * 2 * 3
    one = next(r for r in records if r["scale"] == "fluency")
    cell = summary["prompts"]["fluency"][one["prompt"]][one["arm"]]
    same = [r["comparison_score"] for r in records if r["scale"] == "fluency" and r["prompt"] == one["prompt"]
            and r["arm"] == one["arm"]]
    assert cell == [sum(same), len(same)]
    n, total, squares = summary["raters"]["empathy"][one["rater"]]
    theirs = [r["score"] for r in records if r["scale"] == "empathy" and r["rater"] == one["rater"]]
    assert (n, total, squares) == (len(theirs), sum(theirs), sum(s * s for s in theirs))


def test_manifest_fingerprints_tell_a_4bit_base_from_full_precision(rated_study):
    from evalapp.exports.bundle import _model_fingerprints
    from evalapp.models import Response

    nf4 = {"method": "bitsandbytes", "bits": 4, "quant_type": "nf4", "double_quant": True,
           "compute_dtype": "bfloat16"}
    responses = list(Response.objects.filter(prompt__study=rated_study, arm__label="fine-tuned").order_by("id"))
    for n, response in enumerate(responses[:3]):
        # Two bitsandbytes versions: the same weights, so one fingerprint.
        response.provenance = {**response.provenance, "quantization": {**nf4, "bitsandbytes": f"0.4{n % 2}.0"}}
        response.save()
    models = _model_fingerprints(rated_study)
    fine_tuned = [row["quantization"] for row in models["fine-tuned"]]
    assert len(fine_tuned) == 2 and nf4 in fine_tuned and None in fine_tuned
    assert [row["quantization"] for row in models["baseline"]] == [None]
