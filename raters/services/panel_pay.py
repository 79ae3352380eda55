"""Time and pay of a study's pool participants: active time from the seconds each item was on screen,
pay at an hourly rate, the effective rate over the whole session, gold accuracy and bonus eligibility.

The seconds are those recorded at submit (raters.timing): the browser's measure, never more than the time
the server saw since the rater's previous action, and that observed time when the browser sent none, so a
participant can't inflate their pay and work done without JavaScript is paid. Only items recorded before
that rule have no time at all; the sheet counts them. A skipped item (can't judge, or distressing) was
read too: it counts as done and its time is paid, a distress skip never against the rater. A skip records
no seconds of its own, so its time is the server's observed time, as for a rating sent without them: from
the rater's previous action in the study to the skip."""

from bisect import bisect_left
from dataclasses import dataclass

from evalapp.models import PairJudgment, Rating, Study
from evalapp.rubric import answer_errors

from ..models import (
    Assignment,
    CalibrationAnswer,
    Consent,
    GoldAnswer,
    PairAssignment,
    PairGoldAnswer,
    Role,
    StudyMembership,
)
from ..panel_models import PanelParticipant
from ..selectors import rater_status
from .panel import last_activity
from .welfare import DISTRESS_SKIP

# Said on every row of the sheet, so that a file passed on keeps what its seconds mean.
TIME_BASIS = ("per item: the browser's seconds on screen, capped at the time the server saw since the rater's "
              "previous action (that time when the browser sent none); items over break_over_seconds left out; a skipped item (items_skipped, items_skipped_distressing): the time the server saw "
              "from the rater's previous action to the skip")
SECONDS_DECIMALS = 2  # active_seconds and session_seconds on the sheet, and what pay and the rate use
NO_THRESHOLD, NO_MINIMUM = "n/a (no threshold set)", "n/a (no minimum set)"
PAY_HEADER = ["pseudonym", "participant_id", "status", "outcome_code", "items_done", "items_skipped",
              "items_skipped_distressing", "active_seconds",
              "break_over_seconds", "items_left_out_as_breaks", "items_without_time", "session_seconds",
              "calibration", "gold_answered", "gold_right", "gold_accuracy", "hourly_rate", "pay",
              "effective_hourly", "below_minimum_wage", "bonus_threshold", "bonus_eligible", "time_basis"]


def active_seconds(seconds: list[float | None], gap_seconds: float) -> tuple[float, int, int]:
    """(active seconds, items left out as breaks, items with no time). An item's time on screen counts
    whole when it is at most `gap_seconds`; a longer one is left out entirely (a break, not work)."""
    total, gaps, untimed = 0.0, 0, 0
    for value in seconds:
        if value is None:
            untimed += 1
        elif value > gap_seconds:
            gaps += 1
        else:
            total += value
    return total, gaps, untimed


def _skip_seconds(study: Study, users: list[int]) -> dict[int, list[tuple[str, float]]]:
    """user id -> (skip reason, seconds) of each item they skipped: from their previous action in the study
    (the actions raters.timing bounds an item by) to the skip."""
    actions: dict[int, list] = {u: [] for u in users}
    skips: dict[int, list[tuple[str, object]]] = {u: [] for u in users}
    queues = (Assignment.objects.filter(study=study, rater_id__in=users),
              PairAssignment.objects.filter(study=study, rater_id__in=users))
    for queue in queues:
        for user_id, at, reason in queue.filter(completed_at__isnull=False).values_list(
                "rater_id", "completed_at", "skip_reason"):
            actions[user_id].append(at)
            if reason:
                skips[user_id].append((reason, at))
    if not any(skips.values()):
        return {u: [] for u in users}
    for source in (
        Rating.objects.filter(response__prompt__study=study, rater_id__in=users).values_list("rater_id", "updated_at"),
        PairJudgment.objects.filter(pair__study=study, rater_id__in=users).values_list("rater_id", "updated_at"),
        CalibrationAnswer.objects.filter(attempt__study=study, attempt__rater_id__in=users)
        .values_list("attempt__rater_id", "answered_at"),
        Consent.objects.filter(study=study, user_id__in=users).values_list("user_id", "accepted_at"),
        StudyMembership.objects.filter(study=study, user_id__in=users, role=Role.RATER)
        .values_list("user_id", "created_at"),
        PanelParticipant.objects.filter(study=study, user_id__in=users).values_list("user_id", "created_at"),
    ):
        for user_id, at in source:
            actions[user_id].append(at)
    out: dict[int, list[tuple[str, float]]] = {}
    for user_id in users:
        times = sorted(actions[user_id])
        out[user_id] = []
        for reason, at in skips[user_id]:
            earlier = bisect_left(times, at)  # actions strictly before the skip
            out[user_id].append((reason, (at - times[earlier - 1]).total_seconds() if earlier else None))
    return out


@dataclass(frozen=True)
class PayRow:
    participant: PanelParticipant
    pseudonym: str
    items: int  # read: rated, judged, gold answered or skipped
    skipped: int  # "can't judge"
    skipped_distressing: int  # never against the rater: counted and paid as any item read
    active_seconds: float
    left_out: int
    untimed: int
    session_seconds: float | None
    calibration: str
    gold_answered: int
    gold_right: int
    pay: float
    effective_hourly: float | None
    below_minimum: bool | None  # None: no minimum wage given, or no session time to divide by
    bonus: bool | None  # None: no bonus threshold given

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_right / self.gold_answered if self.gold_answered else None


def panel_pay_rows(*, study: Study, hourly_rate: float, minimum_wage: float | None = None,
                   bonus_accuracy: float | None = None) -> list[PayRow]:
    """One row per panel participant: pay = hourly_rate x active hours; the effective rate is that pay over
    their whole session (the pool's time taken, else entry to last activity), flagged under `minimum_wage`."""
    participants = list(PanelParticipant.objects.filter(study=study).select_related("link", "user"))
    if not participants:
        return []
    users = [p.user_id for p in participants]
    times: dict[int, list] = {u: [] for u in users}
    for source in (
        Rating.objects.filter(response__prompt__study=study, rater_id__in=users).values_list("rater_id",
                                                                                              "seconds_on_item"),
        PairJudgment.objects.filter(pair__study=study, rater_id__in=users).values_list("rater_id", "seconds_on_item"),
        GoldAnswer.objects.filter(assignment__study=study, assignment__rater_id__in=users)
        .values_list("assignment__rater_id", "seconds_on_item"),
        PairGoldAnswer.objects.filter(assignment__study=study, assignment__rater_id__in=users)
        .values_list("assignment__rater_id", "seconds_on_item"),
    ):
        for user_id, seconds in source:
            times[user_id].append(seconds)
    skipped = _skip_seconds(study, users)
    for user_id, skips in skipped.items():
        times[user_id].extend(seconds for _, seconds in skips)
    gold = {u: [0, 0] for u in users}
    rubric, tolerance = study.rubric(), study.calibration_max_mae
    for user_id, values, references in GoldAnswer.objects.filter(
            assignment__study=study, assignment__rater_id__in=users).values_list(
            "assignment__rater_id", "values", "assignment__gold_item__references"):
        errors = answer_errors(rubric, values, references)
        gold[user_id][0] += 1
        # Right when the mean error is within the study's calibration tolerance (the same rule as calibration).
        gold[user_id][1] += bool(errors) and sum(errors) / len(errors) <= tolerance
    for answer in PairGoldAnswer.objects.filter(assignment__study=study, assignment__rater_id__in=users
                                                ).select_related("assignment"):
        gold[answer.assignment.rater_id][0] += 1
        gold[answer.assignment.rater_id][1] += answer.correct
    pseudonyms = dict(StudyMembership.objects.filter(study=study, user_id__in=users, role=Role.RATER)
                      .values_list("user_id", "pseudonym"))
    seen = last_activity(study, participants)
    rows = []
    for p in participants:
        active, left_out, untimed = active_seconds(times[p.user_id], p.link.gap_minutes * 60)
        session = p.pool_seconds if p.pool_seconds is not None else (seen[p.user_id] - p.created_at).total_seconds()
        # Both times as the sheet prints them (SECONDS_DECIMALS), and pay and rate from those: anyone holding
        # the sheet gets the same effective rate from hourly_rate x active_seconds / session_seconds, which
        # whole seconds of a one-minute session did not allow.
        active, session = round(active, SECONDS_DECIMALS), round(session, SECONDS_DECIMALS)
        exact_pay = hourly_rate * active / 3600
        pay = round(exact_pay, 2)
        # From the pay before rounding to cents: the rounding must not tip a row over or under the minimum.
        effective = exact_pay / (session / 3600) if session and session > 0 else None
        answered, right = gold[p.user_id]
        rows.append(PayRow(
            participant=p, pseudonym=pseudonyms.get(p.user_id, ""), items=len(times[p.user_id]),
            skipped=sum(reason != DISTRESS_SKIP for reason, _ in skipped[p.user_id]),
            skipped_distressing=sum(reason == DISTRESS_SKIP for reason, _ in skipped[p.user_id]),
            active_seconds=active, left_out=left_out, untimed=untimed, session_seconds=session,
            calibration=rater_status(study=study, user=p.user).calibration, gold_answered=answered, gold_right=right,
            pay=pay, effective_hourly=None if effective is None else round(effective, 2),
            below_minimum=None if minimum_wage is None or effective is None else effective < minimum_wage,
            bonus=None if bonus_accuracy is None else answered > 0 and right / answered >= bonus_accuracy,
        ))
    return rows


def _minimum_cell(row: PayRow, minimum_wage: float | None) -> str:
    if minimum_wage is None:
        return NO_MINIMUM
    if row.below_minimum is None:
        return "n/a (no session time)"
    return "yes" if row.below_minimum else "no"


def _bonus_cell(row: PayRow) -> str:
    # Blank was ambiguous (not eligible, or not asked?): every cell says which.
    if row.bonus is None:
        return NO_THRESHOLD
    if row.gold_answered == 0:
        return "no (no gold answered)"
    return "yes" if row.bonus else "no"


def pay_sheet(rows: list[PayRow], *, hourly_rate: float, minimum_wage: float | None = None,
              bonus_accuracy: float | None = None) -> list[list]:
    """The payment sheet's cells, in PAY_HEADER's order."""
    return [[r.pseudonym, r.participant.participant_id, r.participant.status, r.participant.outcome_code, r.items,
             r.skipped, r.skipped_distressing, r.active_seconds, r.participant.link.gap_minutes * 60, r.left_out, r.untimed,
             r.session_seconds, r.calibration, r.gold_answered,
             r.gold_right, None if r.gold_accuracy is None else round(r.gold_accuracy, 3), hourly_rate,
             f"{r.pay:.2f}", r.effective_hourly, _minimum_cell(r, minimum_wage),
             NO_THRESHOLD if bonus_accuracy is None else bonus_accuracy, _bonus_cell(r), TIME_BASIS] for r in rows]
