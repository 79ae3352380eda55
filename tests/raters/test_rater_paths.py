"""Where each person lands and what they are told: an adjudicator's invitation, a calibration
attempt's result, the confirmation before a study opens, and rationales in front of adjudicators."""

import pytest
from django.urls import reverse

from evalapp import adjudication as adj
from evalapp.models import Study
from evalapp.services import study_create
from raters import services
from raters.models import CalibrationItem, Role

from ..factories import ArmFactory, MembershipFactory, PromptFactory, RatingFactory, ResponseFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_an_adjudicators_invitation_lands_on_the_queues(client, study, researcher):
    _, token = services.invitation_create(study=study, created_by=researcher, role=Role.ADJUDICATOR)
    client.force_login(UserFactory(username="dr-new"))
    response = client.post(reverse("invitation_accept", args=[token]))
    assert response["Location"] == reverse("adjudication_queues", args=[study.id])
    assert client.get(response["Location"]).status_code == 200


def test_a_calibration_attempt_says_whether_it_passed(client, study, researcher, rater):
    services.consent_publish(study=study, text="Consent.", withdrawal_policy="exclude")
    services.consent_accept(study=study, user=rater, version=study.consent_versions.first())
    item = CalibrationItem.objects.create(study=study, messages=[{"role": "user", "content": "Hi"}],
                                          response_text="Hello", references={"empathy": 9, "fluency": 9},
                                          rationale="r", created_by=researcher)
    client.force_login(rater)
    page = client.post(reverse("calibration", args=[study.id]),
                       {"item": item.public_id, "score-empathy": 1, "score-fluency": 1}).content.decode()
    assert 'id="attempt-result"' in page and "Not passed this time" in page and "8.00" in page
    assert "You may try once more" in page


def test_opening_needs_a_confirmation(client, study, researcher):
    ResponseFactory(prompt__study=study)
    client.force_login(researcher)
    client.post(reverse("open_for_rating", args=[study.id]))
    assert Study.objects.get(id=study.id).status == Study.Status.DRAFT
    client.post(reverse("open_for_rating", args=[study.id]), {"confirm": "yes"})
    assert Study.objects.get(id=study.id).status == Study.Status.RATING


def test_adjudicators_read_the_raters_rationales(researcher):
    study = study_create(owner=researcher, title="E", preset="epitome", ratings_per_response=2)
    Study.objects.filter(id=study.id).update(status=Study.Status.RATING)
    response = ResponseFactory(prompt=PromptFactory(study=study), arm=ArmFactory(study=study))
    raters = [MembershipFactory(study=study, role=Role.RATER).user for _ in range(2)]
    for rater, value in zip(raters, (0, 2), strict=True):
        rating = RatingFactory(response=response, rater=rater, scores={"emotional_reactions": value})
        rating.scores.filter(criterion__key="emotional_reactions").update(rationale=f"because {value}")
    review = adj.item_review(study=Study.objects.get(id=study.id), response=response)
    assert review.scales == ["emotional_reactions"]
    assert sorted(v.cells[0]["rationale"] for v in review.ratings) == ["because 0", "because 2"]


def test_without_a_mail_server_the_researcher_gets_the_links(client, study, researcher):
    client.force_login(researcher)
    page = client.post(reverse("raters_invite", args=[study.id]), {"emails": "a@lab.example", "role": "rater"},
                       follow=True).content.decode()
    assert "E-mail is not configured" in page and "a@lab.example: http://testserver/invite/" in page


def test_a_user_can_change_the_one_time_password(client, researcher):
    client.force_login(researcher)
    assert client.get("/accounts/password_change/").status_code == 200


def test_revised_at_is_empty_unless_the_rater_changed_the_rating(rating_study):
    from evalapp.exports.tables import RATING_HEADER, rating_rows
    from raters.selectors import next_item

    from .conftest import add_rater

    rater = add_rater(rating_study, "r1")
    services.study_open_for_rating(study=rating_study)
    first = next_item(study=rating_study, rater=rater).assignment.response.public_id
    for answers in ({"empathy": 5, "fluency": 5}, {"empathy": 6, "fluency": 5}):  # submitted, then revised
        services.rating_submit(study=rating_study, rater=rater, item_public_id=first,
                               submission=services.Submission(answers))
    second = next_item(study=rating_study, rater=rater).assignment.response.public_id
    services.rating_submit(study=rating_study, rater=rater, item_public_id=second,
                           submission=services.Submission({"empathy": 5, "fluency": 5}))
    col, rid = RATING_HEADER.index("revised_at"), RATING_HEADER.index("response_id")
    revised = {row[rid]: row[col] for row in rating_rows(rating_study, chunk_size=8)}
    assert revised[first] and revised[second] == ""


def test_gold_items_are_never_shown_in_calibration(client, study, researcher, rater):
    """A gold item's reference must stay unknown to raters: calibration never offers it."""
    from raters.selectors import rater_status

    services.consent_publish(study=study, text="Consent.", withdrawal_policy="exclude")
    services.consent_accept(study=study, user=rater, version=study.consent_versions.first())
    gold = CalibrationItem.objects.create(study=study, messages=[{"role": "user", "content": "Gold?"}],
                                          response_text="Gold reply", references={"empathy": 2, "fluency": 2},
                                          rationale="secret", created_by=researcher, use_as_gold=True)
    assert rater_status(study=study, user=rater).calibration == "none"  # gold only: nothing to calibrate on
    CalibrationItem.objects.create(study=study, messages=[{"role": "user", "content": "Hi"}], response_text="Hello",
                                   references={"empathy": 8, "fluency": 8}, rationale="warm", created_by=researcher)
    client.force_login(rater)
    page = client.get(reverse("calibration", args=[study.id])).content.decode()
    assert "Hello" in page and "Gold reply" not in page and "Item 1 of 1" in page
    attempt = services.calibration_attempt_start(study=study, rater=rater)
    with pytest.raises(services.RatingError):
        services.calibration_answer(attempt=attempt, item=gold, answers={"empathy": 2, "fluency": 2})
