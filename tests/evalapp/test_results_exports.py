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
from evalapp.exports import neutralise
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
    assert set(archive.namelist()) == {"ratings.csv", "responses.csv", "audit.csv", "codebook.csv", "manifest.json"}
    manifest = json.loads(archive.read("manifest.json"))
    for name in ("ratings.csv", "responses.csv", "audit.csv"):
        data = archive.read(name)
        assert manifest["files"][name]["sha256"] == sha256(data).hexdigest()
        assert manifest["files"][name]["rows"] == len(list(csv.DictReader(io.StringIO(data.decode()))))
    assert manifest["files"]["ratings.csv"]["rows"] == 8 * 2 * 3 * 2
    assert set(manifest["models"]) == {"fine-tuned", "baseline"}
    codebook = archive.read("codebook.csv").decode()
    header = archive.read("ratings.csv").decode().splitlines()[0].split(",")
    assert all(column in codebook for column in header)


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
