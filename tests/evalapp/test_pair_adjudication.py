"""Pairs whose raters found no majority go to the adjudicators; their final verdicts are recorded once."""

import pytest
from django.urls import reverse

from evalapp import pair_adjudication as pair_adj
from evalapp.models import AuditEvent, PairAdjudication, ResponsePair
from evalapp.pair_rubric import majority, needs_adjudication
from raters import services
from raters.models import PairAssignment

from ..factories import log_in
from ..raters.conftest import add_rater, rating_study  # noqa: F401 (the fixture)

PICKS = {"first": None, "second": None, "tie": "same"}


def _judge(study, rater, pair, verdict, key_verdicts=None):
    """Submit what a rater would press to give `verdict` (in the pair's terms) on every question."""
    assignment = PairAssignment.objects.get(rater=rater, pair=pair)
    if verdict == "tie":
        pick = "same"
    else:
        pick = "a" if (verdict == "first") == assignment.first_on_left else "b"
    services.pair_judgment_submit(study=study, rater=rater, item_public_id=pair.public_id,
                                  submission=services.PairSubmission(answers={"empathy": pick, "fluency": pick}))


@pytest.fixture
def split_pair(rating_study):  # noqa: F811
    raters = [add_rater(rating_study, f"r{i}") for i in range(3)]
    services.pair_phase_save(study=rating_study, criteria=[{"key": "empathy", "question": "More empathetic?"},
                                                           {"key": "fluency", "question": "More fluent?"}],
                             judgments_per_pair=3, gold_rate=0, reason="optional")
    services.pair_phase_open(study=rating_study)
    pair = ResponsePair.objects.filter(study=rating_study).first()
    for rater, verdict in zip(raters, ("first", "second", "tie"), strict=True):
        _judge(rating_study, rater, pair, verdict)
    return rating_study, pair, raters


def test_the_rule_is_a_strict_majority():
    assert majority(["first", "first", "second"]) == "first"
    assert majority(["first", "second"]) is None
    assert majority(["tie", "tie", "first"]) == "tie"
    assert needs_adjudication(["first", "second", "tie"])
    assert not needs_adjudication(["first"])  # one judgment is not a disagreement
    assert not needs_adjudication(["second", "second", "tie"])


@pytest.mark.django_db
def test_a_split_pair_waits_for_adjudication_until_resolved(split_pair, researcher):
    study, pair, _ = split_pair
    queue = pair_adj.pair_queue(study=study)
    assert [(item.pair.id, item.keys) for item in queue] == [(pair.id, ["empathy", "fluency"])]
    assert sorted(v for j in queue[0].judgments for v in j["verdicts"].values()) == sorted(
        ["first", "second", "tie"] * 2)
    pair_adj.pair_adjudication_resolve(study=study, pair=pair, key="empathy", adjudicator=researcher,
                                       verdict="first", rationale="A names the feeling.")
    assert pair_adj.pair_queue(study=study)[0].keys == ["fluency"]
    assert AuditEvent.objects.filter(action="pair_adjudication.resolve").count() == 1
    with pytest.raises(pair_adj.PairAdjudicationError) as exc:
        pair_adj.pair_adjudication_resolve(study=study, pair=pair, key="empathy", adjudicator=researcher,
                                           verdict="second", rationale="again")
    assert exc.value.status == 409
    assert PairAdjudication.objects.count() == 1


@pytest.mark.django_db
def test_bad_decisions_are_refused(split_pair, researcher):
    study, pair, raters = split_pair
    with pytest.raises(pair_adj.PairAdjudicationError, match="Choose"):
        pair_adj.pair_adjudication_resolve(study=study, pair=pair, key="empathy", adjudicator=researcher,
                                           verdict="left", rationale="x")
    with pytest.raises(pair_adj.PairAdjudicationError, match="rationale"):
        pair_adj.pair_adjudication_resolve(study=study, pair=pair, key="empathy", adjudicator=researcher,
                                           verdict="first", rationale="  ")
    with pytest.raises(pair_adj.PairAdjudicationError) as exc:
        pair_adj.pair_adjudication_resolve(study=study, pair=pair, key="empathy", adjudicator=raters[0],
                                           verdict="first", rationale="I rated it")
    assert exc.value.status == 404
    assert not PairAdjudication.objects.exists()


@pytest.mark.django_db
def test_withdrawn_raters_judgments_stop_counting_in_the_queue(split_pair):
    study, pair, raters = split_pair
    services.consent_withdraw(study=study, user=raters[2])  # the "tie": first against second is left
    assert pair_adj.pair_queue(study=study)[0].keys == ["empathy", "fluency"]
    services.consent_withdraw(study=study, user=raters[1])  # one judgment left: no disagreement
    assert pair_adj.pair_queue(study=study) == []


@pytest.mark.django_db
def test_the_adjudicator_decides_on_the_page_blind_to_arms(client, split_pair, adjudicator):
    study, pair, _ = split_pair
    adjudicator.set_password("pw-for-tests")
    adjudicator.save()
    assert log_in(client, adjudicator.username, "pw-for-tests")
    queues = client.get(reverse("adjudication_queues", args=[study.id])).content.decode()
    assert reverse("adjudication_pair", args=[study.id, pair.public_id]) in queues
    page = client.get(reverse("adjudication_pair", args=[study.id, pair.public_id]))
    body = page.content.decode()
    assert page.status_code == 200 and "About the same" in body
    for arm in study.arms.all():
        assert arm.blind_code not in body and "secret-ft" not in body
    posted = client.post(reverse("adjudication_pair", args=[study.id, pair.public_id]),
                         {"key": "fluency", "verdict": "tie", "rationale": "Both read well."})
    assert posted.status_code == 302
    assert PairAdjudication.objects.get(pair=pair, key="fluency").verdict == "tie"
    refused = client.post(reverse("adjudication_pair", args=[study.id, pair.public_id]),
                          {"key": "fluency", "verdict": "first", "rationale": "changed my mind"}, follow=True)
    assert "already resolved" in refused.content.decode()
