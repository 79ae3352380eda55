"""The rubric as data (pure): criteria checked, answers parsed, presets valid, and "not sure" in the analysis."""

import pytest

from evalapp.analysis import analyze_long, validate_long
from evalapp.rubric import (
    RubricError,
    answer_errors,
    key_hints,
    parse_answer,
    point_key,
    remap,
    score_label,
    validate,
)
from evalapp.rubric_presets import PRESETS, preset

CHOICE = {"key": "medical_advice", "question": "Medical advice?", "kind": "choice",
          "options": [{"key": "yes", "label": "Yes"}, {"key": "no", "label": "No"}], "not_sure": "Not sure"}
LIKERT = {"key": "warmth", "question": "Warmth", "kind": "likert", "min": 0, "max": 2,
          "labels": {"0": "none", "2": "strong"}, "level": "ordinal", "rationale": "required"}


def test_presets_have_their_papers_criteria():
    assert {k: len(p["criteria"]) for k, p in PRESETS.items()} == {
        "empatheval": 2, "epitome": 3, "empatheticdialogues": 3, "mentalchat16k": 7, "counselbench": 6}
    epitome = preset("epitome")["criteria"]
    assert all((c["min"], c["max"], c["level"], c["rationale"]) == (0, 2, "ordinal", "required") for c in epitome)
    assert all((c["min"], c["max"]) == (1, 5) for c in preset("empatheticdialogues")["criteria"])
    assert all((c["min"], c["max"]) == (1, 10) for c in preset("mentalchat16k")["criteria"])
    bench = {c["key"]: c for c in preset("counselbench")["criteria"]}
    assert [o["key"] for o in bench["medical_advice"]["options"]] == ["yes", "no"]
    assert bench["medical_advice"]["not_sure"] and bench["medical_advice"]["level"] == "nominal"
    assert (bench["factual_consistency"]["min"], bench["factual_consistency"]["max"]) == (1, 4)
    assert all(p["citation"] for p in PRESETS.values())
    copy = preset("epitome")
    copy["criteria"].pop()
    assert len(PRESETS["epitome"]["criteria"]) == 3  # callers edit a copy


@pytest.mark.parametrize(("change", "message"), [
    ({"key": "Bad Key"}, "lower-case"),
    ({"question": " "}, "question"),
    ({"kind": "slider"}, "likert or choice"),
    ({"min": 5, "max": 5}, "below max"),
    ({"max": 40}, "at most 21 points"),
    ({"labels": {"7": "x"}}, "not a point"),
    ({"level": "nominal"}, "interval or ordinal"),
    ({"rationale": "sometimes"}, "none, optional or required"),
])
def test_bad_likert_criteria_are_refused_with_a_reason(change, message):
    with pytest.raises(RubricError, match=message):
        validate([{**LIKERT, **change}])


def test_bad_rubrics_are_refused_with_a_reason():
    with pytest.raises(RubricError, match="at least one"):
        validate([])
    with pytest.raises(RubricError, match="appears more than once"):
        validate([LIKERT, LIKERT])
    with pytest.raises(RubricError, match="2 to 8 options"):
        validate([{**CHOICE, "options": [{"key": "yes"}]}])
    with pytest.raises(RubricError, match="must be different"):
        validate([{**CHOICE, "options": [{"key": "yes"}, {"key": "yes"}]}])
    with pytest.raises(RubricError, match="nominal"):
        validate([{**CHOICE, "level": "interval"}])


def test_choice_gets_index_bounds_and_defaults():
    [c] = validate([CHOICE])
    assert (c["min"], c["max"], c["level"], c["rationale"]) == (0, 1, "nominal", "none")


def test_answers_are_parsed_into_stored_form():
    [choice, likert] = validate([CHOICE, LIKERT])
    assert parse_answer(choice, "no") == (1, False, "")
    assert parse_answer(choice, "not_sure") == (None, True, "")
    assert parse_answer(likert, "2", "warm words") == (2, False, "warm words")
    with pytest.raises(RubricError, match="short reason"):
        parse_answer(likert, "2", " ")
    with pytest.raises(RubricError, match="from 0 to 2"):
        parse_answer(likert, "3", "x")
    with pytest.raises(RubricError, match="no \"not sure\""):
        parse_answer(likert, "not_sure", "x")
    with pytest.raises(RubricError, match="one of yes, no"):
        parse_answer(choice, "maybe")
    with pytest.raises(RubricError, match="choose an answer"):
        parse_answer(choice, "")
    assert score_label(choice, 1) == "no" and score_label(likert, 2) == "strong"
    assert score_label(choice, None, True) == "not_sure"


def test_key_hints_name_every_key():
    [choice, likert] = validate([CHOICE, LIKERT])
    assert key_hints(choice) == "a: Yes, b: No, n: Not sure"
    assert key_hints(likert) == "0-2"
    assert key_hints(validate([{**LIKERT, "min": 1, "max": 10, "labels": {}}])[0]) == "1-9, 0 for 10"


def test_calibration_errors_per_kind():
    [choice, likert] = validate([CHOICE, LIKERT])
    assert answer_errors([choice, likert], {"medical_advice": 0, "warmth": 2}, {"medical_advice": 1, "warmth": 0}) \
        == [1.0, 2.0]
    # "Not sure" where the reference answers counts half (half a choice, half the 0-2 scale); no
    # reference: left out. Scaled, errors are shares of each scale.
    assert answer_errors([choice, likert], {"medical_advice": None, "warmth": 1}, {"medical_advice": 1}) == [0.5]
    assert answer_errors([choice, likert], {"medical_advice": 1, "warmth": None}, {"warmth": 2}) == [1.0]
    assert answer_errors([choice, likert], {"medical_advice": 0, "warmth": 0}, {"medical_advice": 1, "warmth": 2},
                         scaled=True) == [1.0, 1.0]


def test_keys_for_every_scale_width():
    def keys(low, high):
        [c] = validate([{**LIKERT, "min": low, "max": high, "labels": {}}])
        return [point_key(c, v) for v in range(low, high + 1)], key_hints(c)

    assert keys(0, 2) == (["0", "1", "2"], "0-2")
    assert keys(1, 10) == (["1", "2", "3", "4", "5", "6", "7", "8", "9", "0"], "1-9, 0 for 10")
    assert keys(2, 10)[1] == "2-9, 0 for 10"
    assert keys(0, 10) == ([str(v) for v in range(10)] + ["t"], "0-9, t for 10")
    assert keys(0, 20)[0] == [""] * 21 and "click" in keys(0, 20)[1]


def test_remapping_answers_after_a_rubric_change():
    [choice, likert] = validate([CHOICE, LIKERT])
    reordered = {**choice, "options": list(reversed(choice["options"]))}
    assert remap(choice, reordered, 0) == 1  # "yes" follows its key
    assert remap(likert, {**likert, "max": 5}, 2) is None  # 2 on 0-2 is not 2 on 0-5
    assert remap(likert, {**likert, "question": "Reworded"}, 2) == 2


def test_not_sure_is_missing_in_agreement_hand_computed():
    # Two raters, four items; item i3's second answer is "not sure". As missing, i3 has one value and
    # drops out: values a a | a b | b b give o_aa = o_bb = 2, o_ab = o_ba = 1, n = 6,
    # D_o = 2/6, D_e = 2*3*3/(6*5) = 0.6, alpha = 1 - (1/3)/0.6 = 4/9.
    rows = [{"item": i, "rater": r, "scale": "advice", "level": "nominal", "score": v, "not_sure": ns}
            for i, r, v, ns in [("i1", "A", 0, 0), ("i1", "B", 0, 0), ("i2", "A", 0, 0), ("i2", "B", 1, 0),
                                ("i3", "A", 1, 0), ("i3", "B", "", 1), ("i4", "A", 1, 0), ("i4", "B", 1, 0)]]
    assert validate_long([{k: str(v) for k, v in r.items()} for r in rows]) == []
    result = analyze_long([{**r, "score": None if r["not_sure"] else r["score"]} for r in rows], n_boot=50)
    block = result["scales"]["advice"]
    assert block["krippendorff_alpha_nominal"]["value"] == pytest.approx(4 / 9)
    assert block["alpha_headline"] == "krippendorff_alpha_nominal"
    assert "krippendorff_alpha_interval" not in block and block["icc"] is None
    assert block["n_not_sure"] == 1 and block["n_ratings"] == 7
    assert block["exact_agreement"] == pytest.approx(2 / 3)
    assert block["weighted_kappa"]["weights"] == "unweighted"
    # Counted as a third answer instead, "not sure" would change alpha: the test can tell.
    as_category = analyze_long([{**r, "score": 2 if r["not_sure"] else r["score"], "not_sure": 0} for r in rows],
                               n_boot=50)
    assert as_category["scales"]["advice"]["krippendorff_alpha_nominal"]["value"] != pytest.approx(4 / 9)


def test_blank_score_without_not_sure_is_a_problem():
    rows = [{"item": "i1", "rater": "A", "score": "", "not_sure": "0"}, {"item": "i1", "rater": "B", "score": "3"}]
    assert any("empty score" in str(p) for p in validate_long(rows))


def test_choice_comparison_is_answer_by_answer():
    # Six prompts; arm 1 says "yes" (0) on prompts 0-4, arm 0 on prompt 0 only.
    rows = []
    for p in range(6):
        rows.append({"item": f"{p}b", "rater": "A", "scale": "advice", "level": "nominal", "arm": "base",
                     "prompt": str(p), "score": 0 if p == 0 else 1})
        rows.append({"item": f"{p}t", "rater": "B", "scale": "advice", "level": "nominal", "arm": "tuned",
                     "prompt": str(p), "score": 0 if p < 5 else 1})
        rows.append({"item": f"{p}t", "rater": "A", "scale": "advice", "level": "nominal", "arm": "tuned",
                     "prompt": str(p), "score": 0 if p < 5 else 1})
    c = analyze_long(rows, n_boot=200)["scales"]["advice"]["comparison"]
    yes = c["options"]["0"]
    assert yes["arms"]["0"]["share"] == pytest.approx(1 / 6) and yes["arms"]["1"]["share"] == pytest.approx(10 / 12)
    assert yes["mean_diff"] == pytest.approx(4 / 6) and c["n_prompts"] == 6
    lo, hi = yes["arms"]["0"]["ci95"]
    assert lo < 1 / 6 < hi  # Wilson interval around the share
    # Four prompts differ, all the same way: the exact sign test gives 2 / 2**4; a yes/no answer is
    # one test, so "no" (the same differences, negated) costs no correction.
    assert yes["test"]["p"] == pytest.approx(0.125) and yes["test"]["method"].startswith("exact sign test")
    assert yes["p_holm"] == yes["test"]["p"] == c["options"]["1"]["test"]["p"] and c["p"] == pytest.approx(0.125)


def test_choice_test_is_mcnemars_exact_and_shares_holm_with_likert_criteria():
    # One rating per prompt and arm; 14 prompts say yes only in arm 1, 4 only in arm 0, 12 agree:
    # McNemar's exact p = 2 * P(Bin(18, .5) <= 4) = 0.0309 (the normal approximation said 0.018).
    rows = []
    for p in range(30):
        base, tuned = (1, 0) if p < 14 else (0, 1) if p < 18 else (p % 2, p % 2)
        for arm, v in (("base", base), ("tuned", tuned)):
            rows.append({"item": f"{p}{arm}", "rater": "A" if arm == "base" else "B", "scale": "advice",
                         "level": "nominal", "arm": arm, "prompt": str(p), "score": v})
            rows.append({"item": f"{p}{arm}", "rater": "C", "scale": "warmth", "level": "interval", "arm": arm,
                         "prompt": str(p), "score": 3 + (arm == "tuned") * (p % 3)})
        rows.append({"item": f"{p}base", "rater": "D", "scale": "warmth", "level": "interval", "arm": "base",
                     "prompt": str(p), "score": 3})
    out = analyze_long(rows, n_boot=100, fit_mixed=False)["scales"]
    choice = out["advice"]["comparison"]
    assert choice["options"]["0"]["test"]["p"] == pytest.approx(0.0309, abs=1e-4)
    # Two criteria in one Holm family: each adjusted p is at least its raw p, and Holm's smallest is 2p.
    likert = out["warmth"]["comparison"]
    raw = sorted([choice["p"], likert["wilcoxon"]["p"]])
    adjusted = sorted([choice["p_holm"], likert["wilcoxon_p_holm"]])
    assert adjusted[0] == pytest.approx(min(1, 2 * raw[0]))


def test_an_icc_interval_that_would_come_out_inverted_is_left_undefined():
    import numpy as np

    from evalapp.stats.icc import icc_all

    # Three items, two raters who disagree: the F bounds cross the pole of ICC2k's transform.
    forms = icc_all(np.array([[1.0, 5.0], [4.0, 1.0], [2.0, 2.0]]))
    for form in forms.values():
        lo, hi = form["ci95"]
        assert (np.isnan(lo) and np.isnan(hi)) or lo <= hi
