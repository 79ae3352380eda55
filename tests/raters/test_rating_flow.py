"""Invitations, consent, calibration, the stored design, and submitting ratings."""

import re
from collections import Counter

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from evalapp.models import AuditEvent, Rating, Study
from raters import services
from raters.models import Assignment, CalibrationItem, Consent, Invitation, RatingRevision, Role, StudyMembership
from raters.selectors import NextItem, next_item, rater_status
from raters.services import RatingError, Submission

from ..factories import ArmFactory, MembershipFactory, PromptFactory, ResponseFactory, UserFactory, log_in, score_of
from .conftest import add_rater

pytestmark = pytest.mark.django_db


def test_invitation_mail_accept_once(client, study, researcher):
    invitation, token = services.invitation_create(
        study=study, created_by=researcher, role=Role.RATER, email="stu@uni.example",
        accept_url=lambda t: f"http://testserver/invite/{t}/",
    )
    assert Invitation.objects.get().token_sha256 != token  # only the hash is stored
    response = client.post(
        reverse("invitation_accept", args=[token]),
        {"username": "student1", "password1": "a-long-pass-phrase-9", "password2": "a-long-pass-phrase-9"},
    )
    assert response.status_code == 302
    assert StudyMembership.objects.filter(study=study, user__username="student1", role=Role.RATER).exists()
    again = client.get(reverse("invitation_accept", args=[token]))
    assert again.status_code == 410 and "already been used" in again.content.decode()


def test_invitation_list_sends_mail_and_rejects_bad_addresses(client, study, researcher, django_capture_on_commit_callbacks):
    client.force_login(researcher)
    client.post(reverse("raters_invite", args=[study.id]), {"emails": "a@x.org, nonsense", "role": "rater"})
    assert not Invitation.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("raters_invite", args=[study.id]), {"emails": "a@x.org\nb@y.org", "role": "rater"})
    assert Invitation.objects.count() == 2
    assert len(mail.outbox) == 2 and re.search(r"http://testserver/invite/[\w-]+/", mail.outbox[0].body)


@pytest.mark.parametrize("address", ["a@x..org", "<a@x.org>", "a@-x.org", "nonsense"])
def test_invitation_addresses_are_checked_by_djangos_validator(study, researcher, address):
    with pytest.raises(RatingError, match="Not e-mail addresses"):
        services.invitations_create_from_list(study=study, created_by=researcher, role=Role.RATER,
                                              emails_text=f"ok@x.org, {address}", accept_url=lambda t: t)
    assert not Invitation.objects.exists()


def test_expired_and_unknown_invitations(client, study, researcher):
    invitation, token = services.invitation_create(study=study, created_by=researcher, role=Role.RATER)
    Invitation.objects.filter(id=invitation.id).update(expires_at=timezone.now())
    assert client.get(reverse("invitation_accept", args=[token])).status_code == 410
    assert client.get(reverse("invitation_accept", args=["not-a-token"])).status_code == 404


def test_bulk_code_accounts_all_or_nothing(client, study, researcher):
    client.force_login(researcher)
    from django.core.files.uploadedfile import SimpleUploadedFile

    bad = SimpleUploadedFile("codes.csv", b"code\nS001\nS001\nbad code!\n")
    client.post(reverse("raters_bulk_codes", args=[study.id]), {"file": bad})
    assert not StudyMembership.objects.filter(study=study, role=Role.RATER).exists()
    good = SimpleUploadedFile("codes.csv", b"code\nS001\nS002\n")
    response = client.post(reverse("raters_bulk_codes", args=[study.id]), {"file": good})
    rows = response.content.decode().splitlines()
    assert rows[0] == "code,password,login_url" and len(rows) == 3
    code, password, _ = rows[1].split(",")
    assert log_in(client, code, password)


def test_rater_must_consent_then_calibrate_before_rating(client, rating_study, researcher):
    rater = MembershipFactory(study=rating_study, user=UserFactory(username="r1"), role=Role.RATER).user
    CalibrationItem.objects.create(
        study=rating_study, messages=[{"role": "user", "content": "I'm sad."}], response_text="That sounds hard.",
        references={"empathy": 8, "fluency": 9}, rationale="Warm and clear.", created_by=researcher,
    )
    client.force_login(rater)
    assert client.get(reverse("rate", args=[rating_study.id]))["Location"] == reverse("consent", args=[rating_study.id])
    client.post(reverse("consent", args=[rating_study.id]), {"version": "1", "agree": "yes"})
    assert Consent.objects.filter(user=rater).exists()
    assert client.get(reverse("rate", args=[rating_study.id]))["Location"] == reverse("calibration", args=[rating_study.id])

    page = client.get(reverse("calibration", args=[rating_study.id])).content.decode()
    item = CalibrationItem.objects.get()
    assert item.public_id in page and "Warm and clear." not in page
    feedback = client.post(reverse("calibration", args=[rating_study.id]),
                           {"item": item.public_id, "score-empathy": 7, "score-fluency": 9}).content.decode()
    assert "Warm and clear." in feedback
    assert re.search(r"Empathy and Support</td><td><strong>7</strong></td><td><strong>8</strong>", feedback)
    assert rater_status(study=rating_study, user=rater).calibration == "passed"
    assert client.get(reverse("rate", args=[rating_study.id])).status_code == 200


def test_calibration_retry_once_then_researcher_decides(rating_study, researcher):
    rater = MembershipFactory(study=rating_study, role=Role.RATER).user
    item = CalibrationItem.objects.create(
        study=rating_study, messages=[{"role": "user", "content": "Q"}], response_text="A",
        references={"empathy": 9, "fluency": 9}, rationale="r", created_by=researcher,
    )
    for expected in ("retry", "failed"):
        attempt = services.calibration_attempt_start(study=rating_study, rater=rater)
        services.calibration_answer(attempt=attempt, item=item, answers={"empathy": 1, "fluency": 1})
        assert rater_status(study=rating_study, user=rater).calibration == expected
    with pytest.raises(RatingError, match="both calibration attempts"):
        services.calibration_attempt_start(study=rating_study, rater=rater)
    services.calibration_decide(study=rating_study, rater=rater, approve=True)
    assert rater_status(study=rating_study, user=rater).calibration == "approved"


def test_open_for_rating_builds_a_balanced_design(rating_study):
    raters = [add_rater(rating_study, f"r{i}") for i in range(3)]
    n = services.study_open_for_rating(study=rating_study)
    assert n == 12 * 2
    per_response = Counter(Assignment.objects.values_list("response_id", flat=True))
    assert set(per_response.values()) == {2}
    loads = Counter(Assignment.objects.values_list("rater_id", flat=True))
    assert max(loads.values()) - min(loads.values()) <= 1 and set(loads) == {r.id for r in raters}


def submit(study, rater, **kwargs):
    item = next_item(study=study, rater=rater).assignment
    public_id = item.response.public_id
    answers = {"empathy": kwargs.pop("empathy", 7), "fluency": kwargs.pop("fluency", 8)}
    return public_id, services.rating_submit(study=study, rater=rater, item_public_id=public_id,
                                             submission=Submission(answers, **kwargs))


def S(empathy, fluency, **kwargs):  # noqa: N802 - a submission of the default rubric, short for the tables below
    return Submission({"empathy": empathy, "fluency": fluency}, **kwargs)


def test_submit_is_idempotent_and_revisions_are_audited(rating_study):
    rater = add_rater(rating_study, "r1")
    services.study_open_for_rating(study=rating_study)
    public_id, outcome = submit(rating_study, rater)
    assert outcome == "created"
    again = services.rating_submit(study=rating_study, rater=rater, item_public_id=public_id, submission=S(7, 8))
    assert again == "unchanged" and Rating.objects.count() == 1 and not RatingRevision.objects.exists()
    revised = services.rating_submit(study=rating_study, rater=rater, item_public_id=public_id, submission=S(3, 8))
    assert revised == "revised" and score_of(Rating.objects.get(), "empathy") == 3
    revision = RatingRevision.objects.get()
    assert revision.before["scores"]["empathy"][0] == 7 and revision.after["scores"]["empathy"][0] == 3
    assert next_item(study=rating_study, rater=rater).done == 1


def test_bad_submissions_write_nothing(rating_study, outsider):
    rater = add_rater(rating_study, "r1")
    services.study_open_for_rating(study=rating_study)
    item = next_item(study=rating_study, rater=rater).assignment.response.public_id
    for empathy, fluency in [(0, 5), (5, 11), (True, 5)]:
        with pytest.raises(RatingError, match="whole number from 1 to 10"):
            services.rating_submit(study=rating_study, rater=rater, item_public_id=item, submission=S(empathy, fluency))
    with pytest.raises(RatingError, match="unsafe"):
        services.rating_submit(study=rating_study, rater=rater, item_public_id=item,
                               submission=S(5, 5, unsafe=True, unsafe_category=""))
    not_mine = Assignment.objects.exclude(rater=rater).first()
    other = add_rater(rating_study, "r2")
    unassigned = [a.response.public_id for a in Assignment.objects.filter(rater=rater)]
    with pytest.raises(RatingError) as excinfo:
        services.rating_submit(study=rating_study, rater=other, item_public_id="nope", submission=S(5, 5))
    assert excinfo.value.status == 404
    Study.objects.filter(id=rating_study.id).update(status=Study.Status.CLOSED)
    rating_study.refresh_from_db()
    with pytest.raises(RatingError, match="closed") as excinfo:
        services.rating_submit(study=rating_study, rater=rater, item_public_id=item, submission=S(5, 5))
    assert excinfo.value.status == 409
    assert not Rating.objects.exists() and not_mine is None and unassigned


def test_http_submit_errors_are_clear(client, rating_study, clock):
    rater = add_rater(rating_study, "r1")
    services.study_open_for_rating(study=rating_study)
    item = next_item(study=rating_study, rater=rater).assignment.response.public_id
    client.force_login(rater)
    url = reverse("rate_submit", args=[rating_study.id, item])
    bad = client.post(url, {"score-empathy": 11, "score-fluency": 5}, headers={"X-Requested-With": "fetch"})
    assert bad.status_code == 400 and "1 to 10" in bad.content.decode()
    missing = client.post(reverse("rate_submit", args=[rating_study.id, "unknown-id"]), {"score-empathy": 5, "score-fluency": 5},
                          headers={"X-Requested-With": "fetch"})
    assert missing.status_code == 404
    clock.advance(60)  # the server saw a minute pass: the browser's 12.5 s stands
    ok = client.post(url, {"score-empathy": 5, "score-fluency": 6, "seconds": "12.5"}, headers={"X-Requested-With": "fetch"})
    assert ok.status_code == 200 and 'id="rate-item"' in ok.content.decode() and "2 of" in ok.content.decode()
    assert Rating.objects.get().seconds_on_item == 12.5
    twice = client.post(url, {"score-empathy": 5, "score-fluency": 6}, headers={"X-Requested-With": "fetch"})
    assert twice.status_code == 200 and Rating.objects.count() == 1


def test_skip_with_reason(client, rating_study):
    rater = add_rater(rating_study, "r1")
    services.study_open_for_rating(study=rating_study)
    item = next_item(study=rating_study, rater=rater).assignment
    with pytest.raises(RatingError, match="why"):
        services.assignment_skip(study=rating_study, rater=rater, item_public_id=item.response.public_id, reason=" ")
    services.assignment_skip(study=rating_study, rater=rater, item_public_id=item.response.public_id, reason="Not English")
    item.refresh_from_db()
    assert item.completed_at and item.skip_reason == "Not English" and not Rating.objects.exists()


@pytest.mark.parametrize("policy", ["delete", "exclude"])
def test_withdrawal_follows_the_stated_policy(client, rating_study, policy):
    services.consent_publish(study=rating_study, text="v2", withdrawal_policy=policy)
    raters = [add_rater(rating_study, f"r{i}") for i in range(3)]
    services.study_open_for_rating(study=rating_study)
    submit(rating_study, raters[0])
    client.force_login(raters[0])
    client.post(reverse("withdraw", args=[rating_study.id]))
    assert Rating.objects.filter(rater=raters[0]).exists() == (policy == "exclude")
    assert not Assignment.objects.filter(rater=raters[0], completed_at__isnull=True).exists()
    assert client.get(reverse("rate", args=[rating_study.id])).status_code == 404
    # The others now cover every response k times between them.
    active = Assignment.objects.filter(rater__in=raters[1:]).values_list("response_id", flat=True)
    assert set(Counter(active).values()) == {2}


def test_withdrawal_stands_when_the_raters_left_cannot_cover_the_design(client, study):
    """One prompt, two arms, one rating each, two raters: once one withdraws, the other would get both
    replies to one prompt back to back, which no design allows. The withdrawal is the rater's right and
    stands anyway (it was a 500, and rolled back)."""
    prompt = PromptFactory(study=study)
    for label in ("fine-tuned", "baseline"):
        ResponseFactory(prompt=prompt, arm=ArmFactory(study=study, label=label))
    study.ratings_per_response, study.gold_rate = 1, 0
    study.save()
    services.consent_publish(study=study, text="Consent.", withdrawal_policy="exclude")
    raters = [add_rater(study, f"r{i}") for i in range(2)]
    services.study_open_for_rating(study=study)
    client.force_login(raters[0])
    assert client.post(reverse("withdraw", args=[study.id])).status_code == 302
    membership = StudyMembership.objects.get(study=study, user=raters[0], role=Role.RATER)
    assert membership.withdrawn_at is not None
    assert not Assignment.objects.filter(rater=raters[0], completed_at__isnull=True).exists()
    assert AuditEvent.objects.filter(study=study, action="design.rebalance_refused").exists()
    assert Assignment.objects.filter(rater=raters[1], completed_at__isnull=True).exists()  # their queue stays


def test_late_joiner_rebalances_keeping_what_was_rated(rating_study):
    first, second = add_rater(rating_study, "r1"), add_rater(rating_study, "r2")
    services.study_open_for_rating(study=rating_study)
    rated = [submit(rating_study, first)[0] for _ in range(3)]
    late = add_rater(rating_study, "r3")
    services.design_rebalance(study=rating_study)
    assert Assignment.objects.filter(rater=late).exists()
    assert set(Rating.objects.filter(rater=first).values_list("response__public_id", flat=True)) == set(rated)
    per_response = Counter(Assignment.objects.values_list("response_id", flat=True))
    assert set(per_response.values()) == {2}
    assert second  # still in the design


def test_next_item_query_count_is_constant(rating_study, django_assert_num_queries):
    rater = add_rater(rating_study, "r1")
    services.study_open_for_rating(study=rating_study)
    with django_assert_num_queries(1):
        next_item(study=rating_study, rater=rater)
    for prompt in PromptFactory.create_batch(30, study=rating_study):
        for arm in rating_study.arms.all():
            ResponseFactory(prompt=prompt, arm=arm)
    services.design_rebalance(study=rating_study)
    with django_assert_num_queries(1):
        upcoming = next_item(study=rating_study, rater=rater)
    queue = Assignment.objects.filter(study=rating_study, rater=rater)
    assert upcoming.assignment == queue.order_by("position").first()
    assert (upcoming.done, upcoming.total) == (0, queue.count())


def test_next_item_counts_come_with_the_item_and_without_one(rating_study, django_assert_num_queries):
    """The counts ride on the first row of the queue: right midway, and when every item is finished."""
    rater = add_rater(rating_study, "r1")
    services.study_open_for_rating(study=rating_study)
    queue = list(Assignment.objects.filter(study=rating_study, rater=rater).order_by("position"))
    assert len(queue) >= 3
    Assignment.objects.filter(id=queue[1].id).update(completed_at=timezone.now())  # done out of order
    upcoming = next_item(study=rating_study, rater=rater)
    assert (upcoming.assignment, upcoming.done, upcoming.total) == (queue[0], 1, len(queue))
    Assignment.objects.filter(id=queue[0].id).update(completed_at=timezone.now())
    assert next_item(study=rating_study, rater=rater).assignment == queue[2]
    Assignment.objects.filter(rater=rater).update(completed_at=timezone.now())
    with django_assert_num_queries(1):
        done = next_item(study=rating_study, rater=rater)
    assert (done.assignment, done.done, done.total) == (None, len(queue), len(queue))
    nobody = UserFactory()  # no queue in this study
    assert next_item(study=rating_study, rater=nobody) == NextItem(assignment=None, done=0, total=0)


def test_researcher_sees_quality_and_can_exclude(client, rating_study, researcher, clock):
    raters = [add_rater(rating_study, f"r{i}") for i in range(3)]
    services.study_open_for_rating(study=rating_study)
    for _ in range(4):
        clock.advance(5)
        submit(rating_study, raters[0], empathy=10, fluency=10, seconds_on_item=2.0)
    client.force_login(researcher)
    page = client.get(reverse("raters_page", args=[rating_study.id])).content.decode()
    pseudonym = StudyMembership.objects.get(study=rating_study, user=raters[0]).pseudonym
    row = page[page.index(pseudonym):][:400]
    assert "<td>4</td>" in row and "<td>2.0</td>" in row and "<td>1.00</td>" in row  # 4 ratings, 2 s, all 10/10
    client.post(reverse("rater_decide", args=[rating_study.id, raters[0].id]), {"action": "exclude", "reason": "bot-like"})
    membership = StudyMembership.objects.get(study=rating_study, user=raters[0], role=Role.RATER)
    assert membership.excluded_at and membership.excluded_reason == "bot-like"
    assert not Assignment.objects.filter(rater=raters[0], completed_at__isnull=True).exists()


SUBMIT_QUERIES = 4  # session, user; the study, status, criteria and the item with the last activity and
# the welfare settings (one query of four prepared statements); the rating with its scores and the item
# done (one statement) with the next item, its counts and the welfare state (one query of three). 23
# before issue 18, then 13, then 9 (one statement each)
RESUBMIT_QUERIES = 10  # a resubmit: the transaction that reads the rating and its scores to compare


def test_submit_query_count_is_constant(client, rating_study, django_assert_num_queries):
    """A submit and the next item it answers with: the same queries for a study five times larger; a
    resubmit that changes nothing more (the item is done, so the rating is written in a transaction that
    finds the row and reads it with its scores)."""
    rater = add_rater(rating_study, "r1")
    services.study_open_for_rating(study=rating_study)
    services.welfare_save(study=rating_study, actor=rating_study.owner, break_every_items=50)
    client.force_login(rater)

    def post(public_id):
        return client.post(reverse("rate_submit", args=[rating_study.id, public_id]),
                           {"score-empathy": 4, "score-fluency": 6, "seconds": "9"},
                           headers={"X-Requested-With": "fetch"})

    item = next_item(study=rating_study, rater=rater).assignment.response.public_id
    with django_assert_num_queries(SUBMIT_QUERIES):
        assert post(item).status_code == 200
    Study.objects.filter(id=rating_study.id).update(status=Study.Status.DRAFT)
    for prompt in PromptFactory.create_batch(24, study=rating_study):
        for arm in rating_study.arms.all():
            ResponseFactory(prompt=prompt, arm=arm)
    services.design_rebalance(study=rating_study)
    Study.objects.filter(id=rating_study.id).update(status=Study.Status.RATING)
    item = next_item(study=rating_study, rater=rater).assignment.response.public_id
    with django_assert_num_queries(SUBMIT_QUERIES):
        assert "3 of" in post(item).content.decode()
    assert Rating.objects.filter(rater=rater).count() == 2
    with django_assert_num_queries(RESUBMIT_QUERIES):
        assert post(item).status_code == 200
    assert Rating.objects.filter(rater=rater).count() == 2 and not RatingRevision.objects.exists()
