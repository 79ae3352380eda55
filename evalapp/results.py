"""The study's results: computed off the request path by a task, stored per state of the data, read by the pages.

The rows are evalapp.exports.tables' (the ratings export) and the statistics are evalapp.analysis
(pure), so what the results page shows is recomputable from the exported CSV. One computation
(evalapp.results_models.ResultsComputation) holds the results, the plots' summary and the text report,
keyed by a fingerprint of everything they depend on: a page showing four plots reads one row, and a
page never computes. A page asks `results_state`: the latest finished computation, whether the data has
changed since (stale), and the progress of the one under way; it queues one when the data has none.
Without a broker (the demo, the tests) the task runs in the process at once, through the same code.
"""

import hashlib
import json
import logging
import secrets
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from itertools import combinations

from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils import timezone
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from modelserver.judge_models import JudgeAnswer
from raters.models import StudyMembership

from . import plots
from . import analysis  # called as analysis.analyze_long: one name to patch in tests
from .text_report import length_score_points, text_report
from .exports.tables import analysis_records, rating_rows
from .models import Adjudication, Rating, Response, SafetyDecision, Study
from .results_models import ComputationStatus, ResultsComputation, decode_entry, encode_entry

logger = logging.getLogger(__name__)

N_BOOT = 2000
COMPUTE_RESULTS = "evalapp.compute_results"
# A 5,000-response study computes in ~4 s and every stage renews the heartbeat, so a row RUNNING this long
# without one lost its worker, and one QUEUED this long lost its message: either is sent again.
LEASE = timedelta(minutes=15)
# Finished computations kept per study (the newest): the page shows the latest, the rest are history.
KEEP = 3


def _fingerprint(study: Study, n_boot: int = N_BOOT) -> str:
    """Everything the entry depends on: ratings, adjudications, safety decisions, who counts (exclusions,
    withdrawals, rater groups), the responses (text measures), the score policy, the rubric and n_boot."""
    ratings = Rating.objects.filter(response__prompt__study=study).aggregate(n=Count("id"), m=Max("id"),
                                                                             u=Max("updated_at"))
    adjudications = Adjudication.objects.filter(response__prompt__study=study).aggregate(n=Count("id"), m=Max("id"))
    decisions = SafetyDecision.objects.filter(response__prompt__study=study).aggregate(n=Count("id"), m=Max("id"))
    members = StudyMembership.objects.filter(study=study)
    who = members.exclude(excluded_at=None, withdrawn_at=None).aggregate(n=Count("id"), e=Max("excluded_at"),
                                                                        w=Max("withdrawn_at"))
    groups = sorted(members.exclude(group="").values_list("user_id", "group"))
    responses = Response.objects.filter(prompt__study=study).aggregate(n=Count("id"), m=Max("id"))
    parts = [study.id, n_boot, study.score_policy, ratings, adjudications, decisions, who, groups, responses,
             study.rubric()]
    return hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ResultsState:
    """What a results page shows: `shown`, the latest finished computation (None before the first), and
    `current`, the computation of the data as it is now (queued, running, done or failed)."""

    shown: ResultsComputation | None
    current: ResultsComputation

    @cached_property
    def entry(self) -> dict | None:
        return decode_entry(self.shown.entry) if self.shown else None

    @property
    def data(self) -> dict | None:
        return self.entry["results"] if self.entry else None

    @property
    def plots(self) -> dict | None:
        return self.entry["plots"] if self.entry else None

    @property
    def stale(self) -> bool:
        return self.shown is not None and self.shown.pk != self.current.pk

    @property
    def computed_at(self):
        return self.shown.finished_at if self.shown else None

    def progress(self) -> dict:
        return self.current.progress()

    def as_json(self) -> tuple[dict, int]:
        """(body, HTTP status) for the page's JSON and the API: 202 with the progress while nothing has been
        computed; else the latest results with `stale` (the data changed since), `computed_at` and the progress."""
        if self.data is None:
            return {"status": self.current.status, "progress": self.progress()}, 202
        return {**self.data, "stale": self.stale, "computed_at": self.computed_at.isoformat(),
                "progress": self.progress()}, 200


def results_state(study: Study, *, n_boot: int = N_BOOT) -> ResultsState:
    """The latest computed results, whether the data changed since, and the current computation's progress;
    queues the computation of the current data when it has none. Reads rows only: never computes here,
    except without a broker, where the queued task runs in this process."""
    current = _current(study, n_boot)
    if current.status == ComputationStatus.DONE:
        return ResultsState(shown=current, current=current)
    shown = (ResultsComputation.objects.filter(study=study, n_boot=n_boot, status=ComputationStatus.DONE)
             .order_by("-finished_at", "-id").first())
    return ResultsState(shown=shown, current=current)


def study_results(study: Study, *, n_boot: int = N_BOOT) -> dict | None:
    """Agreement and the model comparison per scale, as last computed; None while none has finished."""
    return results_state(study, n_boot=n_boot).data


def plot_inputs(study: Study) -> tuple[dict, dict] | None:
    """(plots.summarize of the records, the results) of the latest computation; None before the first."""
    state = results_state(study)
    return (state.plots, state.data) if state.entry else None


def _current(study: Study, n_boot: int) -> ResultsComputation:
    now = timezone.now()
    # Unique per (study, fingerprint): a second tab or a retried request gets this row, not a second one.
    row, created = ResultsComputation.objects.get_or_create(
        study=study, fingerprint=_fingerprint(study, n_boot), defaults={"n_boot": n_boot, "queued_at": now})
    if created or (_lost(row, now) and _requeue(row, now)):
        _send(row.pk)
        if settings.CELERY_TASK_ALWAYS_EAGER:
            row.refresh_from_db()  # it ran here
    return row


def _lost(row: ResultsComputation, now) -> bool:
    if row.status == ComputationStatus.QUEUED:
        return row.queued_at < now - LEASE
    return row.status == ComputationStatus.RUNNING and (row.heartbeat_at or row.queued_at) < now - LEASE


def _requeue(row: ResultsComputation, now) -> bool:
    # Conditional on what this request read: of many pages seeing the lapse at once, one sends the message.
    return bool(ResultsComputation.objects.filter(pk=row.pk, status=row.status, queued_at=row.queued_at,
                                                  heartbeat_at=row.heartbeat_at).update(queued_at=now))


def _send(computation_id: int) -> None:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        # No broker (the demo, the tests): run now, in this process, as a worker would. Nothing else can
        # run it, and the row need not be committed for this thread to read it.
        compute_results.apply(args=(computation_id,))
        return

    def publish():
        try:
            # No publish retries: a broker that is down must not hold the page for their backoff.
            compute_results.apply_async(args=(computation_id,), retry=False)
        except OperationalError as exc:
            # The row stays QUEUED; a page asking after a lease sends it again.
            logger.warning("The queue does not answer; results computation %s waits: %s", computation_id, exc)

    transaction.on_commit(publish)  # a worker must find the row


class _ClaimLost(Exception):
    """Another worker took the row over (this one's heartbeat lapsed): stop, write nothing."""


@shared_task(name=COMPUTE_RESULTS, bind=True, acks_late=True)
def compute_results(self, computation_id: int) -> None:
    """Compute one ResultsComputation's entry, its stage written as it goes; on failure, the error and no
    entry. The claim is a conditional update, so two workers (or a redelivered message) never both run it."""
    now, token = timezone.now(), secrets.token_hex(8)
    claimed = ResultsComputation.objects.filter(
        Q(status=ComputationStatus.QUEUED) | Q(status=ComputationStatus.RUNNING, heartbeat_at__lt=now - LEASE),
        pk=computation_id,
    ).update(status=ComputationStatus.RUNNING, claim=token, task_id=self.request.id or "", started_at=now,
             heartbeat_at=now, stage="starting", percent=0, error="")
    row = ResultsComputation.objects.select_related("study").filter(pk=computation_id).first()
    if not claimed or row is None:
        logger.info("Results computation %s: gone, finished or held by a live worker; nothing to do", computation_id)
        return
    mine = ResultsComputation.objects.filter(pk=computation_id, claim=token, status=ComputationStatus.RUNNING)

    def progress(stage: str, percent: int) -> None:
        if not mine.update(stage=stage, percent=percent, heartbeat_at=timezone.now()):
            raise _ClaimLost

    try:
        entry = encode_entry(compute_entry(row.study, row.n_boot, progress))
    except _ClaimLost:
        logger.warning("Results computation %s was taken over by another worker; dropping this one", computation_id)
        return
    except Exception as exc:  # noqa: BLE001  (any error is the computation's: recorded, shown, not retried)
        logger.exception("Results computation %s failed", computation_id)
        mine.update(status=ComputationStatus.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000],
                    finished_at=timezone.now())
        return
    if mine.update(status=ComputationStatus.DONE, entry=entry, stage="done", percent=100,
                   finished_at=timezone.now(), heartbeat_at=timezone.now()):
        _prune(row.study_id)


def _prune(study_id: int) -> None:
    """Keep the KEEP newest finished computations of the study, and failures newer than the oldest kept."""
    done = ResultsComputation.objects.filter(study_id=study_id, status=ComputationStatus.DONE)
    kept = list(done.order_by("-finished_at", "-id").values_list("id", "finished_at")[:KEEP])
    done.exclude(id__in=[pk for pk, _ in kept]).delete()
    if len(kept) == KEEP:
        ResultsComputation.objects.filter(study_id=study_id, status=ComputationStatus.FAILED,
                                          finished_at__lt=kept[-1][1]).delete()


def compute_entry(study: Study, n_boot: int, progress=lambda stage, percent: None) -> dict:
    """The results, the plots' summary and the text report of the study's data as it is now."""
    progress("loading records", 5)
    records = analysis_records(rating_rows(study))
    entry = {"results": _analyse(study, records, n_boot, progress)}
    progress("plots", 80)
    entry["plots"] = plots.summarize(records)
    # Text measures describe what the arms wrote (ROUGE's stemmer costs about 2 ms a response), and are
    # computed with the ratings since they are correlated with scores.
    progress("text measures", 90)
    scored = [r for r in records if r["level"] != "nominal"]  # option indices don't correlate with length
    entry["results"]["text"] = text_report(study, scored)
    entry["plots"]["length_score"] = length_score_points(study, scored)
    return entry


def judge_cache_key(study: Study, judge_id: int, n_boot: int) -> str:
    """The key of one judge's arm comparison (evalapp.judge_results): an entry of its own, so nothing a
    judge answers can reach the human results' entry, keyed by the judge's answers and the exclusions."""
    answers = JudgeAnswer.objects.filter(judge_id=judge_id, response__isnull=False).aggregate(n=Count("id"),
                                                                                               m=Max("id"))
    parts = [study.id, judge_id, answers["n"], answers["m"],
             SafetyDecision.objects.filter(response__prompt__study=study).aggregate(m=Max("id"))["m"],
             [(c["key"], c["level"]) for c in study.rubric()]]
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]
    return f"judge-computed:{study.id}:{judge_id}:{digest}:{n_boot}"


def results_forget(study: Study) -> None:
    """Drop the study's computed results and its judges' cached comparisons (a deleted study's numbers must
    not outlive it). Judge entries of earlier states of the data are unreachable already and expire."""
    ResultsComputation.objects.filter(study=study).delete()
    try:
        cache.delete_many([judge_cache_key(study, judge_id, N_BOOT)
                           for judge_id in study.judges.values_list("id", flat=True)])
    except RedisError as exc:
        # The entry is keyed by the study's data, which is gone: nothing will ask for it, and it expires.
        logger.warning("Results cache unavailable, not forgetting study %s's judge entries: %s", study.id, exc)


def _analyse(study: Study, records: list[dict], n_boot: int, progress=lambda stage, percent: None) -> dict:
    result = {"n_rows": len(records), "simulated": any(r["simulated"] for r in records), "policy": study.score_policy,
              "arm_labels": sorted({r["arm"] for r in records})}
    if records and len({r["rater"] for r in records if not r["not_sure"]}) >= 2:
        seed = study.design_seed % (2**31)
        rows = [{"item": r["item"], "rater": r["rater"], "scale": r["scale"], "score": r["score"], "arm": r["arm"],
                 "prompt": r["prompt"], "level": r["level"], "not_sure": r["not_sure"]} for r in records]
        arms = {r["arm"] for r in rows}
        fit_mixed = True  # evalapp.stats.mixed fits any study's size in seconds (bench/RESULTS.md)
        progress("agreement", 20)
        if len(arms) == 2:
            result["agreement"] = analysis.analyze_long(rows, n_boot=n_boot, seed=seed, fit_mixed=fit_mixed)
            progress("comparison", 50)
            if any(r["comparison_score"] != r["score"] for r in records):
                # Agreement is about the raters' own scores; the comparison uses the policy's scores.
                for row, record in zip(rows, records, strict=True):
                    row["score"] = record["comparison_score"]
                result["comparison"] = analysis.analyze_long(rows, n_boot=n_boot, seed=seed, fit_mixed=fit_mixed)
            else:
                result["comparison"] = result["agreement"]
            result["comparisons"] = {result["comparison"]["settings"]["contrast"]: result["comparison"]} \
                if "contrast" in result["comparison"]["settings"] else {}
        else:
            result["agreement"] = analysis.analyze_long([{k: v for k, v in r.items() if k != "arm"} for r in rows],
                                               n_boot=n_boot, seed=seed)
            if len(arms) > 2:
                progress("comparison", 50)
                # Every pair of arms on its own (a prompt-engineered baseline is a third arm). Holm
                # adjusts across criteria within a pair; the pairs are not adjusted for each other.
                for row, record in zip(rows, records, strict=True):
                    row["score"] = record["comparison_score"]
                result["comparisons"] = {}
                for first, second in combinations(sorted(arms), 2):
                    pair = [r for r in rows if r["arm"] in (first, second)]
                    result["comparisons"][f"{second} - {first}"] = analysis.analyze_long(pair, n_boot=n_boot, seed=seed,
                                                                               fit_mixed=fit_mixed)
                result["comparison_note"] = (
                    f"{len(arms)} arms: each pair is compared on its own prompts; p-values are Holm-adjusted across "
                    "criteria within a pair, not across the pairs.")
        result["arm_means"] = arm_means(records, {c["key"]: (c["min"], c["max"]) for c in study.rubric()})
    result["subgroups"] = subgroups(records, study)
    unsafe = defaultdict(lambda: [0, 0])
    first = next(iter(study.rubric()), {}).get("key")  # one row per rating: its first criterion's
    for r in records:
        if r["scale"] == first:
            unsafe[r["arm"]][0] += r["unsafe"]
            unsafe[r["arm"]][1] += 1
    result["unsafe_flags"] = {arm: {"flagged": k, "ratings": n} for arm, (k, n) in unsafe.items()}
    result["confirmed_harmful"] = _harmful_by_arm(study)
    return result


def _harmful_by_arm(study: Study) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for label in SafetyDecision.objects.filter(response__prompt__study=study, classification="harmful").values_list(
        "response__arm__label", flat=True
    ):
        counts[label] += 1
    return dict(counts)


def arm_means(records: list[dict], bounds: dict | None = None) -> dict[str, dict[str, dict]]:
    """Mean per arm and likert criterion over per-prompt means, with a t-based 95% CI (prompts are
    the units); "not sure" answers are left out."""
    import numpy as np
    from scipy import stats

    per_prompt: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("level") != "nominal" and r["comparison_score"] is not None:
            per_prompt[(r["scale"], r["arm"])][r["prompt"]].append(r["comparison_score"])
    out: dict[str, dict[str, dict]] = defaultdict(dict)
    for (scale, arm), prompts in sorted(per_prompt.items()):
        means = np.array([np.mean(v) for v in prompts.values()])
        if means.size > 1:
            half = stats.t.ppf(0.975, means.size - 1) * means.std(ddof=1) / np.sqrt(means.size)
            ci = [float(means.mean() - half), float(means.mean() + half)]
            if bounds and scale in bounds:  # a t interval past the scale's ends is clipped to them
                ci = [max(ci[0], bounds[scale][0]), min(ci[1], bounds[scale][1])]
        else:
            ci = [None, None]
        out[scale][arm] = {"mean": float(means.mean()), "ci95": ci, "n_prompts": int(means.size)}
    return dict(out)


def subgroups(records: list[dict], study: Study, min_prompts: int = 3) -> dict:
    """The arm difference per prompt topic and per rater group, Holm-corrected over every subgroup test.

    Subgroups are exploratory: the number of comparisons is reported with the correction, and a
    subgroup needs at least `min_prompts` prompts rated in both arms to be tested at all.
    """
    import numpy as np

    from .stats.comparison import holm, per_prompt_differences, wilcoxon_test

    arms = sorted({r["arm"] for r in records})
    if len(arms) != 2:
        return {"tests": [], "n_comparisons": 0}
    tests = []
    likert = [c["key"] for c in study.rubric() if c["level"] != "nominal"]
    records = [r for r in records if r["comparison_score"] is not None]
    for kind in ("topic", "rater_group"):
        for value in sorted({r[kind] for r in records if r[kind]}):
            for scale in likert:
                rows = [r for r in records if r[kind] == value and r["scale"] == scale]
                _, diffs = per_prompt_differences([r["prompt"] for r in rows], [r["rater"] for r in rows],
                                                  [arms.index(r["arm"]) for r in rows],
                                                  [r["comparison_score"] for r in rows])
                if diffs.size < min_prompts:
                    continue
                test = wilcoxon_test(diffs) or {}
                tests.append({"kind": kind, "value": value, "scale": scale, "n_prompts": int(diffs.size),
                              "mean_diff": float(np.mean(diffs)), "p": test.get("p")})
    adjusted = holm({str(i): t["p"] for i, t in enumerate(tests)})
    for i, t in enumerate(tests):
        t["p_holm"] = adjusted[str(i)]
    return {"contrast": f"{arms[1]} - {arms[0]}", "tests": tests,
            "n_comparisons": sum(t["p"] is not None for t in tests), "correction": "Holm over all subgroup tests"}
