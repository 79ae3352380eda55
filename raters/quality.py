"""Per-rater quality for the researcher: pure measures plus one function that gathers the rows."""

from collections import Counter, defaultdict
from dataclasses import dataclass
from statistics import median

from django.db.models import Min

from evalapp.models import Rating, Score, Study
from evalapp.rubric import answer_errors

from .models import CalibrationAttempt, GoldAnswer, PairGoldAnswer, Role, StudyMembership


@dataclass
class RaterQuality:
    user_id: int
    pseudonym: str
    n_ratings: int
    # Errors and distances are shares of each criterion's scale (0 = the same answer, 1 = the far end;
    # a choice unlike the reference is 1), so the flags mean the same on 0-2 and 1-10 scales.
    gold_mae: float | None  # mean scaled error against gold references (evalapp.rubric.answer_errors)
    calibration_mae: float | None  # best finished attempt
    median_seconds: float | None
    straight_lining: float | None  # share of items given the rater's most common set of answers
    agreement_mad: float | None  # mean scaled distance from the other raters' mean, likert criteria, shared items
    excluded: bool
    withdrawn: bool
    # The pairwise phase's hidden gold pairs: answered, and answered right on every question.
    gold_pairs: int = 0
    gold_pairs_right: int = 0

    @property
    def flags(self) -> list[str]:
        flags = []
        # 0.28 and 0.33 of the scale are the 2.5 and 3 points these flags used on 1-10 scales.
        if self.gold_mae is not None and self.gold_mae > 0.28:
            flags.append("misses gold items")
        if self.straight_lining is not None and self.n_ratings >= 10 and self.straight_lining >= 0.8:
            flags.append("straight-lining")
        if self.median_seconds is not None and self.n_ratings >= 5 and self.median_seconds < 5:
            flags.append("very fast")
        if self.agreement_mad is not None and self.agreement_mad > 0.33:
            flags.append("disagrees with others")
        return flags


def straight_lining(answers: list[tuple]) -> float | None:
    if not answers:
        return None
    return Counter(answers).most_common(1)[0][1] / len(answers)


def agreement_mad(own: dict[int, dict[str, int]], others: dict[int, list[dict[str, int]]]) -> float | None:
    """Mean |own - others' mean| over shared items and the criteria both answered (likert values)."""
    diffs = []
    for item, answers in own.items():
        for key, value in answers.items():
            peers = [p[key] for p in others.get(item, []) if p.get(key) is not None]
            if value is not None and peers:
                diffs.append(abs(value - sum(peers) / len(peers)))
    return sum(diffs) / len(diffs) if diffs else None


def study_rater_quality(*, study: Study) -> list[RaterQuality]:
    memberships = list(StudyMembership.objects.filter(study=study, role=Role.RATER).select_related("user"))
    rubric = study.rubric()
    likert = {c["key"]: c for c in rubric if c["kind"] == "likert"}
    keys = [c["key"] for c in rubric]
    answers: dict[int, dict[str, int | None]] = defaultdict(dict)
    for rating_id, key, value in Score.objects.filter(rating__response__prompt__study=study).values_list(
            "rating_id", "criterion__key", "value"):
        answers[rating_id][key] = value
    ratings = list(
        Rating.objects.filter(response__prompt__study=study).values_list("id", "rater_id", "response_id", "seconds_on_item")
    )
    by_item: dict[int, dict[int, dict]] = defaultdict(dict)
    by_rater: dict[int, list] = defaultdict(list)
    for rating_id, rater_id, response_id, seconds in ratings:
        given = answers.get(rating_id, {})
        by_item[response_id][rater_id] = {k: (v - likert[k]["min"]) / (likert[k]["max"] - likert[k]["min"])
                                          for k, v in given.items() if k in likert and v is not None}
        by_rater[rater_id].append((response_id, tuple(given.get(k) for k in keys), seconds))
    gold_errors: dict[int, list[float]] = defaultdict(list)
    for answer in GoldAnswer.objects.filter(assignment__study=study).select_related("assignment__gold_item"):
        gold_errors[answer.assignment.rater_id] += answer_errors(rubric, answer.values,
                                                                 answer.assignment.gold_item.references, scaled=True)
    gold_pairs: dict[int, list[bool]] = defaultdict(list)
    for answer in PairGoldAnswer.objects.filter(assignment__study=study).select_related("assignment"):
        gold_pairs[answer.assignment.rater_id].append(answer.correct)
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
        own = {r[0]: by_item[r[0]][uid] for r in rows}
        others = {item: [v for rid, v in by_item[item].items() if rid != uid] for item in own}
        seconds = [r[2] for r in rows if r[2] is not None]
        errors = gold_errors.get(uid)
        out.append(
            RaterQuality(
                user_id=uid,
                pseudonym=membership.pseudonym or membership.user.get_username(),
                n_ratings=len(rows),
                gold_mae=sum(errors) / len(errors) if errors else None,
                calibration_mae=calibration.get(uid),
                median_seconds=median(seconds) if seconds else None,
                straight_lining=straight_lining([r[1] for r in rows]),
                agreement_mad=agreement_mad(own, others),
                excluded=membership.excluded_at is not None,
                withdrawn=membership.withdrawn_at is not None,
                gold_pairs=len(gold_pairs.get(uid, [])),
                gold_pairs_right=sum(gold_pairs.get(uid, [])),
            )
        )
    return out
