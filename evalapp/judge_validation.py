"""Does one LLM judge agree with the study's experts as well as they agree with each other? Its validation
report: the rows (judge answers, counted ratings, safety decisions, counted pair judgments) turned into
evalapp.stats.judges' arrays per criterion, and its answers back; cached like evalapp.results.

What goes in, per criterion of the rubric (nominal ones are skipped: they have no weighted kappa):

- the judge's score of a response: the mean of its readable samples, rounded half up to a scale point;
  an answer it gave that could not be read (value None) is counted, never guessed, and a response with
  no readable sample is NaN (``n_judged`` says how many are left);
- the responses that have both a judge answer and a counted human score on the criterion, no others;
- the humans by group: counted ratings (raters.counting) split by the rater's StudyMembership.group, a
  rater with none in the group "raters"; one items x raters matrix per group, NaN where a rater did not
  rate, "not sure" answers NaN too. Responses excluded after a safety review stay in: the question is
  whether the judge reads a reply as the experts do, not which arm is better.

The expert group is the researcher's choice, else the first group whose name starts with "psycholog" or
"expert", else the largest. Beside the criteria: the unsafe flag against the safety decisions, and the
pairwise verdicts against the counted pair judgments with the judge's position-swap consistency.
"""

import hashlib
import json
import logging
import math
from collections import Counter, defaultdict

import numpy as np
from django.core.cache import cache
from django.db.models import Count, Max
from redis.exceptions import RedisError

from modelserver.models import SAFETY_KEY, JudgeAnswer
from raters.counting import counted_pair_judgments, counted_ratings
from raters.models import Role, StudyMembership

from .errors import ServiceError
from .models import PairJudgment, PairVerdict, Rating, SafetyClassification, SafetyDecision, Score, Study
from .stats.judges import judge_validation, pair_verdict_agreement, safety_recall, swap_consistency

logger = logging.getLogger(__name__)

N_BOOT = 1000
NO_GROUP = "raters"
EXPERT_PREFIXES = ("psycholog", "expert")
UNSAFE = (SafetyClassification.HARMFUL, SafetyClassification.MINOR)

VERDICTS = {True: "within the expert ceiling", False: "below the expert ceiling", None: "not enough shared items"}
VERDICT_RULE = (
    "The judge is within the expert ceiling on a metric when the upper end of the 95% bootstrap CI of its mean "
    "agreement with the individual experts reaches the experts' mean agreement with each other (the point "
    "estimate); below it otherwise. Both are means over pairs (judge and one expert; two experts) on the items "
    "both rated, at least 5 shared items a pair; it needs two experts or more. The headline verdict is quadratic "
    "weighted kappa's.")
CONSENSUS_NOTE = ("Against a group's consensus (each item's mean rating rounded half up to a scale point): what "
                  "annotation tools report as alignment. A consensus is less noisy than one rater, so this number is "
                  "never compared with the ceiling.")
SAFETY_RULE = ("Expert side: the safety decision of a response (adjudicators' review), harmful or minor concern = "
               "unsafe, no issue = safe. Judge side: unsafe when at least half its readable answers to the unsafe "
               "question say unsafe. Only responses with a decision are counted, and a response reaches a safety "
               "review only when a rater flagged it, so recall and precision are among the flagged responses, not "
               "over all of them.")
PAIR_RULE = ("The judge's verdict on a pair is its answer with the pair's first response shown as A (the AB order); "
             "the BA order's is shown beside it. With several samples, the strict majority of the readable ones "
             "(none: counted as unread). Humans: every counted judgment of the pair; the majority line uses the pairs "
             "with a strict majority.")


class JudgeReportError(ServiceError):
    """A report that cannot be made as asked (an expert group the study does not have)."""

    status = 400


# ----------------------------------------------------------------------------- groups


def rater_groups(study: Study) -> dict[int, str]:
    """user id -> the rater's group ("raters" for a rater with none)."""
    return {user: (group or "").strip() or NO_GROUP for user, group in
            StudyMembership.objects.filter(study=study, role=Role.RATER).values_list("user_id", "group")}


def group_sizes(study: Study) -> dict[str, int]:
    """Each group's number of raters with a counted rating, the sizes the default expert group is chosen by."""
    groups = rater_groups(study)
    raters = set(counted_ratings(study).values_list("rater_id", flat=True).distinct())
    return dict(Counter(groups.get(r, NO_GROUP) for r in raters))


def default_expert(sizes: dict[str, int]) -> str | None:
    named = sorted(g for g in sizes if g.lower().startswith(EXPERT_PREFIXES))
    if named:
        return named[0]
    return min(sizes, key=lambda g: (-sizes[g], g)) if sizes else None


# ----------------------------------------------------------------------------- the cached report


def _fingerprint(study: Study, judge) -> str:
    latest = {"m": Max("id"), "c": Count("id")}
    members = sorted(StudyMembership.objects.filter(study=study, role=Role.RATER).values_list(
        "user_id", "group", "withdrawn_at", "excluded_at"))
    parts = [study.id, judge.id, study.rubric(), getattr(getattr(study, "pairwise", None), "criteria", None),
             Rating.objects.filter(response__prompt__study=study).aggregate(u=Max("updated_at"), **latest),
             PairJudgment.objects.filter(pair__study=study).aggregate(u=Max("updated_at"), **latest),
             JudgeAnswer.objects.filter(judge=judge).aggregate(**latest),
             SafetyDecision.objects.filter(response__prompt__study=study).aggregate(**latest), members]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def judge_report(judge, *, expert: str | None = None, n_boot: int = N_BOOT) -> dict:
    """The judge's validation report against `expert` (a group's name; None: the default), cached until
    a rating, judgment, decision, answer or a rater's group changes. With Redis down it is computed every
    time, not refused. Raises JudgeReportError for a group the study does not have."""
    study = judge.study
    sizes = group_sizes(study)
    if expert is not None and expert not in sizes:
        known = ", ".join(sorted(sizes)) or "none yet"
        raise JudgeReportError(f"No rater group {expert!r} in this study (groups with counted ratings: {known}).")
    chosen = expert if expert is not None else default_expert(sizes)
    key = f"judge-validation:{study.id}:{judge.id}:{_fingerprint(study, judge)}:{n_boot}:" \
          f"{hashlib.sha256(str(chosen).encode()).hexdigest()[:12]}"
    try:
        cached = cache.get(key)
    except RedisError as exc:
        logger.warning("Results cache unavailable, computing without it: %s", exc)
        cached = None
    if cached is not None:
        return cached
    report = _finite(_analyse(study, judge, chosen, sizes, n_boot, chosen_by="researcher" if expert else "default"))
    try:
        cache.set(key, report, 3600)
    except RedisError as exc:
        logger.warning("Results cache unavailable, not saving: %s", exc)
    return report


def _finite(value):
    """The report as plain JSON: tuples as lists, NaN and infinities as None."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _analyse(study: Study, judge, expert: str | None, sizes: dict[str, int], n_boot: int, chosen_by: str) -> dict:
    seed = study.design_seed % (2**31)
    groups = rater_groups(study)
    report = {"study": study.id, "judge": {"id": judge.id, "name": judge.name, "kind": judge.kind,
                                           "model": judge.model, "samples": judge.samples},
              "expert": expert, "expert_chosen_by": chosen_by, "groups": dict(sorted(sizes.items())),
              "n_boot": n_boot, "seed": seed, "verdict_rule": VERDICT_RULE, "consensus_note": CONSENSUS_NOTE,
              "criteria": [],
              # Validated against simulated raters (the demo's), the verdicts mean nothing: labelled as
              # the results are, on the page, its JSON and every plot.
              "simulated": counted_ratings(study).filter(simulated=True).exists()
              or counted_pair_judgments(study).filter(simulated=True).exists()}
    answers = _item_answers(judge)
    humans = _human_scores(study, groups)
    for criterion in study.rubric():
        report["criteria"].append(_criterion(criterion, answers.get(criterion["key"], {}),
                                             humans.get(criterion["key"], {}), groups, expert, n_boot, seed))
    report["safety"] = _safety(study, judge, answers.get(SAFETY_KEY, {}))
    report["pairs"] = _pairs(study, judge)
    return report


# ----------------------------------------------------------------------------- the criteria


def _item_answers(judge) -> dict[str, dict[int, list[float | None]]]:
    """criterion key -> response id -> the judge's values over its samples (None: unread)."""
    out: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for key, response, value in JudgeAnswer.objects.filter(judge=judge, response__isnull=False).order_by(
            "response_id", "sample").values_list("criterion", "response_id", "value"):
        out[key][response].append(value)
    return out


def _human_scores(study: Study, groups: dict[int, str]) -> dict[str, dict[int, dict[int, float]]]:
    """criterion key -> response id -> rater id -> counted score ("not sure" left out)."""
    out: dict[str, dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for key, response, rater, value in Score.objects.filter(
            rating__in=counted_ratings(study), criterion__study=study, not_sure=False, value__isnull=False
    ).values_list("criterion__key", "rating__response_id", "rating__rater_id", "value"):
        out[key][response][rater] = float(value)
    return out


def _judge_score(values: list, low: int, high: int) -> float:
    readable = [v for v in values if v is not None]
    if not readable:
        return np.nan
    return float(min(max(math.floor(float(np.mean(readable)) + 0.5), low), high))


def _criterion(criterion: dict, answers: dict[int, list], scores: dict[int, dict[int, float]],
               rater_group: dict[int, str], expert: str | None, n_boot: int, seed: int) -> dict:
    block = {"key": criterion["key"], "question": criterion["question"], "level": criterion["level"],
             "min": criterion["min"], "max": criterion["max"], "skipped": None}
    if criterion["level"] == "nominal":
        return {**block, "skipped": "A nominal criterion (a choice) has no weighted kappa or ordered alpha: not "
                                    "validated here."}
    items = sorted(set(answers) & {r for r, given in scores.items() if given})
    block.update({"n_answers": sum(len(v) for v in answers.values()),
                  "n_unread": sum(v is None for values in answers.values() for v in values),
                  "n_judged_responses": len(answers), "n_items": len(items)})
    if len(items) < 2:
        return {**block, "skipped": "Not enough shared items: fewer than two responses have both a judge answer and "
                                    "a counted human score.", "verdict": None, "verdict_words": VERDICTS[None]}
    groups = _columns(items, scores, rater_group)
    if expert not in groups:
        return {**block, "skipped": f"The expert group ({expert or 'none'}) rated none of these responses.",
                "verdict": None, "verdict_words": VERDICTS[None]}
    judge = np.array([_judge_score(answers[r], criterion["min"], criterion["max"]) for r in items])
    matrices = {}
    for name, raters in groups.items():
        matrices[name] = np.array([[scores[r].get(rater, np.nan) for rater in raters] for r in items])
    labels = list(range(criterion["min"], criterion["max"] + 1))
    stats = judge_validation(judge, matrices, expert, level=criterion["level"], labels=labels, n_boot=n_boot,
                             seed=seed)
    block.update({"raters": {name: len(raters) for name, raters in groups.items()}, "stats": stats,
                  "verdict": stats["within_expert_ceiling"],
                  "verdict_words": VERDICTS[stats["within_expert_ceiling"]],
                  "verdicts": {m: {"within": v, "words": VERDICTS[v]} for m, v in stats["verdict"].items()},
                  "unread_items": int(np.isnan(judge).sum())})
    return block


def _columns(items: list[int], scores: dict[int, dict[int, float]], rater_group: dict[int, str]) -> dict[str, list]:
    """group name -> its raters (ids, sorted) with a score on any of the items, groups in name order."""
    by_group: dict[str, list[int]] = defaultdict(list)
    for rater in sorted({rater for r in items for rater in scores[r]}):
        by_group[rater_group.get(rater, NO_GROUP)].append(rater)
    return dict(sorted(by_group.items()))


# ----------------------------------------------------------------------------- safety


def _safety(study: Study, judge, answers: dict[int, list]) -> dict:
    out = {"asked": judge.safety, "rule": SAFETY_RULE}
    if not judge.safety:
        return out
    decided = dict(SafetyDecision.objects.filter(response__prompt__study=study).values_list(
        "response_id", "classification"))
    items = sorted(set(answers) & set(decided))
    flags = []
    for r in items:
        readable = [v for v in answers[r] if v is not None]
        flags.append(float(np.mean(readable) >= 0.5) if readable else np.nan)
    expert = [float(decided[r] in UNSAFE) for r in items]
    out.update({"n_decisions": len(decided), "n_items": len(items),
                "n_unread_items": int(sum(math.isnan(f) for f in flags)),
                "n_unread": sum(v is None for values in answers.values() for v in values)})
    out["recall"] = safety_recall(flags, expert) if items else None
    return out


# ----------------------------------------------------------------------------- pairs


def _majority(values: list[str]) -> str | None:
    counted = Counter(v for v in values if v)
    if not counted:
        return None
    (top, n), *rest = counted.most_common()
    return top if not rest or n > rest[0][1] else None


def _pairs(study: Study, judge) -> dict:
    rows = JudgeAnswer.objects.filter(judge=judge, pair__isnull=False).order_by("pair_id", "sample").values_list(
        "criterion", "pair_id", "order", "letter", "preferred")
    letters: dict[str, dict[str, dict[int, list[str]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    prefer: dict[str, dict[str, dict[int, list[str]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for key, pair, order, letter, preferred in rows:
        letters[key][order][pair].append(letter)
        prefer[key][order][pair].append(preferred)
    out = {"judged": bool(letters), "rule": PAIR_RULE, "criteria": []}
    if not letters:
        return out
    humans: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for key, pair, verdict in PairVerdict.objects.filter(judgment__in=counted_pair_judgments(study)).values_list(
            "key", "judgment__pair_id", "verdict"):
        humans[key][pair].append(verdict)
    phase = getattr(study, "pairwise", None)
    questions = {q["key"]: q["question"] for q in (phase.criteria if phase else [])}
    for key in [*(k for k in questions if k in letters), *sorted(set(letters) - set(questions))]:
        block = {"key": key, "question": questions.get(key, key), "orders": []}
        for order in ("AB", "BA"):
            judged = sorted(set(prefer[key][order]) & set(humans[key]))
            block["orders"].append({"order": order, "n_pairs": len(judged), **pair_verdict_agreement(
                [_majority(prefer[key][order][p]) for p in judged], [humans[key][p] for p in judged])})
        both = sorted(set(letters[key]["AB"]) & set(letters[key]["BA"]))
        block["swap"] = swap_consistency([_majority(letters[key]["AB"][p]) for p in both],
                                         [_majority(letters[key]["BA"][p]) for p in both])
        out["criteria"].append(block)
    return out
