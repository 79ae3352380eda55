"""The researcher's pairwise page: design while a draft, gold pairs, open, close; refusals say why."""

import pytest
from django.urls import reverse

from evalapp.models import PairwisePhase
from evalapp.pair_rubric import PairCriteriaError, parse_lines, validate
from raters.models import GoldPair, PairAssignment

from ..factories import log_in
from ..raters.conftest import add_rater, rating_study  # noqa: F401 (the fixture)


@pytest.fixture
def owner_client(client, researcher):
    researcher.set_password("pw-for-tests")
    researcher.save()
    assert log_in(client, researcher.username, "pw-for-tests")
    return client


def test_criteria_text_is_read_line_by_line_with_clear_errors():
    assert parse_lines("empathy: More empathetic?\n\nfluency: More fluent?") == [
        {"key": "empathy", "question": "More empathetic?"}, {"key": "fluency", "question": "More fluent?"}]
    for text, message in (("empathy More empathetic?", "key: question"), ("Empathy: X?", "lower-case"),
                          ("a: X?\na: Y?", "used twice"), ("", "at least one")):
        with pytest.raises(PairCriteriaError, match=message):
            parse_lines(text)
    with pytest.raises(PairCriteriaError, match="300"):
        validate([{"key": "a", "question": "x" * 301}])


@pytest.mark.django_db
def test_design_gold_open_and_close(owner_client, rating_study):  # noqa: F811
    for i in range(2):
        add_rater(rating_study, f"r{i}")
    url = reverse("pairwise_design", args=[rating_study.id])
    page = owner_client.get(url)
    assert page.status_code == 200 and "more empathetic and supportive" in page.content.decode()
    bad = owner_client.post(url, {"criteria": "Empathy is good", "judgments_per_pair": 2, "gold_rate": 0,
                                  "reason": "optional"})
    assert bad.status_code == 400 and "key: question" in bad.content.decode()
    assert not PairwisePhase.objects.exists()
    saved = owner_client.post(url, {"criteria": "empathy: Which is kinder?", "judgments_per_pair": 2,
                                    "gold_rate": 0.5, "reason": "none"})
    assert saved.status_code == 302
    phase = PairwisePhase.objects.get(study=rating_study)
    assert phase.criteria == [{"key": "empathy", "question": "Which is kinder?"}] and phase.reason == "none"
    status_url = reverse("pairwise_status", args=[rating_study.id])
    refused = owner_client.post(status_url, {"action": "open"}, follow=True)
    assert "gold pairs" in refused.content.decode()
    gold = owner_client.post(reverse("pairwise_gold_add", args=[rating_study.id]),
                             {"question": "I can't sleep.", "better_text": "That sounds exhausting.",
                              "worse_text": "Sleep more.", "rationale": "The second dismisses it."})
    assert gold.status_code == 302 and GoldPair.objects.filter(study=rating_study).count() == 1
    opened = owner_client.post(status_url, {"action": "open"}, follow=True)
    assert "6 pairs" in opened.content.decode()
    assert PairAssignment.objects.filter(study=rating_study, gold_pair__isnull=False).exists()
    changed = owner_client.post(url, {"criteria": "x: X?", "judgments_per_pair": 1, "gold_rate": 0, "reason": "none"})
    assert changed.status_code == 409
    closed = owner_client.post(status_url, {"action": "close"}, follow=True)
    assert "closed" in closed.content.decode()
    phase.refresh_from_db()
    assert phase.status == PairwisePhase.Status.CLOSED


@pytest.mark.django_db
def test_opening_without_two_arms_is_refused(owner_client, study):
    owner_client.post(reverse("pairwise_design", args=[study.id]),
                      {"criteria": "empathy: Kinder?", "judgments_per_pair": 1, "gold_rate": 0, "reason": "none"})
    page = owner_client.post(reverse("pairwise_status", args=[study.id]), {"action": "open"}, follow=True)
    assert "two arms" in page.content.decode()
    assert PairwisePhase.objects.get(study=study).status == PairwisePhase.Status.DRAFT


@pytest.mark.django_db
def test_clone_copies_the_pairwise_design_and_gold_pairs_as_a_draft(rating_study, researcher):  # noqa: F811
    from evalapp.services import study_clone
    from raters import services

    for i in range(2):
        add_rater(rating_study, f"r{i}")
    services.gold_pair_add(study=rating_study, user=researcher, messages=[{"role": "user", "content": "Help."}],
                           better_text="I'm here with you.", worse_text="No.", rationale="Warmth.")
    services.pair_phase_save(study=rating_study, criteria=[{"key": "empathy", "question": "Kinder?"}],
                             judgments_per_pair=2, gold_rate=0.2, reason="none")
    services.pair_phase_open(study=rating_study)
    copy = study_clone(study=rating_study, owner=researcher)
    phase, original = PairwisePhase.objects.get(study=copy), PairwisePhase.objects.get(study=rating_study)
    assert phase.status == PairwisePhase.Status.DRAFT and phase.design_seed != original.design_seed
    assert (phase.criteria, phase.judgments_per_pair, phase.gold_rate, phase.reason) == (
        original.criteria, 2, 0.2, "none")
    assert list(copy.gold_pairs.values_list("better_text", flat=True)) == ["I'm here with you."]
    assert not copy.response_pairs.exists() and not PairAssignment.objects.filter(study=copy).exists()
