"""Text measures and reference overlap."""

import pytest

from evalapp.stats.text import asks_question, intensifier_count, reference_overlap, text_measures, words


def test_words_keeps_contractions():
    assert words("I'm really sorry, it's hard.") == ["i'm", "really", "sorry", "it's", "hard"]


@pytest.mark.parametrize(("text", "n"), [
    ("That sounds really, really hard.", 2),
    ("I am so sorry.", 1),
    ("So, what happened next?", 0),
    ("Rest, so that you feel better.", 0),
    ("It was late so I left.", 0),
    ("Absolutely. You are TOTALLY right.", 2),
    ("Nothing here.", 0),
])
def test_intensifier_count(text, n):
    assert intensifier_count(text) == n


def test_text_measures():
    out = text_measures(["I am so sorry. How are you?", "Thanks a lot."])
    assert out["n_responses"] == 2
    assert out["words_per_response"] == pytest.approx((7 + 3) / 2)
    assert out["intensifiers_per_100_words"] == pytest.approx(100 * 1 / 10)
    assert out["question_share"] == 0.5
    assert asks_question("ok?") and not asks_question("ok.")
    assert text_measures([])["words_per_response"] is None


def test_reference_overlap_identical_and_disjoint():
    same = reference_overlap(["the cat sat on the mat today"], ["the cat sat on the mat today"])
    assert same["bleu"] == pytest.approx(100.0) and same["rouge_l"] == pytest.approx(1.0)
    diff = reference_overlap(["completely unrelated words here"], ["the cat sat on the mat"])
    assert diff["bleu"] < 1 and diff["rouge_l"] == 0


def test_reference_overlap_matches_libraries_and_multi_refs():
    import sacrebleu
    hyps = ["it sounds like you feel alone", "talking to a friend may help"]
    refs = ["it sounds like you are feeling alone", "maybe talking with a friend could help"]
    out = reference_overlap(hyps, refs)
    assert out["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    # ROUGE-L F1 by hand, Porter stemming makes "feel" = "feeling":
    # LCS "it sounds like you feel alone" = 6 tokens; P = 6/6, R = 6/7.
    multi = reference_overlap(hyps[:1], [["unrelated text", refs[0]]])
    assert multi["rouge_l"] == pytest.approx(2 * 1 * (6 / 7) / (1 + 6 / 7))
    with pytest.raises(ValueError):
        reference_overlap(hyps, refs[:1])
