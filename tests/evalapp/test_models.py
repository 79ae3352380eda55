"""Every database constraint, asserted against the real database."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from evalapp.models import Criterion, Score, Study, validate_messages
from raters.models import Role, StudyMembership

from ..factories import (
    ArmFactory,
    MembershipFactory,
    PromptFactory,
    RatingFactory,
    ResponseFactory,
    StudyFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def assert_violates(constraint_name, create):
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        create()
    assert constraint_name in str(excinfo.value)


def test_study_defaults():
    study = StudyFactory()
    assert study.status == Study.Status.DRAFT
    assert [c["question"] for c in study.rubric()] == ["Empathy and Support", "Fluency and Response Quality"]
    assert [(c["min"], c["max"], c["level"]) for c in study.rubric()] == [(1, 10, "interval")] * 2
    assert study.ratings_per_response == 3
    assert study.disagreement_threshold == 3


@pytest.mark.parametrize("value", [0])
def test_study_needs_at_least_one_rating_per_response(value):
    assert_violates("study_ratings_per_response_gte_1", lambda: StudyFactory(ratings_per_response=value))


@pytest.mark.parametrize("value", [0, 21])
def test_study_threshold_inside_scale(value):
    assert_violates("study_disagreement_threshold_in_scale", lambda: StudyFactory(disagreement_threshold=value))


def test_study_status_must_be_known():
    assert_violates("study_status_valid", lambda: StudyFactory(status="launched"))


def test_prompt_external_id_unique_per_study_only():
    prompt = PromptFactory(external_id="q1")
    PromptFactory(external_id="q1")  # another study: allowed
    assert_violates("prompt_unique_external_id_per_study", lambda: PromptFactory(study=prompt.study, external_id="q1"))


def test_prompt_external_id_not_empty():
    assert_violates("prompt_external_id_not_empty", lambda: PromptFactory(external_id=""))


def test_arm_label_and_blind_code_unique_per_study():
    arm = ArmFactory(label="baseline")
    assert_violates("arm_unique_label_per_study", lambda: ArmFactory(study=arm.study, label="baseline"))
    assert_violates(
        "arm_unique_blind_code_per_study", lambda: ArmFactory(study=arm.study, label="other", blind_code=arm.blind_code)
    )


def test_arm_blind_codes_are_random():
    study = StudyFactory()
    codes = {ArmFactory(study=study, label=f"arm{i}").blind_code for i in range(5)}
    assert len(codes) == 5


def test_response_unique_per_prompt_arm_sample():
    response = ResponseFactory()
    ResponseFactory(prompt=response.prompt, arm=response.arm, sample_index=1)
    assert_violates(
        "response_unique_prompt_arm_sample",
        lambda: ResponseFactory(prompt=response.prompt, arm=response.arm, sample_index=0),
    )


def test_response_public_ids_are_opaque():
    prompt = PromptFactory()
    arm = ArmFactory(study=prompt.study)
    ids = [ResponseFactory(prompt=prompt, arm=arm, sample_index=i).public_id for i in range(20)]
    assert len(set(ids)) == 20
    assert all(len(i) >= 16 and not i.isdigit() for i in ids)
    assert ids != sorted(ids)


def test_rating_unique_per_response_and_rater():
    rating = RatingFactory()
    assert_violates(
        "rating_unique_response_rater", lambda: RatingFactory(response=rating.response, rater=rating.rater)
    )


@pytest.mark.parametrize("scale", ["empathy", "fluency"])
@pytest.mark.parametrize("score", [0, 11])
def test_rating_scores_inside_scale(scale, score):
    assert_violates("score_value_in_criterion_range", lambda: RatingFactory(**{scale: score}))


@pytest.mark.parametrize("value", [-1, 3])
def test_choice_scores_inside_their_options(value):
    study = StudyFactory(rubric__preset="counselbench")  # medical_advice: yes (0) / no (1) / not sure
    rating = RatingFactory(response__prompt__study=study)
    rating.scores.all().delete()
    criterion = study.criteria.get(key="medical_advice")
    assert_violates("score_value_in_criterion_range", lambda: Score.objects.create(
        rating=rating, criterion=criterion, value=value, min_value=criterion.min_value, max_value=criterion.max_value))


def test_not_sure_has_no_value_and_a_value_is_not_not_sure():
    study = StudyFactory(rubric__preset="counselbench")
    rating = RatingFactory(response__prompt__study=study, scores={"factual_consistency": None})
    assert rating.scores.get(criterion__key="factual_consistency").not_sure
    score = rating.scores.get(criterion__key="overall")
    assert_violates("score_value_in_criterion_range",
                    lambda: Score.objects.filter(id=score.id).update(not_sure=True))


def test_copied_bounds_must_be_the_criterions():  # the suite runs on PostgreSQL, which holds the composite key
    # Without the composite key a row could carry wider bounds than its criterion and pass the check.
    rating = RatingFactory()
    criterion = rating.response.prompt.study.criteria.get(key="empathy")
    rating.scores.filter(criterion=criterion).delete()
    assert_violates("score_bounds_are_criterions", lambda: Score.objects.create(
        rating=rating, criterion=criterion, value=50, min_value=1, max_value=100))


def test_criterion_bounds_cannot_change_under_its_scores():
    rating = RatingFactory()
    criterion = rating.response.prompt.study.criteria.get(key="empathy")
    criterion.max_value = 5
    assert_violates("score_bounds_are_criterions", lambda: criterion.save())


def test_criterion_needs_min_below_max():
    study = StudyFactory()
    assert_violates("criterion_min_below_max", lambda: Criterion.objects.create(
        study=study, position=9, key="x", question="?", kind="likert", min_value=5, max_value=5, level="interval"))


@pytest.mark.parametrize("score", [1, 10])
def test_rating_scale_ends_are_allowed(score):
    rating = RatingFactory(empathy=score, fluency=score)
    assert rating.pk


def test_rating_seconds_not_negative():
    assert_violates("rating_seconds_non_negative", lambda: RatingFactory(seconds_on_item=-1))


def test_membership_unique_and_role_valid():
    membership = MembershipFactory(role=Role.RATER)
    MembershipFactory(study=membership.study, user=membership.user, role=Role.ADJUDICATOR)
    assert_violates(
        "membership_unique_study_user_role",
        lambda: MembershipFactory(study=membership.study, user=membership.user, role=Role.RATER),
    )
    assert_violates("membership_role_valid", lambda: StudyMembership.objects.create(
        study=membership.study, user=UserFactory(), role="superuser"))


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "assistant", "content": "Hi"}],
        [{"role": "user", "content": "  "}],
        [{"role": "system", "content": "x"}, {"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
    ],
)
def test_messages_validator_rejects(messages):
    with pytest.raises(ValidationError):
        validate_messages(messages)


def test_messages_validator_accepts_multi_turn():
    validate_messages(
        [
            {"role": "user", "content": "I can't sleep."},
            {"role": "assistant", "content": "How long has this been going on?"},
            {"role": "user", "content": "Months."},
        ]
    )


def test_a_study_with_ratings_can_be_deleted_but_not_a_criterion_with_scores():
    from django.db.models import RestrictedError

    rating = RatingFactory()
    study = rating.response.prompt.study
    with pytest.raises(RestrictedError), transaction.atomic():
        study.criteria.get(key="empathy").delete()
    study.delete()  # the cascade through responses, ratings and scores is allowed
    assert not Score.objects.exists() and not Criterion.objects.exists()
