"""The pairwise phase end to end at the service and page level: design, open, queues, judge, revise, close."""

from collections import Counter

import pytest
from django.urls import reverse

from evalapp.models import AuditEvent, PairJudgment, PairVerdict, PairwisePhase, ResponsePair
from raters import services
from raters.counting import counted_pair_judgments
from raters.models import PairAssignment, PairGoldAnswer

from ..factories import ArmFactory, PromptFactory, ResponseFactory, log_in
from .conftest import add_rater


def _open(study, k=2, gold_rate=0.0, criteria=None):
    services.pair_phase_save(study=study, criteria=criteria or [{"key": "empathy", "question": "More empathetic?"},
                                                                 {"key": "fluency", "question": "More fluent?"}],
                             judgments_per_pair=k, gold_rate=gold_rate, reason="optional")
    return services.pair_phase_open(study=study)


def _answer(study, rater, assignment, pick="a", reason=""):
    public = assignment.pair.public_id if assignment.pair_id else assignment.gold_pair.public_id
    return services.pair_judgment_submit(study=study, rater=rater, item_public_id=public,
                                         submission=services.PairSubmission(
                                             answers={"empathy": pick, "fluency": pick}, reason=reason))


@pytest.mark.django_db
def test_open_writes_one_pair_per_prompt_and_balanced_queues(rating_study):
    raters = [add_rater(rating_study, f"r{i}") for i in range(4)]
    assert _open(rating_study, k=2) == 6
    assert ResponsePair.objects.filter(study=rating_study).count() == 6
    per_pair = Counter(PairAssignment.objects.filter(study=rating_study).values_list("pair_id", flat=True))
    assert set(per_pair.values()) == {2}
    loads = Counter(PairAssignment.objects.filter(study=rating_study).values_list("rater_id", flat=True))
    assert sorted(loads.values()) == [3, 3, 3, 3]
    for pair_id in per_pair:
        sides = list(PairAssignment.objects.filter(pair_id=pair_id).values_list("first_on_left", flat=True))
        assert sorted(sides) == [False, True]
    assert {r.id for r in raters} == set(loads)


@pytest.mark.django_db
def test_three_arms_compare_every_pair_of_arms_equally(rating_study):
    third = ArmFactory(study=rating_study, label="third")
    for prompt in rating_study.prompts.all():
        ResponseFactory(prompt=prompt, arm=third, text=f"third to {prompt.external_id}")
    for i in range(3):
        add_rater(rating_study, f"r{i}")
    assert _open(rating_study, k=1) == 18
    arms = Counter(ResponsePair.objects.filter(study=rating_study).values_list("first__arm_id", "second__arm_id"))
    assert len(arms) == 3 and set(arms.values()) == {6}


@pytest.mark.django_db
def test_verdicts_are_stored_in_the_pairs_terms_and_resubmission_is_idempotent(rating_study):
    rater = add_rater(rating_study, "r0")
    add_rater(rating_study, "r1")
    _open(rating_study, k=2)
    assignment = PairAssignment.objects.filter(study=rating_study, rater=rater).order_by("position").first()
    assert _answer(rating_study, rater, assignment, "a") == "created"
    assert _answer(rating_study, rater, assignment, "a") == "unchanged"
    judgment = PairJudgment.objects.get(pair=assignment.pair, rater=rater)
    expected = "first" if assignment.first_on_left else "second"
    assert set(judgment.verdicts.values_list("verdict", flat=True)) == {expected}
    assert judgment.first_on_left == assignment.first_on_left
    assert _answer(rating_study, rater, assignment, "same", reason="close call") == "revised"
    assert set(PairVerdict.objects.filter(judgment=judgment).values_list("verdict", flat=True)) == {"tie"}
    assert AuditEvent.objects.filter(action="pair_judgment.revise").count() == 1
    assignment.refresh_from_db()
    assert assignment.completed_at is not None


@pytest.mark.django_db
def test_bad_answers_are_refused_with_what_is_missing(rating_study):
    rater = add_rater(rating_study, "r0")
    add_rater(rating_study, "r1")
    _open(rating_study, k=2)
    assignment = PairAssignment.objects.filter(rater=rater).first()
    with pytest.raises(services.RatingError, match="More fluent"):
        services.pair_judgment_submit(study=rating_study, rater=rater, item_public_id=assignment.pair.public_id,
                                      submission=services.PairSubmission(answers={"empathy": "a"}))
    with pytest.raises(services.RatingError, match="a, b or same"):
        services.pair_judgment_submit(study=rating_study, rater=rater, item_public_id=assignment.pair.public_id,
                                      submission=services.PairSubmission(answers={"empathy": "a", "fluency": "left"}))
    with pytest.raises(services.RatingError) as exc:
        services.pair_judgment_submit(study=rating_study, rater=rater, item_public_id="nope",
                                      submission=services.PairSubmission(answers={"empathy": "a", "fluency": "a"}))
    assert exc.value.status == 404
    assert not PairJudgment.objects.exists()


@pytest.mark.django_db
def test_design_is_fixed_once_open_and_closing_stops_judgments(rating_study):
    rater = add_rater(rating_study, "r0")
    add_rater(rating_study, "r1")
    _open(rating_study, k=2)
    with pytest.raises(services.RatingError, match="fixed"):
        services.pair_phase_save(study=rating_study, criteria=[{"key": "x", "question": "X?"}], judgments_per_pair=1,
                                 gold_rate=0, reason="none")
    services.pair_phase_close(study=rating_study)
    assignment = PairAssignment.objects.filter(rater=rater).first()
    with pytest.raises(services.RatingError, match="closed"):
        _answer(rating_study, rater, assignment)


@pytest.mark.django_db
def test_late_rater_gets_work_and_withdrawn_raters_judgments_stop_counting(rating_study):
    first = add_rater(rating_study, "r0")
    add_rater(rating_study, "r1")
    _open(rating_study, k=2)
    for a in PairAssignment.objects.filter(rater=first).order_by("position")[:2]:
        _answer(rating_study, first, a)
    late = add_rater(rating_study, "late")
    assert PairAssignment.objects.filter(rater=late).exists()
    # Completed work is kept; every pair still has k raters among those who count.
    per_pair = Counter(PairAssignment.objects.filter(study=rating_study).values_list("pair_id", flat=True))
    assert set(per_pair.values()) == {2}


@pytest.mark.django_db
def test_gold_pairs_are_mixed_in_and_scored(rating_study, researcher):
    rater = add_rater(rating_study, "r0")
    add_rater(rating_study, "r1")
    services.gold_pair_add(study=rating_study, user=researcher,
                           messages=[{"role": "user", "content": "I lost my job and feel worthless."}],
                           better_text="That sounds painful. Losing a job can shake how we see ourselves.",
                           worse_text="Just get another one.", rationale="The second dismisses the feeling.")
    _open(rating_study, k=2, gold_rate=0.5)
    gold = PairAssignment.objects.filter(rater=rater, gold_pair__isnull=False).first()
    assert gold is not None
    _answer(rating_study, rater, gold, "a" if gold.first_on_left else "b")
    assert PairGoldAnswer.objects.get(assignment=gold).correct


@pytest.mark.django_db
def test_compare_page_is_blind_and_keyboard_ready(client, rating_study, clock):
    add_rater(rating_study, "r1")
    rater = add_rater(rating_study, "r0")
    rater.set_password("pw-for-tests")
    rater.save()
    _open(rating_study, k=2)
    assert log_in(client, "r0", "pw-for-tests")
    page = client.get(reverse("compare", args=[rating_study.id]))
    body = page.content.decode()
    assert page.status_code == 200
    assert "Response A" in body and "Response B" in body and 'data-key="s"' in body
    # The fixture's texts name their arm ("Reply from fine-tuned ..."); nothing else may.
    for text in rating_study.prompts.values_list("responses__text", flat=True):
        body = body.replace(str(text), "")
    for secret in ("fine-tuned", "baseline", "secret-ft", *rating_study.arms.values_list("blind_code", flat=True)):
        assert secret not in body
    first = PairAssignment.objects.filter(rater=rater).order_by("position").first()
    clock.advance(30)  # more than the browser's 4.2 s: it stands
    posted = client.post(reverse("compare_submit", args=[rating_study.id, first.pair.public_id]),
                         {"pick-empathy": "b", "pick-fluency": "same", "seconds": "4.2"})
    assert posted.status_code == 302
    judgment = PairJudgment.objects.get(rater=rater)
    assert judgment.seconds_on_item == pytest.approx(4.2)
    assert dict(judgment.verdicts.values_list("key", "verdict")) == {
        "empathy": "second" if first.first_on_left else "first", "fluency": "tie"}


@pytest.mark.django_db
def test_phase_draft_is_not_shown_to_raters(client, rating_study):
    rater = add_rater(rating_study, "r0")
    rater.set_password("pw-for-tests")
    rater.save()
    assert log_in(client, "r0", "pw-for-tests")
    assert client.get(reverse("compare", args=[rating_study.id])).status_code == 404
    PairwisePhase.objects.create(study=rating_study)
    assert client.get(reverse("compare", args=[rating_study.id])).status_code == 404


@pytest.mark.django_db
def test_withdrawal_under_the_delete_policy_deletes_pair_judgments_and_queues(rating_study):
    services.consent_publish(study=rating_study, text="Delete on withdrawal.", withdrawal_policy="delete")
    version = rating_study.consent_versions.order_by("-version").first()
    raters = [add_rater(rating_study, f"r{i}") for i in range(3)]
    for rater in raters:
        services.consent_accept(study=rating_study, user=rater, version=version)
    _open(rating_study, k=2)
    leaving = raters[0]
    first = PairAssignment.objects.filter(rater=leaving).order_by("position").first()
    _answer(rating_study, leaving, first)
    _answer(rating_study, leaving, first, "b")  # a revision, audited with its verdicts
    services.consent_withdraw(study=rating_study, user=leaving)
    assert not PairJudgment.objects.filter(rater=leaving).exists()
    assert not PairAssignment.objects.filter(rater=leaving).exists()
    revision = AuditEvent.objects.get(action="pair_judgment.revise")
    assert revision.before is None and "redacted" in revision.after
    # The two raters left cover every pair twice again.
    per_pair = Counter(PairAssignment.objects.filter(study=rating_study).values_list("pair_id", flat=True))
    assert set(per_pair.values()) == {2} and len(per_pair) == 6


@pytest.mark.django_db
def test_an_excluded_rater_loses_open_pairs_and_keeps_judged_ones(rating_study, researcher):
    raters = [add_rater(rating_study, f"r{i}") for i in range(3)]
    _open(rating_study, k=2)
    first = PairAssignment.objects.filter(rater=raters[0]).order_by("position").first()
    _answer(rating_study, raters[0], first)
    services.rater_exclude(study=rating_study, rater=raters[0], reason="straight-lining", actor=researcher)
    assert list(PairAssignment.objects.filter(rater=raters[0]).values_list("id", flat=True)) == [first.id]
    assert PairJudgment.objects.filter(rater=raters[0]).exists()  # kept, marked, not counted
    assert not counted_pair_judgments(rating_study).filter(rater=raters[0]).exists()


@pytest.mark.django_db
def test_the_rate_page_leads_on_to_the_comparisons_once_the_queue_is_done(client, rating_study, researcher):
    rater = add_rater(rating_study, "r0")
    add_rater(rating_study, "r1")
    services.study_open_for_rating(study=rating_study)
    client.force_login(rater)
    rate = reverse("rate", args=[rating_study.id])
    while (slot := rater.assignments.filter(study=rating_study, completed_at__isnull=True).first()) is not None:
        assert "go-comparing" not in client.get(rate).content.decode()
        services.rating_submit(study=rating_study, rater=rater, item_public_id=slot.response.public_id,
                               submission=services.Submission({"empathy": 5, "fluency": 5}))
    assert "go-comparing" not in client.get(rate).content.decode()  # no pairwise phase open yet
    _open(rating_study, k=2)
    body = client.get(rate).content.decode()
    # Not "all done" while comparisons remain: how many, and the way to them.
    left = PairAssignment.objects.filter(rater=rater, completed_at__isnull=True).count()
    assert "All done" not in body and f"{left} comparisons (which of two responses is better) are left" in body
    assert f'href="{reverse("compare", args=[rating_study.id])}" id="go-comparing"' in body


@pytest.mark.django_db
def test_an_excluded_or_withdrawn_rater_gets_404_on_compare(client, rating_study, researcher):
    excluded, withdrawn = add_rater(rating_study, "r0"), add_rater(rating_study, "r1")
    add_rater(rating_study, "r2")
    _open(rating_study, k=2)
    pairs = {u: PairAssignment.objects.filter(rater=u).first().pair.public_id for u in (excluded, withdrawn)}
    services.rater_exclude(study=rating_study, rater=excluded, reason="careless", actor=researcher)
    services.consent_withdraw(study=rating_study, user=withdrawn)
    for user in (excluded, withdrawn):
        client.force_login(user)
        assert client.get(reverse("compare", args=[rating_study.id])).status_code == 404
        posted = client.post(reverse("compare_submit", args=[rating_study.id, pairs[user]]),
                             {"pick-empathy": "a", "pick-fluency": "a"})
        assert posted.status_code == 404
    assert not PairJudgment.objects.filter(rater__in=[excluded, withdrawn]).exists()


@pytest.mark.django_db
def test_the_quality_table_counts_gold_pairs_answered_right(client, rating_study, researcher):
    right, wrong = add_rater(rating_study, "r0"), add_rater(rating_study, "r1")
    services.gold_pair_add(study=rating_study, user=researcher,
                           messages=[{"role": "user", "content": "I can't sleep before exams."}],
                           better_text="That sounds exhausting. What usually runs through your mind?",
                           worse_text="Everyone gets nervous.", rationale="The second waves it away.")
    _open(rating_study, k=2, gold_rate=0.5)
    for rater, better in ((right, True), (wrong, False)):
        gold = PairAssignment.objects.get(rater=rater, gold_pair__isnull=False)
        pick = "a" if gold.first_on_left == better else "b"  # the better response, or the worse
        _answer(rating_study, rater, gold, pick)
    client.force_login(researcher)
    page = client.get(reverse("raters_page", args=[rating_study.id])).content.decode()
    cells = {}
    for rater in (right, wrong):
        pseudonym = rater.memberships.get(study=rating_study).pseudonym
        row = page[page.index(pseudonym):]
        cells[rater.username] = row[row.index('class="gold-pairs">') + len('class="gold-pairs">'):].split("</td>")[0]
    assert cells == {"r0": "1 of 1", "r1": "0 of 1"}
