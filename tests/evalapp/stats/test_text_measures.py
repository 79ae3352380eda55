"""Per-response text measures and the small statistics over them, checked by hand."""

import math

import pytest

from evalapp.stats.text import (
    mean_ci,
    paired_difference,
    question_count,
    response_measures,
    second_person_count,
    sentences,
    spearman,
)

# Counted by hand:
# words (29): I'm so sorry you're dealing with this / It sounds really really hard /
#             Have you talked to anyone about it / What would help you most right now / You deserve support
#             = 7 + 5 + 7 + 7 + 3
# sentences (5): the four punctuated ones and the last line (ended by the end of the text)
# intensifiers (3): "so" (modifies "sorry"), "really", "really"
# questions (2): "Have you talked ...?" and "What would help ...?"
# second person (4): you're, you, you, You
TEXT = ("I'm so sorry you're dealing with this. It sounds really, really hard! Have you talked to anyone "
        "about it? What would help you most right now?\nYou deserve support")


def test_hand_counted_response():
    m = response_measures(TEXT)
    assert m["words"] == 29
    assert m["sentences"] == 5
    assert m["intensifier_rate"] == pytest.approx(100 * 3 / 29)
    assert m["questions"] == 2
    assert m["second_person_rate"] == pytest.approx(100 * 4 / 29)
    assert m["bleu"] is None and m["rouge_l"] is None


def test_sentence_rule():
    assert sentences(TEXT)[-1] == "You deserve support"
    assert sentences("Wait... really?! Yes.") == ["Wait...", "really?!", "Yes."]
    assert sentences("It costs 3.5 dollars. Ok") == ["It costs 3.5 dollars.", "Ok"]
    assert sentences('She said "no." Then she left.') == ['She said "no.', "Then she left."]
    assert sentences("Line one\n\n- line two\n...") == ["Line one", "- line two"]
    assert sentences("") == [] and sentences("?!") == []


def test_questions_and_second_person():
    assert question_count("Wait... really?! Yes.") == 1
    assert question_count('Did she say "why?" Maybe.') == 1
    assert question_count("What? Why? How.") == 2
    assert question_count("Is this ok?No") == 0  # no whitespace after "?": one sentence, not ending in "?"
    assert second_person_count("You, your, yours, yourself, yourselves; you'll, you\u2019re. Young youth.") == 7


def test_empty_response_has_no_rates():
    m = response_measures("")
    assert m == {"words": 0, "sentences": 0, "intensifier_rate": None, "questions": 0,
                 "second_person_rate": None, "bleu": None, "rouge_l": None}


def test_reference_measures():
    import sacrebleu

    same = response_measures("the cat sat on the mat today", "the cat sat on the mat today")
    assert same["bleu"] == pytest.approx(100.0) and same["rouge_l"] == pytest.approx(1.0)
    hyp, ref = "it sounds like you feel alone", "it sounds like you are feeling alone"
    m = response_measures(hyp, ref)
    assert m["bleu"] == pytest.approx(sacrebleu.sentence_bleu(hyp, [ref]).score)
    assert m["rouge_l"] == pytest.approx(2 * 1 * (6 / 7) / (1 + 6 / 7))  # LCS 6 (stemmed), P 6/6, R 6/7
    assert response_measures(hyp, "   ")["bleu"] is None


def test_mean_ci():
    out = mean_ci([2, 4, None])
    assert out["mean"] == 3 and out["n"] == 2
    half = 12.706204736174698 * math.sqrt(2) / math.sqrt(2)  # t(0.975, 1) * sd / sqrt(n)
    assert out["ci95"] == pytest.approx([3 - half, 3 + half])
    assert mean_ci([5]) == {"mean": 5, "ci95": [None, None], "n": 1}
    assert mean_ci([]) == {"mean": None, "ci95": [None, None], "n": 0}


def test_paired_difference():
    out = paired_difference([3, 5, 7], [1, 2, 3])  # differences 2, 3, 4: mean 3, sd 1
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) * 1 / sqrt(3)
    assert out["mean_diff"] == 3 and out["n_prompts"] == 3
    assert out["ci95"] == pytest.approx([3 - half, 3 + half])
    assert paired_difference([3, None, 5, 2], [1, 2, None, 0]) == {"mean_diff": 2.0, "ci95": [2.0, 2.0], "n_prompts": 2}
    with pytest.raises(ValueError):
        paired_difference([1], [1, 2])


def test_spearman():
    # ranks 1 2 3 4 vs 1 3 2 4: sum d^2 = 2, rho = 1 - 6 * 2 / (4 * 15) = 0.8
    out = spearman([1, 2, 3, 4, None], [10, 30, 20, 40, 50])
    assert out["rho"] == pytest.approx(0.8) and out["n"] == 4 and 0 < out["p"] < 1
    assert spearman([1, 2], [1, 2]) == {"rho": None, "p": None, "n": 2}
    assert spearman([1, 2, 3], [5, 5, 5]) == {"rho": None, "p": None, "n": 3}
    assert spearman([1, 1, 1], [1, 2, 3])["rho"] is None
