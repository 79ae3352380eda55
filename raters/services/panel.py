"""Participant pools: the entry link, completion codes, idle and returned participants, time and pay.
Long because entering, finishing, stopping, timing out and the pool's file are one participant's states
and move between each other: kept together, each change of status is seen beside the others.

A participant's pool id lives only on their PanelParticipant row; the account they rate under has a
generated username and no password, and their session is the only credential. Leaving (timed out,
returned, rejected) reuses what the study already does: the design is rebalanced as for a withdrawal,
and a pool's returned or rejected submission is a withdrawal under the study's own policy.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Max, Min
from django.utils import timezone

from evalapp.audit import audit
from evalapp.models import PairJudgment, PairwisePhase, Rating, Study
from evalapp.prompt_import import RowProblem

from ..models import (
    Assignment,
    CalibrationAnswer,
    Consent,
    GoldAnswer,
    PairAssignment,
    PairGoldAnswer,
    Role,
    StudyMembership,
    WelfareBreak,
)
from ..panel_import import POOL_STATUSES, SubmissionsFile, parse_submissions
from ..panel_models import (
    EXTRA_ID_PATTERN,
    ID_PATTERNS,
    PanelLink,
    PanelParticipant,
    ParticipantStatus,
    Preset,
)
from ..selectors import rater_status
from .common import RatingError
from .consent import consent_withdraw
from .design import design_rebalance
from .invitations import new_pseudonym
from .panel_links import LINK_FIELDS, LinkInvalid, panel_link_delete, panel_link_save, panel_link_set_enabled  # noqa: F401
from .panel_progress import panel_identities, panel_progress, panel_status_counts  # noqa: F401
from .welfare import rater_state

LEFT = (ParticipantStatus.RETURNED, ParticipantStatus.TIMED_OUT, ParticipantStatus.REJECTED)


# ----------------------------------------------------------------------------- the link's ids


def normalise_participant_id(preset: str, raw: str) -> str | None:
    """The id in its stored form (Prolific's hex in lower case), or None when it is not this pool's shape."""
    value = (raw or "").strip()
    if len(value) > 64:  # refused before any pattern runs
        return None
    if preset == Preset.PROLIFIC:
        value = value.lower()
    return value if ID_PATTERNS[Preset(preset)].match(value) else None


def study_not_open_reason(study: Study) -> str:
    if study.status in (Study.Status.DRAFT, Study.Status.GENERATING):
        return ("This study is not open yet: there is nothing to rate until the researcher opens it. Come back "
                "from the pool's page later, or return the study there.")
    return "This study is no longer taking ratings. Return the study on the pool's page; thank you for your time."


def panel_link_warnings(study: Study) -> list[str]:
    """What makes a link a dead end for now, for the researcher making or sharing it."""
    warnings = []
    if not study.prompts.exists() or not study.arms.exists():
        warnings.append("This study has no items to rate yet (it needs prompts and arms with responses): a "
                        "participant would have nothing to do and no way to a code.")
    if study.status != Study.Status.RATING:
        warnings.append(f"The study is {study.get_status_display().lower()}, not open for rating: a participant "
                        "following a link is told it is not open and turned away before consent. Open it for "
                        "rating on the raters page before you publish the link in the pool.")
    return warnings


def panel_link_for_slug(slug: str) -> PanelLink:
    link = PanelLink.objects.select_related("study").filter(slug=slug).first()
    if link is None:
        raise RatingError("This study link is not valid. Check that you copied all of it.", status=404)
    if not link.enabled:
        raise RatingError("This study is not taking participants through this link now.", status=410)
    return link


def _ids_from(link: PanelLink, query: Mapping) -> dict:
    pid = normalise_participant_id(link.preset, query.get(link.id_param, ""))
    if pid is None:
        given = query.get(link.id_param, "")
        raise RatingError(f"The link has no participant id ({link.id_param})." if not given else
                          f"The participant id in the link ({link.id_param}) is not in the form "
                          f"{link.get_preset_display()} uses. Open the study from the pool's page again.")
    extra = {}
    for field, param in (("pool_study_id", link.study_param), ("session_id", link.session_param),
                         ("assignment_id", link.assignment_param)):
        value = (query.get(param, "") if param else "").strip()
        if value and not EXTRA_ID_PATTERN.match(value):
            raise RatingError(f"The link's {param} is not a valid id.")
        extra[field] = value
    return {"participant_id": pid, **extra}


# ----------------------------------------------------------------------------- entering


def panel_enter(*, link: PanelLink, query: Mapping) -> PanelParticipant:
    """The participant of this id in the link's study: created with its account and membership the first
    time, the same one every time after (a double request included: the unique constraint decides)."""
    ids = _ids_from(link, query)
    study = link.study
    if not study.consent_versions.exists():
        # A timed-out participant is stopped by closing their consent (panel_release_idle): a study with no
        # consent text has nothing to close.
        raise RatingError("This study is not taking participants yet.", status=409)
    participant = _existing(study, link, ids["participant_id"])
    if participant is not None and (participant.status != ParticipantStatus.ACTIVE
                                    or study.status == Study.Status.RATING):
        return participant
    if study.status != Study.Status.RATING:
        # Before consent: a participant let in now would consent to nothing to rate and get no code.
        raise RatingError(study_not_open_reason(study), status=409)
    User = get_user_model()
    try:
        with transaction.atomic():
            user = User(username=_new_username())
            user.set_unusable_password()
            user.save()
            StudyMembership.objects.create(study=study, user=user, role=Role.RATER, pseudonym=new_pseudonym(study))
            participant = PanelParticipant.objects.create(study=study, link=link, user=user, **ids)
            audit(study=study, actor=user, action="panel.enter", obj=participant, after={"preset": link.preset})
            design_rebalance(study=study)
    except IntegrityError:  # the same id in a concurrent request got there first: theirs is the one
        participant = _existing(study, link, ids["participant_id"])
        if participant is None:
            raise
    return participant


def _existing(study: Study, link: PanelLink, participant_id: str) -> PanelParticipant | None:
    participant = (PanelParticipant.objects.select_related("user", "link")
                   .filter(study=study, participant_id=participant_id).first())
    if participant is None:
        return None
    if participant.link_id != link.id:
        raise RatingError("This participant id already entered the study through another link.", status=409)
    if participant.status in (ParticipantStatus.TIMED_OUT, ParticipantStatus.RETURNED):
        return participant  # not let back in: the page says what happened and repeats their code, if any
    if participant.status in LEFT:
        raise RatingError(f"Your place in this study has ended ({participant.get_status_display().lower()}). "
                          "Thank you for your time.", status=410)
    PanelParticipant.objects.filter(id=participant.id).update(last_seen_at=timezone.now())
    return participant


@dataclass(frozen=True)
class TimedOut:
    """What a timed-out participant who comes back is told: the limit, what was kept, the code if any."""
    idle_minutes: int
    kept: int  # ratings and comparisons they made, kept and counted
    code: str
    timed_out_at: object


def panel_timed_out(participant: PanelParticipant) -> TimedOut:
    study, user = participant.study, participant.user_id
    kept = (Rating.objects.filter(response__prompt__study=study, rater_id=user).count()
            + PairJudgment.objects.filter(pair__study=study, rater_id=user).count())
    return TimedOut(participant.link.idle_minutes, kept, participant.outcome_code or participant.link.code_timed_out,
                    participant.outcome_at)


def _new_username() -> str:
    import secrets

    return "panel-" + secrets.token_hex(8)


def participant_for(user, link: PanelLink | None = None, study: Study | None = None) -> PanelParticipant | None:
    if not getattr(user, "is_authenticated", False):
        return None
    found = PanelParticipant.objects.select_related("link", "study", "user").filter(user=user)
    if link is not None:
        found = found.filter(link=link)
    if study is not None:
        found = found.filter(study=study)
    return found.first()


# ----------------------------------------------------------------------------- completion


def _open_items(participant: PanelParticipant) -> tuple[int, int]:
    """(items assigned, items still open) of the 1-10 queue and, while its phase is open, the pairwise one."""
    study, user = participant.study, participant.user_id
    mine = Assignment.objects.filter(study=study, rater_id=user)
    total, open_ = mine.count(), mine.filter(completed_at__isnull=True).count()
    if PairwisePhase.objects.filter(study=study, status="open").exists():
        pairs = PairAssignment.objects.filter(study=study, rater_id=user)
        total += pairs.count()
        open_ += pairs.filter(completed_at__isnull=True).count()
    return total, open_


def panel_outcome(participant: PanelParticipant) -> tuple[str | None, int]:
    """("completed" | "screened_out" | None for not yet, items still open). Screened out: failed
    calibration twice, rejected by the researcher, or excluded. Completed: a queue with every item done."""
    if participant.status in (ParticipantStatus.COMPLETED, ParticipantStatus.SCREENED_OUT):
        return participant.status, 0
    status = rater_status(study=participant.study, user=participant.user)
    if status.excluded or status.calibration in ("failed", "rejected"):
        return ParticipantStatus.SCREENED_OUT, 0
    total, open_ = _open_items(participant)
    if status.can_rate and participant.study.status == Study.Status.RATING and total and not open_:
        return ParticipantStatus.COMPLETED, 0
    return None, open_


@dataclass(frozen=True)
class Completion:
    outcome: str
    code: str
    redirect_url: str


def redirect_url(link: PanelLink, participant: PanelParticipant, outcome: str, code: str) -> str:
    template = link.redirect_template_for(outcome)
    if not template:
        return ""
    values = {"code": code, "participant_id": participant.participant_id, "study_id": participant.pool_study_id,
              "session_id": participant.session_id, "assignment_id": participant.assignment_id}
    return template.format(**{k: quote(v, safe="") for k, v in values.items()})


@transaction.atomic
def panel_complete(*, participant: PanelParticipant) -> Completion | None:
    """The participant's outcome, code and way back to the pool, recorded the first time; None until the
    queue is done (or they were screened out)."""
    participant = PanelParticipant.objects.select_for_update().select_related("link", "study", "user").get(
        id=participant.id)
    outcome, _ = panel_outcome(participant)
    if outcome is None:
        return None
    code = participant.outcome_code or participant.link.code_for(outcome)
    if participant.outcome_at is None:
        now = timezone.now()
        PanelParticipant.objects.filter(id=participant.id).update(status=outcome, outcome_code=code, outcome_at=now,
                                                                  last_seen_at=now)
        audit(study=participant.study, actor=participant.user, action="panel.complete", obj=participant,
              after={"outcome": outcome, "code": code})
        participant.status, participant.outcome_code = outcome, code
    return Completion(outcome, code, redirect_url(participant.link, participant, outcome, code))


def panel_return(*, participant: PanelParticipant) -> Completion:
    """A participant who stops early by the stop page: only offered where the link has a code for it."""
    if not participant.link.code_returned:
        raise RatingError("This study gives no code for stopping early; return it on the pool's page.", status=409)
    if participant.status != ParticipantStatus.ACTIVE:
        raise RatingError("You have already finished this study.", status=409)
    return panel_withdraw(participant=participant)


def panel_withdraw(*, participant: PanelParticipant) -> Completion:
    """Stopping early, by the stop page or by "Withdraw from the study" alike: withdrawn under the study's
    policy, given the link's returned code (none where the link has none: withdrawing is never refused)."""
    link = participant.link
    with transaction.atomic():
        _leave(participant, ParticipantStatus.RETURNED, withdraw=True, actor=participant.user)
    participant.status, participant.outcome_code = ParticipantStatus.RETURNED, link.code_returned
    return panel_stopped(participant)


def panel_stopped(participant: PanelParticipant) -> Completion:
    """What a participant who stopped early is shown, then and every time they come back: their code."""
    code = participant.outcome_code
    return Completion(ParticipantStatus.RETURNED, code,
                      redirect_url(participant.link, participant, ParticipantStatus.RETURNED, code))


# ----------------------------------------------------------------------------- leaving


def _leave(participant: PanelParticipant, status: str, *, withdraw: bool, actor) -> None:
    """Stop a participant: their account can no longer sign in (the session was their only credential).
    `withdraw`: the study's withdrawal policy decides their ratings (consent_withdraw, which rebalances).
    Otherwise (timed out) what they rated stays and counts; their consent is closed so the design gives
    them nothing more, and their unfinished items go to the others."""
    study, user = participant.study, participant.user
    changes = {"status": status}
    if status == ParticipantStatus.RETURNED:
        # Whoever returns them (the stop page, withdrawing, the pool's file), coming back shows this code.
        changes.update(outcome_code=participant.link.code_returned, outcome_at=timezone.now())
    PanelParticipant.objects.filter(id=participant.id).update(**changes)
    type(user).objects.filter(id=user.id).update(is_active=False)
    audit(study=study, actor=actor, action=f"panel.{status}", obj=participant,
          after={"status": status, "withdraw": withdraw})
    if withdraw:
        if not StudyMembership.objects.filter(study=study, user=user, role=Role.RATER,
                                              withdrawn_at__isnull=False).exists():
            consent_withdraw(study=study, user=user)
        return
    Consent.objects.filter(study=study, user=user, withdrawn_at__isnull=True).update(withdrawn_at=timezone.now())
    Assignment.objects.filter(study=study, rater=user, completed_at__isnull=True).delete()
    PairAssignment.objects.filter(study=study, rater=user, completed_at__isnull=True).delete()
    try:
        with transaction.atomic():
            design_rebalance(study=study)
    except RatingError as exc:
        # As for a withdrawal: the raters left cannot cover the design; on record for the researcher.
        audit(study=study, actor=actor, action="design.rebalance_refused", obj=study, after={"reason": exc.message})


def last_activity(study: Study, participants: list[PanelParticipant]) -> dict[int, object]:
    """user id -> the latest of entering, consenting, a rating, a judgment, a gold or a calibration answer."""
    users = [p.user_id for p in participants]
    latest = {p.user_id: p.last_seen_at for p in participants}
    sources = (
        Rating.objects.filter(response__prompt__study=study, rater_id__in=users).values("rater_id")
        .annotate(t=Max("updated_at")).values_list("rater_id", "t"),
        PairJudgment.objects.filter(pair__study=study, rater_id__in=users).values("rater_id")
        .annotate(t=Max("updated_at")).values_list("rater_id", "t"),
        GoldAnswer.objects.filter(assignment__study=study, assignment__rater_id__in=users)
        .values("assignment__rater_id").annotate(t=Max("created_at")).values_list("assignment__rater_id", "t"),
        PairGoldAnswer.objects.filter(assignment__study=study, assignment__rater_id__in=users)
        .values("assignment__rater_id").annotate(t=Max("created_at")).values_list("assignment__rater_id", "t"),
        CalibrationAnswer.objects.filter(attempt__study=study, attempt__rater_id__in=users)
        .values("attempt__rater_id").annotate(t=Max("answered_at")).values_list("attempt__rater_id", "t"),
        Consent.objects.filter(study=study, user_id__in=users).values("user_id")
        .annotate(t=Max("accepted_at")).values_list("user_id", "t"),
        # Pressing "continue" on a break prompt is an action too.
        WelfareBreak.objects.filter(study=study, rater_id__in=users).values("rater_id")
        .annotate(t=Max("at")).values_list("rater_id", "t"),
    )
    for rows in sources:
        for user_id, when in rows:
            if when is not None and when > latest[user_id]:
                latest[user_id] = when
    return latest


def panel_release_idle(*, study: Study | None = None, now=None) -> list[PanelParticipant]:
    """Time out every active participant idle past their link's idle_minutes who still has work open
    (one who finished every item is left to collect their code)."""
    now = now or timezone.now()
    active = PanelParticipant.objects.filter(status=ParticipantStatus.ACTIVE).select_related("link", "study", "user")
    if study is not None:
        active = active.filter(study=study)
    released = []
    by_study: dict[int, list[PanelParticipant]] = {}
    for participant in active:
        by_study.setdefault(participant.study_id, []).append(participant)
    for group in by_study.values():
        seen = last_activity(group[0].study, group)
        for participant in group:
            idle = timedelta(minutes=participant.link.idle_minutes)
            last = seen[participant.user_id]
            if last > now - idle:
                continue
            # The idle clock stops while a prompted break runs: a break due at their last action starts it
            # again once the break is over (raters.welfare.REST after their last item).
            state = rater_state(participant.study, participant.user, now=last)
            if state.break_due and state.break_over_at is not None and max(last, state.break_over_at) > now - idle:
                continue
            outcome, _ = panel_outcome(participant)
            if outcome is not None:
                continue
            with transaction.atomic():
                PanelParticipant.objects.filter(id=participant.id).update(
                    last_seen_at=last, outcome_code=participant.link.code_timed_out, outcome_at=now)
                _leave(participant, ParticipantStatus.TIMED_OUT, withdraw=False, actor=participant.user)
            released.append(participant)
    return released


def panel_release_idle_lazily(*, study: Study, now=None) -> list[PanelParticipant]:
    """panel_release_idle for one study, only when someone could be idle (one cheap query otherwise): the
    pages that list participants call it, so a site without a beat schedule (the demo) shows them as they are.
    last_seen_at is at most their last activity, so anyone seen within the shortest idle limit is not idle."""
    now = now or timezone.now()
    shortest = study.panel_links.aggregate(m=Min("idle_minutes"))["m"]
    if shortest is None or not PanelParticipant.objects.filter(
            study=study, status=ParticipantStatus.ACTIVE, last_seen_at__lt=now - timedelta(minutes=shortest)).exists():
        return []
    return panel_release_idle(study=study, now=now)


# ----------------------------------------------------------------------------- the pool's file


@dataclass
class Reconciliation:
    errors: list[RowProblem]
    applied: list[tuple[str, str, str]]  # (participant id, status before, status after)
    only_in_file: list[tuple[str, str]]  # (participant id, pool status)
    only_here: list[PanelParticipant]
    both: list[tuple[PanelParticipant, str]]  # (ours, the pool's status)


def panel_submissions_import(*, link: PanelLink, data: bytes, actor) -> Reconciliation:
    """Read the pool's submissions file: every row good or nothing written. Returned and rejected submissions
    withdraw their participant under the study's policy; a timed-out one times them out as idling here does,
    keeping what they rated (their timed-out page says so); every status is recorded."""
    parsed: SubmissionsFile = parse_submissions(data, lambda raw: normalise_participant_id(link.preset, raw))
    ours = {p.participant_id: p for p in link.participants.select_related("user", "study")}
    in_file = {row.participant_id: row for row in parsed.rows}
    report = Reconciliation(
        errors=parsed.errors, applied=[],
        only_in_file=[(pid, row.status) for pid, row in in_file.items() if pid not in ours],
        only_here=[p for pid, p in ours.items() if pid not in in_file],
        both=[(ours[pid], row.status) for pid, row in in_file.items() if pid in ours],
    )
    if parsed.errors:
        return report
    with transaction.atomic():
        for participant, pool_status in report.both:
            row = in_file[participant.participant_id]
            PanelParticipant.objects.filter(id=participant.id).update(pool_status=pool_status,
                                                                      pool_seconds=row.seconds)
            new = POOL_STATUSES[pool_status]
            if not new:
                continue
            if new == ParticipantStatus.TIMED_OUT:
                if participant.status == new:
                    continue  # timed out here already: nothing changes, nothing to report
                if participant.outcome_at is None:
                    PanelParticipant.objects.filter(id=participant.id).update(
                        outcome_code=link.code_timed_out, outcome_at=timezone.now())
                _leave(participant, new, withdraw=False, actor=actor)
            else:
                already_withdrawn = StudyMembership.objects.filter(
                    study=link.study, user=participant.user, role=Role.RATER, withdrawn_at__isnull=False).exists()
                if participant.status == new and already_withdrawn:
                    continue
                _leave(participant, new, withdraw=True, actor=actor)
            report.applied.append((participant.participant_id, participant.status, new))
        audit(study=link.study, actor=actor, action="panel.submissions_import", obj=link,
              after={"rows": len(parsed.rows), "applied": len(report.applied),
                     "only_in_file": len(report.only_in_file), "only_here": len(report.only_here)})
    for participant, _ in report.both:
        participant.refresh_from_db()
    return report
