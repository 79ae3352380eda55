"""Per-rater quality for the researcher: pure measures plus one function that gathers the rows."""

from collections import Counter, defaultdict
from dataclasses import dataclass
from statistics import median

from django.db.models import Min

from evalapp.models import Rating, Study

from .models import CalibrationAttempt, GoldAnswer, Role, StudyMembership


@dataclass
class RaterQuality:
    user_id: int
    pseudonym: str
    n_ratings: int
    gold_mae: float | None  # mean absolute error against gold references, both scales
    calibration_mae: float | None  # best finished attempt
    median_seconds: float | None
    straight_lining: float | None  # share of items given the rater's most common score pair
    agreement_mad: float | None  # mean absolute difference from the other raters' mean on shared items
    excluded: bool
    withdrawn: bool

    @property
    def flags(self) -> list[str]:
        flags = []
        if self.gold_mae is not None and self.gold_mae > 2.5:
            flags.append("misses gold items")
        if self.straight_lining is not None and self.n_ratings >= 10 and self.straight_lining >= 0.8:
            flags.append("straight-lining")
        if self.median_seconds is not None and self.n_ratings >= 5 and self.median_seconds < 5:
            flags.append("very fast")
        if self.agreement_mad is not None and self.agreement_mad > 3:
            flags.append("disagrees with others")
        return flags


def straight_lining(pairs: list[tuple[int, int]]) -> float | None:
    if not pairs:
        return None
    return Counter(pairs).most_common(1)[0][1] / len(pairs)


def agreement_mad(own: dict[int, tuple[int, int]], others: dict[int, list[tuple[int, int]]]) -> float | None:
    diffs = []
    for item, (empathy, fluency) in own.items():
        peers = others.get(item, [])
        if peers:
            diffs.append(abs(empathy - sum(p[0] for p in peers) / len(peers)))
            diffs.append(abs(fluency - sum(p[1] for p in peers) / len(peers)))
    return sum(diffs) / len(diffs) if diffs else None


def study_rater_quality(*, study: Study) -> list[RaterQuality]:
    memberships = list(StudyMembership.objects.filter(study=study, role=Role.RATER).select_related("user"))
    ratings = list(
        Rating.objects.filter(response__prompt__study=study).values_list(
            "rater_id", "response_id", "empathy", "fluency", "seconds_on_item"
        )
    )
    by_item: dict[int, dict[int, tuple[int, int]]] = defaultdict(dict)
    by_rater: dict[int, list] = defaultdict(list)
    for rater_id, response_id, empathy, fluency, seconds in ratings:
        by_item[response_id][rater_id] = (empathy, fluency)
        by_rater[rater_id].append((response_id, empathy, fluency, seconds))
    gold_errors: dict[int, list[float]] = defaultdict(list)
    for answer in GoldAnswer.objects.filter(assignment__study=study).select_related("assignment__gold_item"):
        item = answer.assignment.gold_item
        gold_errors[answer.assignment.rater_id] += [
            abs(answer.empathy - item.reference_empathy),
            abs(answer.fluency - item.reference_fluency),
        ]
    calibration = dict(
        CalibrationAttempt.objects.filter(study=study, finished_at__isnull=False)
        .values("rater_id")
        .annotate(best=Min("mean_absolute_error"))
        .values_list("rater_id", "best")
    )
    out = []
    for membership in memberships:
        uid = membership.user_id
        rows = by_rater.get(uid, [])
        own = {r[0]: (r[1], r[2]) for r in rows}
        others = {item: [v for rid, v in by_item[item].items() if rid != uid] for item in own}
        seconds = [r[3] for r in rows if r[3] is not None]
        errors = gold_errors.get(uid)
        out.append(
            RaterQuality(
                user_id=uid,
                pseudonym=membership.pseudonym or membership.user.get_username(),
                n_ratings=len(rows),
                gold_mae=sum(errors) / len(errors) if errors else None,
                calibration_mae=calibration.get(uid),
                median_seconds=median(seconds) if seconds else None,
                straight_lining=straight_lining([(r[1], r[2]) for r in rows]),
                agreement_mad=agreement_mad(own, others),
                excluded=membership.excluded_at is not None,
                withdrawn=membership.withdrawn_at is not None,
            )
        )
    return out
