"""What the rating design takes as input: who can rate (joining rebalances), the study's k as the
raters allow it (the queue waits for that k, no more), and the extra ratings adjudicators ask for."""

from collections import Counter

import pytest

from evalapp import adjudication as adj
from raters import services
from raters.models import Assignment, Role
from raters.selectors import next_item, rater_status
from raters.services import Submission

from ..factories import MembershipFactory, UserFactory
from .conftest import add_rater

pytestmark = pytest.mark.django_db


def rate_all(study, rater, scores):
    """The rater rates every item in their queue; `scores` maps response id -> empathy (default 5)."""
    for assignment in Assignment.objects.filter(study=study, rater=rater, completed_at__isnull=True):
        empathy = scores.get(assignment.response_id, 5)
        services.rating_submit(study=study, rater=rater, item_public_id=assignment.response.public_id,
                               submission=Submission({"empathy": empathy, "fluency": 5}))


def two_raters_disagree(study):
    """Two raters open the study and rate all of it; on one response they are far apart."""
    first, second = add_rater(study, "r1"), add_rater(study, "r2")
    services.study_open_for_rating(study=study)
    split = Assignment.objects.filter(study=study, rater=first).first().response
    rate_all(study, first, {split.id: 1})
    rate_all(study, second, {split.id: 9})
    return first, second, split


def test_consenting_to_an_open_study_without_calibration_gives_work(rating_study):
    """Bug 7: consent and invitation acceptance never rebalanced, so a late joiner got nothing."""
    add_rater(rating_study, "r1"), add_rater(rating_study, "r2")
    services.study_open_for_rating(study=rating_study)
    late = add_rater(rating_study, "r3")
    assert rater_status(study=rating_study, user=late).can_rate
    assert Assignment.objects.filter(study=rating_study, rater=late).exists()
    per_response = Counter(Assignment.objects.filter(study=rating_study).values_list("response_id", flat=True))
    assert set(per_response.values()) == {2}


def test_accepting_an_invitation_to_a_study_without_consent_gives_work(rating_study, researcher):
    rating_study.consent_versions.all().delete()  # no consent text: membership alone makes a rater eligible
    join_first = MembershipFactory(study=rating_study, role=Role.RATER).user
    services.study_open_for_rating(study=rating_study)
    assert Assignment.objects.filter(rater=join_first).exists()
    _, token = services.invitation_create(study=rating_study, created_by=researcher, role=Role.RATER)
    invited = UserFactory(username="invited")
    services.invitation_accept(token=token, user=invited)
    assert Assignment.objects.filter(study=rating_study, rater=invited).exists()


def test_queue_waits_for_the_k_the_design_can_meet(rating_study):
    """Bug 8: with two raters and three ratings per response, the design asks for two; so must the queue."""
    rating_study.ratings_per_response = 3
    rating_study.save()
    _, _, split = two_raters_disagree(rating_study)
    assert Assignment.objects.filter(response=split).count() == 2
    assert [item.response.id for item in adj.disagreement_queue(study=rating_study)] == [split.id]


def test_a_send_back_survives_a_rebalance(rating_study, adjudicator):
    """Bug 3: the send-back's extra assignment was a hand-made row that the next rebalance deleted."""
    first, second, split = two_raters_disagree(rating_study)
    add_rater(rating_study, "r3")  # someone who has not rated it yet
    adj.adjudication_send_back(study=rating_study, response=split, scale="empathy", adjudicator=adjudicator,
                               rationale="Need a tie-breaker.")
    assert adj.disagreement_queue(study=rating_study) == []  # it waits for the extra rating
    add_rater(rating_study, "r4")
    services.design_rebalance(study=rating_study)  # a rater joining rebalances; say it outright as well

    extra = Assignment.objects.filter(response=split, completed_at__isnull=True)
    assert extra.count() == 1
    tie_breaker = extra.get().rater
    assert tie_breaker not in (first, second) and rater_status(study=rating_study, user=tie_breaker).can_rate
    rate_all(rating_study, tie_breaker, {split.id: 5})
    [item] = adj.disagreement_queue(study=rating_study)
    assert item.response.id == split.id and len(item.ratings) == 3


def test_eligible_raters_is_one_query_whatever_the_number_of_raters(rating_study, django_assert_num_queries):
    for i in range(3):
        add_rater(rating_study, f"few{i}")
    with django_assert_num_queries(1):
        assert len(services.eligible_raters(rating_study)) == 3
    for i in range(30):
        add_rater(rating_study, f"many{i}")
    MembershipFactory(study=rating_study, role=Role.RATER)  # no consent yet: not eligible
    with django_assert_num_queries(1):
        assert len(services.eligible_raters(rating_study)) == 33


def test_a_send_back_nobody_can_take_is_refused_and_leaves_nothing(rating_study, adjudicator):
    _, _, split = two_raters_disagree(rating_study)
    with pytest.raises(adj.AdjudicationError, match="already rated this item") as excinfo:
        adj.adjudication_send_back(study=rating_study, response=split, scale="empathy", adjudicator=adjudicator,
                                   rationale="Need a tie-breaker.")
    assert excinfo.value.status == 409
    assert not split.adjudications.exists()
    assert [item.response.id for item in adj.disagreement_queue(study=rating_study)] == [split.id]


def test_the_item_on_a_raters_screen_survives_a_rebalance(rating_study):
    """Joining now rebalances, so a rebalance must not take away the item a rater is looking at:
    their submission of it would otherwise be refused and the rating lost."""
    first, second = add_rater(rating_study, "r1"), add_rater(rating_study, "r2")
    services.study_open_for_rating(study=rating_study)
    shown = {}
    for rater in (first, second):
        # Each rater has rated one item and has the next one on screen.
        done = Assignment.objects.filter(study=rating_study, rater=rater).order_by("position").first()
        services.rating_submit(study=rating_study, rater=rater, item_public_id=done.response.public_id,
                               submission=Submission({"empathy": 5, "fluency": 5}))
        shown[rater] = next_item(study=rating_study, rater=rater).assignment.response.public_id

    for n in range(3, 6):  # late joiners, each one a rebalance
        add_rater(rating_study, f"r{n}")

    for rater, public_id in shown.items():
        assert next_item(study=rating_study, rater=rater).assignment.response.public_id == public_id
        services.rating_submit(study=rating_study, rater=rater, item_public_id=public_id,
                               submission=Submission({"empathy": 6, "fluency": 6}))
    # The design still asks exactly k ratings of every response.
    assigned = Counter(Assignment.objects.filter(study=rating_study, response__isnull=False)
                       .values_list("response_id", flat=True))
    assert set(assigned.values()) == {rating_study.ratings_per_response}
