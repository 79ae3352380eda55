"""Writes for raters: invitations, consent, calibration, the rating design, ratings, quality decisions."""

import csv
import hashlib
import io
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone

from evalapp.adjudication import audit
from evalapp.models import SCALE_MAX, SCALE_MIN, Rating, Response, Study, UnsafeCategory

from . import assignment as design_lib
from .models import (
    Assignment,
    CalibrationAnswer,
    CalibrationAttempt,
    CalibrationItem,
    Consent,
    ConsentVersion,
    GoldAnswer,
    Invitation,
    RatingRevision,
    Role,
    StudyMembership,
    WithdrawalPolicy,
)


class RatingError(Exception):
    """A request a rater or researcher made that cannot be carried out; the message says why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ----------------------------------------------------------------------------- invitations


def invitation_create(*, study: Study, created_by, role: str, email: str = "", days: int = 14, accept_url=None):
    """Create a single-use invitation; returns (invitation, token). Mails the link when there is an address."""
    if role not in Role.values or role == Role.RESEARCHER and study.owner_id != created_by.id:
        raise RatingError("Only the study's owner can invite researchers.")
    token = secrets.token_urlsafe(24)
    invitation = Invitation.objects.create(
        study=study,
        email=email,
        role=role,
        token_sha256=_token_sha256(token),
        created_by=created_by,
        expires_at=timezone.now() + timedelta(days=days),
    )
    if email and accept_url is not None:
        link = accept_url(token)
        transaction.on_commit(
            lambda: send_mail(
                f"Invitation to take part in “{study.title}”",
                f"You are invited to take part in the study “{study.title}” as {role}.\n\n"
                f"Accept within {days} days: {link}\n\nThe link works once.",
                settings.DEFAULT_FROM_EMAIL,
                [email],
            )
        )
    return invitation, token


def invitations_create_from_list(*, study: Study, created_by, role: str, emails_text: str, accept_url) -> list:
    emails = [e.strip() for e in re.split(r"[\s,;]+", emails_text) if e.strip()]
    bad = [e for e in emails if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", e)]
    if bad:
        raise RatingError(f"Not e-mail addresses: {', '.join(bad)}. Nothing was sent.")
    if not emails:
        raise RatingError("Give at least one e-mail address.")
    with transaction.atomic():
        return [
            invitation_create(study=study, created_by=created_by, role=role, email=e, accept_url=accept_url)[0]
            for e in dict.fromkeys(emails)
        ]


def invitation_for_token(token: str) -> Invitation:
    invitation = Invitation.objects.select_related("study").filter(token_sha256=_token_sha256(token)).first()
    if invitation is None:
        raise RatingError("This invitation link is not valid.", status=404)
    if invitation.accepted_at is not None:
        raise RatingError("This invitation has already been used.", status=410)
    if invitation.expires_at < timezone.now():
        raise RatingError("This invitation has expired; ask the researcher for a new one.", status=410)
    return invitation


def invitation_accept(*, token: str, user) -> StudyMembership:
    invitation = invitation_for_token(token)
    with transaction.atomic():
        # Single use even under a double click: only one request flips accepted_at.
        claimed = Invitation.objects.filter(id=invitation.id, accepted_at__isnull=True).update(
            accepted_at=timezone.now(), accepted_by=user
        )
        if not claimed:
            raise RatingError("This invitation has already been used.", status=410)
        membership, _ = StudyMembership.objects.get_or_create(
            study=invitation.study, user=user, role=invitation.role, defaults={"pseudonym": _new_pseudonym(invitation.study)}
        )
    return membership


def _new_pseudonym(study: Study) -> str:
    taken = set(StudyMembership.objects.filter(study=study).values_list("pseudonym", flat=True))
    while True:
        candidate = "R-" + secrets.token_hex(3).upper()
        if candidate not in taken:
            return candidate


CODE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,63}$")


@dataclass
class BulkAccountsResult:
    accounts: list[tuple[str, str]]  # (code, password), shown once
    errors: list[str]


def rater_accounts_bulk_create(*, study: Study, data: bytes) -> BulkAccountsResult:
    """Pseudonymous rater accounts from a CSV with a `code` column: all or nothing."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return BulkAccountsResult([], ["The file is not UTF-8."])
    reader = csv.DictReader(io.StringIO(text))
    if "code" not in [f.strip().lower() for f in (reader.fieldnames or [])]:
        return BulkAccountsResult([], ["Row 1: the file needs a 'code' column."])
    reader.fieldnames = [f.strip().lower() for f in reader.fieldnames]
    User = get_user_model()
    codes, errors, seen = [], [], {}
    for index, record in enumerate(reader, start=2):
        code = (record.get("code") or "").strip()
        if not CODE_PATTERN.match(code):
            errors.append(f"Row {index}: code {code!r} must be 2-64 letters, digits, '.', '_' or '-'.")
        elif code.lower() in seen:
            errors.append(f"Row {index}: code {code!r} repeats row {seen[code.lower()]}.")
        else:
            seen[code.lower()] = index
            codes.append(code)
    existing = set(User.objects.filter(username__in=codes).values_list("username", flat=True))
    errors += [f"Code {code!r} is already an account." for code in codes if code in existing]
    if not codes and not errors:
        errors.append("The file has no codes.")
    if errors:
        return BulkAccountsResult([], errors)
    accounts = []
    with transaction.atomic():
        for code in codes:
            password = secrets.token_urlsafe(9)
            user = User(username=code)
            user.set_password(password)
            user.save()
            StudyMembership.objects.create(study=study, user=user, role=Role.RATER, pseudonym=code)
            accounts.append((code, password))
    return BulkAccountsResult(accounts, [])


# ----------------------------------------------------------------------------- consent


def consent_publish(*, study: Study, text: str, withdrawal_policy: str) -> ConsentVersion:
    if not text.strip():
        raise RatingError("The consent text is empty.")
    if withdrawal_policy not in WithdrawalPolicy.values:
        raise RatingError("Choose what happens to a withdrawn rater's ratings.")
    with transaction.atomic():
        Study.objects.select_for_update().filter(id=study.id).first()
        latest = study.consent_versions.aggregate(v=Max("version"))["v"] or 0
        return ConsentVersion.objects.create(
            study=study, version=latest + 1, text=text.strip(), withdrawal_policy=withdrawal_policy
        )


def consent_accept(*, study: Study, user, version: ConsentVersion) -> Consent:
    current = study.consent_versions.order_by("-version").first()
    if current is None or current.id != version.id:
        raise RatingError("The consent text has changed; please read the current version.", status=409)
    consent, _ = Consent.objects.get_or_create(study=study, user=user, version=version)
    return consent


@transaction.atomic
def consent_withdraw(*, study: Study, user) -> str:
    """Withdraw a rater: they see nothing more, and the study's policy decides their ratings' fate."""
    policy_version = study.consent_versions.order_by("-version").first()
    policy = policy_version.withdrawal_policy if policy_version else WithdrawalPolicy.EXCLUDE
    now = timezone.now()
    Consent.objects.filter(study=study, user=user, withdrawn_at__isnull=True).update(withdrawn_at=now)
    StudyMembership.objects.filter(study=study, user=user, role=Role.RATER).update(withdrawn_at=now)
    audit(study=study, actor=user, action="rater.withdraw", obj=user, after={"rater": user.id, "policy": policy})
    if policy == WithdrawalPolicy.DELETE:
        Rating.objects.filter(rater=user, response__prompt__study=study).delete()
        Assignment.objects.filter(study=study, rater=user).delete()
    else:
        Assignment.objects.filter(study=study, rater=user, completed_at__isnull=True).delete()
    design_rebalance(study=study)
    return policy


# ----------------------------------------------------------------------------- calibration


def calibration_attempt_start(*, study: Study, rater) -> CalibrationAttempt:
    if not study.calibration_items.exists():
        raise RatingError("This study has no calibration items yet.", status=409)
    attempts = list(CalibrationAttempt.objects.filter(study=study, rater=rater).order_by("number"))
    if attempts and attempts[-1].finished_at is None:
        return attempts[-1]
    if any(a.passed for a in attempts):
        raise RatingError("You have already passed calibration.", status=409)
    if len(attempts) >= 2:
        raise RatingError("You have used both calibration attempts; the researcher will decide.", status=409)
    try:
        with transaction.atomic():
            return CalibrationAttempt.objects.create(study=study, rater=rater, number=len(attempts) + 1)
    except IntegrityError:  # a concurrent request started it
        return CalibrationAttempt.objects.get(study=study, rater=rater, number=len(attempts) + 1)


def calibration_answer(*, attempt: CalibrationAttempt, item: CalibrationItem, empathy: int, fluency: int):
    _check_scores(empathy, fluency)
    if attempt.finished_at is not None:
        raise RatingError("This calibration attempt is finished.", status=409)
    if item.study_id != attempt.study_id:
        raise RatingError("No such calibration item.", status=404)
    answer, _ = CalibrationAnswer.objects.get_or_create(
        attempt=attempt, item=item, defaults={"empathy": empathy, "fluency": fluency}
    )
    total = attempt.study.calibration_items.count()
    if attempt.answers.count() >= total:
        _calibration_finish(attempt)
    return answer


def _calibration_finish(attempt: CalibrationAttempt) -> None:
    errors = []
    for answer in attempt.answers.select_related("item"):
        errors += [abs(answer.empathy - answer.item.reference_empathy), abs(answer.fluency - answer.item.reference_fluency)]
    mae = sum(errors) / len(errors)
    passed = mae <= attempt.study.calibration_max_mae
    CalibrationAttempt.objects.filter(id=attempt.id, finished_at__isnull=True).update(
        finished_at=timezone.now(), mean_absolute_error=mae, passed=passed
    )
    attempt.refresh_from_db()
    if passed:
        design_rebalance(study=attempt.study)


def calibration_decide(*, study: Study, rater, approve: bool) -> None:
    StudyMembership.objects.filter(study=study, user=rater, role=Role.RATER).update(
        calibration_decision="approved" if approve else "rejected"
    )
    design_rebalance(study=study)


# ----------------------------------------------------------------------------- the rating design


def eligible_raters(study: Study) -> list:
    """Raters who consented to the current version, passed calibration (or were approved), and are active."""
    from .selectors import rater_status

    members = StudyMembership.objects.filter(
        study=study, role=Role.RATER, withdrawn_at__isnull=True, excluded_at__isnull=True
    ).select_related("user")
    return [m.user for m in members if rater_status(study=study, user=m.user).can_rate]


@transaction.atomic
def design_rebalance(*, study: Study) -> int:
    """(Re)build every eligible rater's queue of unrated work, keeping all that was already rated.

    Runs when the study opens for rating and whenever a rater joins, withdraws
    or is excluded. Returns the number of assignments written.
    """
    Study.objects.select_for_update().filter(id=study.id).first()
    study.refresh_from_db()
    if study.status != Study.Status.RATING:
        return 0
    raters = eligible_raters(study)
    responses = list(Response.objects.filter(prompt__study=study).values_list("public_id", "prompt_id", "id"))
    if not raters or not responses:
        return 0
    by_public = {public: pk for public, _, pk in responses}
    items = [design_lib.Item(item_id=public, group=prompt_id) for public, prompt_id, _ in responses]
    gold = {g.public_id: g for g in study.calibration_items.filter(use_as_gold=True)}
    gold_items = [design_lib.GoldItem(item_id=public) for public in gold]
    rater_ids = [str(u.id) for u in raters]
    k = min(study.ratings_per_response, len(rater_ids))

    rated: dict[str, set[str]] = {}
    for rater_id, public in Rating.objects.filter(response__prompt__study=study).values_list(
        "rater_id", "response__public_id"
    ):
        rated.setdefault(str(rater_id), set()).add(public)
    # Skipped items count as done for the rater who skipped them: they are not shown again.
    for rater_id, public in Assignment.objects.filter(
        study=study, completed_at__isnull=False, response__isnull=False
    ).values_list("rater_id", "response__public_id"):
        rated.setdefault(str(rater_id), set()).add(public)
    excluded = set(
        StudyMembership.objects.filter(study=study, role=Role.RATER)
        .exclude(withdrawn_at__isnull=True, excluded_at__isnull=True)
        .values_list("user_id", flat=True)
    )
    # A withdrawn or excluded rater's ratings stay (or were deleted by policy) but no longer count toward k.
    counted = {r: items_ for r, items_ in rated.items() if int(r) not in excluded}
    counted = {r: {i for i in v if i in by_public} for r, v in counted.items()}
    over = _trim_over_k(counted, k)

    # Each rebalance gets its own recorded seed, derived from the study's, so the whole history can be replayed.
    seed = study.design_seed + Assignment.objects.filter(study=study, completed_at__isnull=False).count()
    try:
        base = design_lib.build_design(items, rater_ids, k, seed=seed, gold=gold_items,
                                         gold_rate=study.gold_rate if gold_items else 0.0)
        design = design_lib.rebalance(base, over, rater_ids, seed=seed) if over else base
    except ValueError as exc:
        raise RatingError(f"No balanced rating design exists for the current raters: {exc}", status=409) from exc

    Assignment.objects.filter(study=study, completed_at__isnull=True).delete()
    next_position = dict(
        Assignment.objects.filter(study=study).values("rater_id").annotate(p=Max("position")).values_list("rater_id", "p")
    )
    done_gold = set(
        Assignment.objects.filter(study=study, gold_item__isnull=False).values_list("rater_id", "gold_item__public_id")
    )
    rows = []
    for rater_id, queue in design.queues.items():
        position = next_position.get(int(rater_id), -1) + 1
        for item_id in queue:
            is_gold = item_id in gold
            if is_gold and (int(rater_id), item_id) in done_gold:
                continue
            rows.append(
                Assignment(
                    study=study,
                    rater_id=int(rater_id),
                    position=position,
                    response_id=None if is_gold else by_public[item_id],
                    gold_item=gold[item_id] if is_gold else None,
                    design_seed=seed,
                )
            )
            position += 1
    Assignment.objects.bulk_create(rows)
    return len(rows)


def _trim_over_k(rated: dict[str, set[str]], k: int) -> dict[str, set[str]]:
    """Items can hold more than k counted ratings after raters come back; keep any k for the design."""
    counts: dict[str, int] = {}
    out: dict[str, set[str]] = {}
    for rater in sorted(rated):
        for item in sorted(rated[rater]):
            if counts.get(item, 0) < k:
                counts[item] = counts.get(item, 0) + 1
                out.setdefault(rater, set()).add(item)
    return out


@transaction.atomic
def study_open_for_rating(*, study: Study) -> int:
    if not Response.objects.filter(prompt__study=study).exists():
        raise RatingError("Generate responses before opening the study for rating.", status=409)
    Study.objects.filter(id=study.id).update(status=Study.Status.RATING)
    study.refresh_from_db()
    return design_rebalance(study=study)


# ----------------------------------------------------------------------------- ratings


def _check_scores(empathy, fluency) -> None:
    for name, value in (("Empathy", empathy), ("Fluency", fluency)):
        if not isinstance(value, int) or isinstance(value, bool) or not SCALE_MIN <= value <= SCALE_MAX:
            raise RatingError(f"{name} must be a whole number from {SCALE_MIN} to {SCALE_MAX}.")


@dataclass
class Submission:
    empathy: int
    fluency: int
    unsafe: bool = False
    unsafe_category: str = ""
    comment: str = ""
    seconds_on_item: float | None = None


def rating_submit(*, study: Study, rater, item_public_id: str, submission: Submission, status=None) -> str:
    """Record a rating (or a gold answer) for an assigned item; idempotent; revisions audited.

    Returns "created", "unchanged" or "revised".
    """
    _check_scores(submission.empathy, submission.fluency)
    if submission.unsafe and submission.unsafe_category not in UnsafeCategory.values:
        raise RatingError("Choose what makes the response unsafe.")
    if not submission.unsafe:
        submission.unsafe_category = ""
    if submission.seconds_on_item is not None and submission.seconds_on_item < 0:
        submission.seconds_on_item = None
    if study.status == Study.Status.CLOSED:
        raise RatingError("This study is closed; ratings can no longer be changed.", status=409)
    if study.status != Study.Status.RATING:
        raise RatingError("This study is not open for rating.", status=409)
    assignment = _assignment_for(study, rater, item_public_id, status)
    with transaction.atomic():
        if assignment.gold_item_id:
            _, created = GoldAnswer.objects.get_or_create(
                assignment=assignment,
                defaults={"empathy": submission.empathy, "fluency": submission.fluency, "unsafe": submission.unsafe,
                          "seconds_on_item": submission.seconds_on_item},
            )
            outcome = "created" if created else "unchanged"
        else:
            outcome = _save_rating(assignment, rater, submission)
        Assignment.objects.filter(id=assignment.id, completed_at__isnull=True).update(completed_at=timezone.now())
    return outcome


def _save_rating(assignment: Assignment, rater, submission: Submission) -> str:
    values = {
        "empathy": submission.empathy,
        "fluency": submission.fluency,
        "unsafe": submission.unsafe,
        "unsafe_category": submission.unsafe_category,
        "comment": submission.comment.strip(),
    }
    rating = Rating.objects.select_for_update().filter(response_id=assignment.response_id, rater=rater).first()
    if rating is None:
        # ON CONFLICT DO NOTHING: a concurrent duplicate of this request loses quietly to the
        # unique (response, rater) constraint instead of failing the transaction.
        Rating.objects.bulk_create(
            [Rating(response_id=assignment.response_id, rater=rater, seconds_on_item=submission.seconds_on_item, **values)],
            ignore_conflicts=True,
        )
        rating = Rating.objects.select_for_update().get(response_id=assignment.response_id, rater=rater)
        if {name: getattr(rating, name) for name in values} == values:
            return "created"
    before = {name: getattr(rating, name) for name in values}
    if before == values:
        return "unchanged"
    for name, value in values.items():
        setattr(rating, name, value)
    rating.save(update_fields=[*values, "updated_at"])
    RatingRevision.objects.create(rating=rating, changed_by=rater, before=before, after=values)
    audit(study=assignment.study, actor=rater, action="rating.revise", obj=rating, before=before, after=values)
    return "revised"


def assignment_skip(*, study: Study, rater, item_public_id: str, reason: str) -> None:
    if not reason.strip():
        raise RatingError("Say why you can't judge this response.")
    if study.status != Study.Status.RATING:
        raise RatingError("This study is not open for rating.", status=409)
    assignment = _assignment_for(study, rater, item_public_id)
    Assignment.objects.filter(id=assignment.id, completed_at__isnull=True).update(
        completed_at=timezone.now(), skip_reason=reason.strip()[:500]
    )


def _assignment_for(study: Study, rater, item_public_id: str, status=None) -> Assignment:
    from .selectors import rater_status

    status = status or rater_status(study=study, user=rater)
    if not status.can_rate:
        raise RatingError("No such item.", status=404)
    assignment = (
        Assignment.objects.filter(study=study, rater=rater)
        .filter(Q(response__public_id=item_public_id) | Q(gold_item__public_id=item_public_id))
        .first()
    )
    if assignment is None:
        raise RatingError("No such item.", status=404)
    return assignment


# ----------------------------------------------------------------------------- quality decisions


@transaction.atomic
def rater_exclude(*, study: Study, rater, reason: str, actor=None) -> None:
    if not reason.strip():
        raise RatingError("Give a reason for excluding the rater.")
    StudyMembership.objects.filter(study=study, user=rater, role=Role.RATER).update(
        excluded_at=timezone.now(), excluded_reason=reason.strip()[:500]
    )
    audit(study=study, actor=actor or rater, action="rater.exclude", obj=rater,
          after={"rater": rater.id, "reason": reason.strip()[:500]})
    Assignment.objects.filter(study=study, rater=rater, completed_at__isnull=True).delete()
    design_rebalance(study=study)
