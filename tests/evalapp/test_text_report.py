"""The text report of a study: per-arm means, paired differences over prompts, correlations, export rows.

Scores are passed as hand-built `records` (the shape of evalapp.exports.tables.analysis_records), not
Rating rows, so these tests do not depend on how ratings are stored.
"""

import json
import math

import pytest
from django.template.loader import render_to_string

from evalapp.text_plots import length_score_plot
from evalapp.text_report import TEXT_MEASURE_COLUMNS, length_score_points, text_measure_rows, text_report

from ..factories import ArmFactory, PromptFactory, ResponseFactory

pytestmark = pytest.mark.django_db

REFERENCE = "I hear you, that is hard."
# (prompt, arm, sample_index, text, words)
TEXTS = [
    ("p1", "alpha", 0, "Okay.", 1),
    ("p2", "alpha", 0, "I hear you.", 3),
    ("p3", "alpha", 0, "That is hard.", 3),
    ("p4", "alpha", 0, "Fine.", 1),
    ("p1", "beta", 0, "Okay, I hear you.", 4),
    ("p1", "beta", 1, "Okay.", 1),
    ("p2", "beta", 0, REFERENCE, 6),
    ("p3", "beta", 0, "That is hard. What helped you before?", 7),
    ("p4", "beta", 0, "Fine, thank you so much.", 5),
]
# Mean scores of beta's responses (two raters each): ranks against words 4 1 6 7 5 are
# 2 1 5 4 3 vs 2 1 4 5 3, sum d^2 = 2, rho = 1 - 6 * 2 / (5 * 24) = 0.9.
BETA_MEANS = {("p1", 0): 2, ("p1", 1): 1, ("p2", 0): 5, ("p3", 0): 4, ("p4", 0): 3}
ALPHA_MEANS = {"p1": 2, "p2": 6, "p3": 4, "p4": 1}


@pytest.fixture
def text_study(study):
    arms = {label: ArmFactory(study=study, label=label) for label in ("beta", "alpha")}
    prompts = {p: PromptFactory(study=study, external_id=p, reference="" if p == "p4" else REFERENCE)
               for p in ("p1", "p2", "p3", "p4")}
    ids = {}
    for prompt, arm, sample, text, _ in TEXTS:
        response = ResponseFactory(prompt=prompts[prompt], arm=arms[arm], sample_index=sample, text=text,
                                   provenance={})
        ids[(prompt, arm, sample)] = response.public_id
    records = []
    for (prompt, arm, sample), public_id in ids.items():
        mean = BETA_MEANS[(prompt, sample)] if arm == "beta" else ALPHA_MEANS[prompt]
        for rater, score in (("R1", mean - 1), ("R2", mean + 1), ("R3", None)):  # R3: "not sure"
            records.append({"item": public_id, "rater": rater, "scale": "empathy", "score": score, "arm": arm,
                            "prompt": prompt})
        records.append({"item": public_id, "rater": "R1", "scale": "clarity", "score": None, "arm": arm,
                        "prompt": prompt})
    return study, records, ids


def _measure(block, key):
    return next(m for m in block["measures"] if m["key"] == key)


def test_arm_means_and_paired_differences(text_study):
    study, records, _ = text_study
    report = text_report(study, records)
    json.dumps(report)  # cacheable, and served as results.json
    assert [a["arm"] for a in report["arms"]] == ["alpha", "beta"]
    alpha, beta = report["arms"]
    assert (alpha["n_responses"], alpha["n_prompts"], beta["n_responses"], beta["n_prompts"]) == (4, 4, 5, 4)
    # beta's p1 is the mean of its two samples, (4 + 1) / 2: prompts, not responses, are the units.
    assert _measure(beta, "words")["mean"] == pytest.approx((2.5 + 6 + 7 + 5) / 4)
    assert _measure(alpha, "words")["mean"] == pytest.approx(2.0)

    [pair] = report["pairs"]
    assert pair["contrast"] == "beta - alpha" and pair["n_prompts"] == 4
    words = _measure(pair, "words")
    diffs = [2.5 - 1, 6 - 3, 7 - 3, 5 - 1]  # 1.5, 3, 4, 4
    mean = sum(diffs) / 4
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 3)
    half = 3.182446305284263 * sd / 2  # t(0.975, 3) * sd / sqrt(4)
    assert words["mean_diff"] == pytest.approx(3.125) and words["n_prompts"] == 4
    assert words["ci95"] == pytest.approx([mean - half, mean + half])
    questions = _measure(pair, "questions")
    assert questions["mean_diff"] == pytest.approx(0.25)  # one question, in beta's p3

    # BLEU / ROUGE-L only where the prompt has a reference: p4 has none.
    assert report["reference"] == {"n_prompts": 3, "n_prompts_total": 4, "n_responses": 7}
    assert _measure(pair, "rouge_l")["n_prompts"] == 3 and _measure(beta, "bleu")["n_prompts"] == 3
    assert _measure(alpha, "rouge_l")["n_prompts"] == 3


def test_correlations_use_mean_scores_and_skip_not_sure(text_study):
    from scipy.stats import spearmanr

    study, records, _ = text_study
    report = text_report(study, records)
    assert [c["criterion"] for c in report["correlations"]] == ["empathy", "clarity"]
    empathy, clarity = report["correlations"]
    words = _measure(empathy, "words")
    beta = next(a for a in words["arms"] if a["arm"] == "beta")
    assert beta["rho"] == pytest.approx(0.9) and beta["n"] == 5
    xs = [w for _, _, _, _, w in TEXTS]
    ys = [ALPHA_MEANS[p] if arm == "alpha" else BETA_MEANS[(p, s)] for p, arm, s, _, _ in TEXTS]
    assert words["pooled"]["rho"] == pytest.approx(spearmanr(xs, ys).statistic) and words["pooled"]["n"] == 9
    # Only "not sure" for clarity: nothing to correlate, but the criterion is still listed.
    assert clarity["n_responses"] == 0 and _measure(clarity, "words")["pooled"] == {"rho": None, "p": None, "n": 0}


def test_text_measure_rows_one_per_response(text_study):
    study, _, ids = text_study
    rows = list(text_measure_rows(study))
    assert len(rows) == len(TEXTS) and all(len(r) == len(TEXT_MEASURE_COLUMNS) for r in rows)
    header = [name for name, _ in TEXT_MEASURE_COLUMNS]
    by_id = {r[0]: dict(zip(header, r, strict=True)) for r in rows}
    assert set(by_id) == set(ids.values())
    exact = by_id[ids[("p2", "beta", 0)]]
    assert (exact["prompt_id"], exact["arm"], exact["sample_index"], exact["words"]) == ("p2", "beta", 0, 6)
    assert exact["bleu"] == pytest.approx(100) and exact["rouge_l"] == pytest.approx(1)
    no_reference = by_id[ids[("p4", "beta", 0)]]
    assert no_reference["bleu"] == "" and no_reference["rouge_l"] == ""
    assert no_reference["intensifier_rate"] == pytest.approx(20.0)  # "so" (much) of 5 words
    codebook = dict(TEXT_MEASURE_COLUMNS)
    assert "absolutely" in codebook["intensifier_rate"] and "'?'" in codebook["questions"]


def test_partial_renders(text_study):
    study, records, _ = text_study
    html = render_to_string("evalapp/_text_measures.html", {"text": text_report(study, records)})
    assert "beta - alpha" in html and "3.125" in html and "0.90" in html and "tremendously" in html
    assert 'id="no-text-measures"' not in html


def test_length_score_plot(text_study):
    study, records, ids = text_study
    points = length_score_points(study, records)
    assert points["criteria"] == ["empathy", "clarity"] and points["arms"] == ["alpha", "beta"]
    assert sorted(points["points"]["empathy"]["beta"]) == [[1, 1], [4, 2], [5, 3], [6, 5], [7, 4]]
    assert points["points"]["clarity"] == {"alpha": [], "beta": []}
    assert length_score_plot(points).startswith(b"\x89PNG")
    many = {**points, "criteria": [f"c{i}" for i in range(9)]}
    assert length_score_plot(many).startswith(b"\x89PNG")
    assert length_score_plot({"criteria": [], "arms": [], "points": {}}, "svg").lstrip().startswith(b"<?xml")


def test_empty_study(study):
    report = text_report(study, [])
    assert report["arms"] == [] and report["pairs"] == [] and report["correlations"] == []
    assert 'id="no-text-measures"' in render_to_string("evalapp/_text_measures.html", {"text": report})
