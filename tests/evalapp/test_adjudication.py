"""Queue rules, decisions, the two-adjudicator rule, the audit trail, and who may see what."""

import re

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from evalapp import adjudication as adj
from evalapp.rubric import disagrees
from evalapp.models import Adjudication, AuditEvent, DisagreementRule, SafetyDecision, Study
from raters.models import Assignment, Role, StudyMembership

from ..factories import ArmFactory, MembershipFactory, PromptFactory, RatingFactory, ResponseFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("scores", "rule", "expected"),
    [
        ([5, 6, 8], "range", True),  # range 3 = threshold: in
        ([5, 6, 7], "range", False),  # range 2: out
        ([5], "range", False),  # a single rating never disagrees
        ([1, 10], "sd", True),
        ([5, 6, 6], "sd", False),
    ],
)
def test_needs_adjudication_edges(scores, rule, expected):
    likert = {"kind": "likert", "min": 1, "max": 10}
    assert disagrees(likert, scores, rule=rule, threshold=3, sd_threshold=1.5) is expected


@pytest.mark.parametrize(
    ("criterion", "values", "expected"),
    [
        ({"kind": "choice", "min": 0, "max": 1}, [0, 0, 1], True),  # any disagreement on a choice
        ({"kind": "choice", "min": 0, "max": 1}, [1, 1, None], False),  # "not sure" is left out
        ({"kind": "choice", "min": 0, "max": 1}, [1, None, None], False),  # one real answer never disagrees
        ({"kind": "likert", "min": 0, "max": 2}, [0, 2], True),  # threshold 3 capped at the 0-2 span
        ({"kind": "likert", "min": 0, "max": 2}, [0, 1, 1], False),
        ({"kind": "likert", "min": 1, "max": 4}, [1, 4, None], True),
    ],
)
def test_disagreement_rule_per_criterion_type(criterion, values, expected):
    assert disagrees(criterion, values, rule="range", threshold=3) is expected


@pytest.fixture
def rated(study, adjudicator):
    study.status = Study.Status.RATING
    study.owner.email = "alice@lab.example"
    study.owner.save()
    study.save()
    raters = [MembershipFactory(study=study, role=Role.RATER).user for _ in range(4)]
    prompt = PromptFactory(study=study, topic="anxiety")
    calm = PromptFactory(study=study, topic="grief")
    arm = ArmFactory(study=study, label="fine-tuned")
    split = ResponseFactory(prompt=prompt, arm=arm)
    agreed = ResponseFactory(prompt=calm, arm=arm)
    for rater, empathy in zip(raters[:3], [2, 5, 9], strict=True):
        RatingFactory(response=split, rater=rater, empathy=empathy, fluency=7)
        RatingFactory(response=agreed, rater=rater, empathy=6, fluency=6)
    return {"study": study, "raters": raters, "split": split, "agreed": agreed}


def test_item_enters_the_queue_only_when_its_last_rating_arrives(rated):
    study, split = rated["study"], rated["split"]
    queue = adj.disagreement_queue(study=study)
    assert [(i.response.id, i.scales) for i in queue] == [(split.id, ["empathy"])]
    split.ratings.order_by("-id").first().delete()
    assert adj.disagreement_queue(study=study) == []


def test_ratings_of_excluded_raters_do_not_count(rated):
    study = rated["study"]
    StudyMembership.objects.filter(user=rated["raters"][2]).update(excluded_at=timezone.now())
    assert adj.disagreement_queue(study=study) == []  # only two counted ratings left


def test_sd_rule_and_filters(rated):
    study = rated["study"]
    study.disagreement_rule = DisagreementRule.SD
    study.disagreement_sd = 4
    study.save()
    assert adj.disagreement_queue(study=study) == []
    study.disagreement_sd = 3
    study.save()
    assert len(adj.disagreement_queue(study=study, scale="empathy", topic="anxiety")) == 1
    assert adj.disagreement_queue(study=study, scale="fluency") == []
    assert adj.disagreement_queue(study=study, topic="grief") == []


def test_resolve_records_audits_and_leaves_the_queue(rated, adjudicator):
    study, split = rated["study"], rated["split"]
    with pytest.raises(adj.AdjudicationError, match="1 to 10"):
        adj.adjudication_resolve(study=study, response=split, scale="empathy", adjudicator=adjudicator,
                                 final_score=11, rationale="x")
    with pytest.raises(adj.AdjudicationError, match="rationale"):
        adj.adjudication_resolve(study=study, response=split, scale="empathy", adjudicator=adjudicator,
                                 final_score=5, rationale=" ")
    with pytest.raises(adj.AdjudicationError, match="does not need"):
        adj.adjudication_resolve(study=study, response=rated["agreed"], scale="empathy", adjudicator=adjudicator,
                                 final_score=5, rationale="x")
    adj.adjudication_resolve(study=study, response=split, scale="empathy", adjudicator=adjudicator,
                             final_score=6, rationale="Warm but generic.")
    assert adj.disagreement_queue(study=study) == []
    event = AuditEvent.objects.get(action="adjudication.resolve")
    assert event.actor == adjudicator and event.after["final_score"] == 6
    with pytest.raises(adj.AdjudicationError, match="does not need"):
        adj.adjudication_resolve(study=study, response=split, scale="empathy", adjudicator=adjudicator,
                                 final_score=7, rationale="again")


def test_send_back_assigns_one_more_rating(rated, adjudicator):
    study, split, fourth = rated["study"], rated["split"], rated["raters"][3]
    adj.adjudication_send_back(study=study, response=split, scale="empathy", adjudicator=adjudicator,
                               rationale="Need a tie-breaker.")
    assignment = Assignment.objects.get(response=split)
    assert assignment.rater == fourth
    assert adj.disagreement_queue(study=study) == []  # waits for the extra rating
    RatingFactory(response=split, rater=fourth, empathy=8, fluency=7)
    assert len(adj.disagreement_queue(study=study)) == 1
    assert AuditEvent.objects.filter(action="adjudication.send_back").count() == 1


def flag(rated):
    rating = rated["split"].ratings.first()
    rating.unsafe, rating.unsafe_category = True, "harmful_advice"
    rating.save()


def test_single_adjudicator_settles_safety_and_notifies_on_harmful(rated, adjudicator, django_capture_on_commit_callbacks):
    study, split = rated["study"], rated["split"]
    flag(rated)
    assert [i.response.id for i in adj.safety_queue(study=study)] == [split.id]
    with pytest.raises(adj.AdjudicationError, match="reason"):
        adj.safety_review_submit(study=study, response=split, adjudicator=adjudicator, classification="harmful",
                                 note="n", exclude=True)
    with django_capture_on_commit_callbacks(execute=True):
        decision = adj.safety_review_submit(study=study, response=split, adjudicator=adjudicator,
                                            classification="harmful", note="Advises stopping medication.",
                                            exclude=True, exclusion_reason="dangerous advice")
    assert decision.classification == "harmful" and decision.excluded
    assert adj.safety_queue(study=study) == []
    assert len(mail.outbox) == 1 and split.public_id in mail.outbox[0].body
    assert set(AuditEvent.objects.values_list("action", flat=True)) == {"safety.review", "safety.decide"}


def test_two_adjudicators_must_agree(rated, adjudicator):
    study, split = rated["study"], rated["split"]
    study.safety_two_adjudicators = True
    study.save()
    second = MembershipFactory(study=study, role=Role.ADJUDICATOR).user
    flag(rated)
    assert adj.safety_review_submit(study=study, response=split, adjudicator=adjudicator,
                                    classification="minor", note="a") is None
    assert adj.safety_review_submit(study=study, response=split, adjudicator=second,
                                    classification="harmful", note="b") is None
    assert len(adj.safety_queue(study=study)) == 1  # they disagree: still open
    decision = adj.safety_review_submit(study=study, response=split, adjudicator=adjudicator,
                                        classification="harmful", note="on reflection")
    assert decision.classification == "harmful" and decision.first_reviews_agreed is False
    assert AuditEvent.objects.filter(action="safety.review_revise").count() == 1
    with pytest.raises(adj.AdjudicationError, match="settled"):
        adj.safety_review_submit(study=study, response=split, adjudicator=second, classification="minor", note="c")


def test_non_adjudicators_cannot_decide(rated, rater):
    with pytest.raises(adj.AdjudicationError) as excinfo:
        adj.adjudication_resolve(study=rated["study"], response=rated["split"], scale="empathy", adjudicator=rater,
                                 final_score=5, rationale="x")
    assert excinfo.value.status == 404


def urls(study, response):
    return [
        ("get", reverse("adjudication_queues", args=[study.id])),
        ("get", reverse("adjudication_history", args=[study.id])),
        ("get", reverse("adjudication_item", args=[study.id, response.public_id])),
        ("post", reverse("adjudication_decide", args=[study.id, response.public_id])),
    ]


@pytest.mark.parametrize("persona,allowed", [("researcher", True), ("adjudicator", True), ("rater", False),
                                              ("outsider", False)])
def test_access_matrix(client, personas, rated, persona, allowed):
    client.force_login(personas[persona])
    for method, url in urls(rated["study"], rated["split"]):
        status = getattr(client, method)(url).status_code
        assert (status != 404) is allowed, (persona, url, status)


def test_researcher_member_who_is_not_owner_gets_404(client, rated):
    other = MembershipFactory(study=rated["study"], user=UserFactory(), role=Role.RESEARCHER).user
    client.force_login(other)
    assert client.get(reverse("adjudication_queues", args=[rated["study"].id])).status_code == 404


def test_item_page_hides_the_arm_and_shows_ratings(client, adjudicator, rated):
    client.force_login(adjudicator)
    page = client.get(reverse("adjudication_item", args=[rated["study"].id, rated["split"].public_id])).content.decode()
    assert "fine-tuned" not in page and rated["split"].arm.blind_code not in page
    pseudonym = StudyMembership.objects.get(user=rated["raters"][0]).pseudonym
    assert pseudonym in page and 'id="resolve-empathy"' in page


def test_safety_queue_page_previews_the_question_text(client, adjudicator, rated):
    flag(rated)
    client.force_login(adjudicator)
    page = client.get(reverse("adjudication_queues", args=[rated["study"].id])).content.decode()
    question = rated["split"].prompt.messages[-1]["content"]
    assert question[:40] in page and "&#x27;role&#x27;" not in page and "'role'" not in page


def test_a_flag_from_an_excluded_rater_is_not_reviewed(rated, adjudicator):
    """Which ratings count is one rule: the safety queue and the safety review agree on it."""
    flag(rated)
    study, split = rated["study"], rated["split"]
    flagger = split.ratings.get(unsafe=True).rater
    StudyMembership.objects.filter(study=study, user=flagger).update(excluded_at=timezone.now(), excluded_reason="t")
    assert adj.safety_queue(study=study) == []
    with pytest.raises(adj.AdjudicationError, match="No rater flagged"):
        adj.safety_review_submit(study=study, response=split, adjudicator=adjudicator, classification="minor",
                                 note="n", exclude=False)


def test_resolve_through_the_page(client, adjudicator, rated):
    client.force_login(adjudicator)
    study, split = rated["study"], rated["split"]
    response = client.post(reverse("adjudication_decide", args=[study.id, split.public_id]),
                           {"action": "resolve", "scale": "empathy", "final_score": "5", "rationale": "middle"})
    assert response.status_code == 302
    assert Adjudication.objects.get().final_score == 5
    queues = client.get(reverse("adjudication_queues", args=[study.id])).content.decode()
    assert 'id="disagreement-count">0<' in queues
    assert not SafetyDecision.objects.exists()


def grow(study, raters, n):
    """n more responses, each rated 1, 5 and 10 by three raters: each waits on the empathy scale."""
    arm = study.arms.first()
    responses = []
    for prompt in PromptFactory.create_batch(n, study=study):
        responses.append(ResponseFactory(prompt=prompt, arm=arm))
        for rater, empathy in zip(raters[:3], [1, 5, 10], strict=True):
            RatingFactory(response=responses[-1], rater=rater, empathy=empathy, fluency=7)
    return responses


def whole_study_reads(queries) -> list[str]:
    """Queries that read ratings without naming one response: a rescan of the study."""
    return [q["sql"] for q in queries
            if 'FROM "evalapp_rating"' in q["sql"] and not re.search(r'"evalapp_rating"\."response_id" = \d', q["sql"])]


def decide(client, study, response, **data):
    return client.post(reverse("adjudication_decide", args=[study.id, response.public_id]), data)


def test_an_item_and_its_decisions_cost_the_same_in_a_ten_times_bigger_study(
        client, adjudicator, rated, django_assert_max_num_queries, django_assert_num_queries):
    study, raters = rated["study"], rated["raters"]
    client.force_login(adjudicator)
    small = grow(study, raters, 4)
    costs = {}
    for name, response, data in [
        ("page", small[0], None),
        ("resolve", small[1], {"action": "resolve", "scale": "empathy", "final_score": "5", "rationale": "middle"}),
        ("safety", small[2], {"action": "safety", "classification": "minor", "note": "blunt"}),
    ]:
        if name == "safety":
            response.ratings.update(unsafe=True, unsafe_category="harmful_advice")
        with django_assert_max_num_queries(20) as counted:
            if data is None:
                assert client.get(reverse("adjudication_item", args=[study.id, response.public_id])).status_code == 200
            else:
                assert decide(client, study, response, **data).status_code == 302
        costs[name] = len(counted)
        assert whole_study_reads(counted.captured_queries) == [], name

    big = grow(study, raters, 40)  # ten times the responses and ratings
    assert Adjudication.objects.count() == 1 and SafetyDecision.objects.count() == 1
    with django_assert_num_queries(costs["page"]) as page:
        client.get(reverse("adjudication_item", args=[study.id, big[0].public_id]))
    with django_assert_num_queries(costs["resolve"]) as resolve:
        decide(client, study, big[1], action="resolve", scale="empathy", final_score="5", rationale="middle")
    big[2].ratings.update(unsafe=True, unsafe_category="harmful_advice")
    with django_assert_num_queries(costs["safety"]) as safety:
        decide(client, study, big[2], action="safety", classification="minor", note="blunt")
    assert whole_study_reads(page.captured_queries + resolve.captured_queries + safety.captured_queries) == []
    assert Adjudication.objects.count() == 2 and SafetyDecision.objects.count() == 2
