"""The study planner: how likely a design is to detect a difference of a given size, per criterion.

The statistics are evalapp.stats.planning (pure); this module turns a study into their inputs and their
output into a table and a plot, the one code path of the page (evalapp/views/planner.py) and of
`manage.py plan_study`:

- the components of a 1-10 criterion come from the study's own pilot (`score_pilot`: the counted
  ratings, raters.counting, of arm A's and arm B's responses, fitted by REML) or are entered;
- the design (prompts, raters per response, raters) is simulated `sims` times at each number of
  prompts; every criterion's curve uses the same seeds (common random numbers: criteria differ by
  their components, not by luck), so one `PlanRequest` gives one table, whoever runs it;
- one contrast at a time: arm B against arm A (evalapp.stats.planning's note on more arms).

Pairwise mode takes an entered PairwiseModel, or fits one per question of the study's pairwise phase
from its counted judgments of the pair of arm A and arm B (`pairwise_pilot_rows`, then
evalapp.stats.planning.estimate_pairwise_model: +1 when B's response won, 0 a tie, -1 when A's did);
a caller may also pass its own with `plan(..., pairwise_pilot=(model, effect))`.

A plan is cached under a hash of its request and of the pilot data it read, so the page and its plot
simulate once, and a new rating gives a new plan.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import asdict, dataclass, field, fields

import numpy as np
from django.core.cache import cache
from redis.exceptions import RedisError

from raters.counting import counted_pair_judgments, counted_ratings

from .models import Arm, CriterionKind, PairVerdict, SafetyDecision, Score, Study
from .stats.planning import Components, PairwiseModel, estimate_components, estimate_pairwise_model, power_curve

logger = logging.getLogger(__name__)

MODES = ("scores", "pairwise")
SOURCES = ("pilot", "entered")
# Bounds on one request, so that a plan answers within seconds (the page runs it in the request).
MAX_SIMS = 2000
MAX_POINTS = 8
MAX_PROMPTS = 1000
MAX_RATERS = 200
MAX_RATERS_PER_RESPONSE = 20
# Simulated scores, counted as sims x prompts x raters in the pool (the pool is shuffled per response)
# x criteria, summed over the points: about 5 s on one core at the cap (measured: 250 x 1000 x 200).
MAX_SCORE_WORK = 50_000_000
# Simulated pairwise studies (sims x points): each costs about 2 ms (its sign-flip test), 8 s at the cap.
MAX_PAIRWISE_STUDIES = 4000
PAIRWISE_LABEL = "preference"
COMPONENT_FIELDS = tuple(f.name for f in fields(Components) if f.name not in ("low", "high"))
PAIRWISE_FIELDS = tuple(f.name for f in fields(PairwiseModel))
COLUMNS = {"scores": [("power_wilcoxon", "power (Wilcoxon)"), ("power_t", "power (paired t)")],
           "pairwise": [("power_ties_aware", "power (ties-aware sign-flip)"), ("power_sign", "power (sign test)")]}


class PlanError(ValueError):
    """A request the planner refuses, with a message for the person who made it. `pilot` is True when
    the study's pilot is what falls short, so entering components instead would do."""

    def __init__(self, message: str, *, pilot: bool = False):
        super().__init__(message)
        self.pilot = pilot


@dataclass(frozen=True)
class PlanRequest:
    mode: str = "scores"
    criteria: tuple[str, ...] = ()
    arm_a: int | None = None
    arm_b: int | None = None
    source: str = "pilot"
    effect: float = 0.5
    prompts: tuple[int, ...] = (20, 40, 80, 160)
    raters_per_response: int = 3
    n_raters: int = 10
    sims: int = 500
    seed: int = 1
    alpha: float = 0.05
    # Entered values: Components fields (scores) or PairwiseModel fields (pairwise); missing ones
    # take the dataclass's default.
    entered: dict = field(default_factory=dict)


def check_request(req: PlanRequest) -> None:
    """The bounds of one request (PlanError naming the one it passes)."""
    if req.mode not in MODES:
        raise PlanError(f"The mode must be one of {', '.join(MODES)}.")
    if req.source not in SOURCES:
        raise PlanError(f"The source must be one of {', '.join(SOURCES)}.")
    if not req.prompts or len(req.prompts) > MAX_POINTS or not all(3 <= n <= MAX_PROMPTS for n in req.prompts):
        raise PlanError(f"Give 1 to {MAX_POINTS} numbers of prompts, each from 3 to {MAX_PROMPTS}.")
    if not 10 <= req.sims <= MAX_SIMS:
        raise PlanError(f"Simulations must be from 10 to {MAX_SIMS}.")
    if not 1 <= req.raters_per_response <= MAX_RATERS_PER_RESPONSE:
        raise PlanError(f"Raters per response must be from 1 to {MAX_RATERS_PER_RESPONSE}.")
    if not 0 < req.alpha < 0.5:
        raise PlanError("The significance level must be between 0 and 0.5.")
    if req.mode == "scores":
        if not req.criteria:
            raise PlanError("Choose at least one criterion.")
        if not 1 <= req.n_raters <= MAX_RATERS:
            raise PlanError(f"The number of raters must be from 1 to {MAX_RATERS}.")
        if req.raters_per_response > req.n_raters:
            raise PlanError(f"Each response needs {req.raters_per_response} raters but the pool has {req.n_raters}.")
        work = req.sims * sum(req.prompts) * req.n_raters * len(req.criteria)
        if work > MAX_SCORE_WORK:
            raise PlanError(f"This plan is too large to run here: simulations x prompts (summed over the list) x "
                            f"raters in the pool x criteria is {work:,}, and the cap is {MAX_SCORE_WORK:,}. Use fewer "
                            f"simulations, prompt counts or criteria (or manage.py plan_study, which has the same "
                            f"cap, per criterion at a time).")
    else:
        studies = req.sims * len(req.prompts)
        if studies > MAX_PAIRWISE_STUDIES:
            raise PlanError(f"This plan is too large to run here: simulations x prompt counts is {studies:,}, and "
                            f"the cap is {MAX_PAIRWISE_STUDIES:,}. Use fewer simulations or prompt counts.")
    unknown = set(req.entered) - set(COMPONENT_FIELDS if req.mode == "scores" else PAIRWISE_FIELDS)
    if unknown:
        raise PlanError(f"Unknown entered value(s) {', '.join(sorted(unknown))} for {req.mode} mode.")
    for name, value in req.entered.items():
        if not np.isfinite(value) or (name != "mean" and value < 0):
            raise PlanError(f"{name} must be a number of at least 0.")


def likert_criteria(study: Study) -> list[dict]:
    return [c for c in study.rubric() if c["kind"] == CriterionKind.LIKERT]


def _criterion(study: Study, key: str) -> dict:
    for c in study.rubric():
        if c["key"] == key:
            if c["kind"] != CriterionKind.LIKERT:
                raise PlanError(f"'{key}' is a choice of named options ({c['level']}): it has no mean to compare, "
                                "so the planner cannot plan it. Choose a scale (likert) criterion.")
            return c
    raise PlanError(f"The study has no criterion '{key}'.")


def _arms(study: Study, req: PlanRequest) -> tuple[Arm, Arm]:
    arms = {a.id: a for a in Arm.objects.filter(study=study, id__in=[req.arm_a, req.arm_b])}
    if req.arm_a == req.arm_b or len(arms) != 2:
        raise PlanError("Choose two different arms of this study (A, and B compared with it).")
    return arms[req.arm_a], arms[req.arm_b]


def _pilot_rows(study: Study, criterion_key: str, arm_a_id: int, arm_b_id: int) -> list[tuple]:
    """(prompt, rater, arm 0/1, value) of the counted ratings of the two arms, "not sure" left out, and
    responses excluded after a safety review left out as the results leave them out."""
    ratings = (counted_ratings(study).filter(response__arm_id__in=[arm_a_id, arm_b_id])
               .exclude(response_id__in=SafetyDecision.objects.filter(response__prompt__study=study, excluded=True)
                        .values("response_id")))
    rows = (Score.objects.filter(rating__in=ratings, criterion__study=study, criterion__key=criterion_key,
                                 not_sure=False)
            .order_by("rating_id")
            .values_list("rating__response__prompt_id", "rating__rater_id", "rating__response__arm_id", "value"))
    return [(p, r, int(arm == arm_b_id), v) for p, r, arm, v in rows]


def _fit_pilot(criterion: dict, rows: list[tuple]) -> tuple[Components, float, int]:
    key = criterion["key"]
    both = {p for p, _, arm, _ in rows if arm == 1} & {p for p, _, arm, _ in rows if arm == 0}
    n_raters = len({r for _, r, _, _ in rows})
    if len(both) < 3 or n_raters < 2:
        raise PlanError(f"The pilot is too small for '{key}': {len(rows)} counted ratings, {len(both)} prompts rated "
                        f"in both arms, {n_raters} raters; it needs at least 3 prompts rated in both arms by at "
                        "least 2 raters. Enter the components instead.", pilot=True)
    prompt, rater, arm, value = (np.asarray(column) for column in zip(*rows, strict=True))
    try:
        components, effect = estimate_components(prompt, rater, arm, value, low=criterion["min"],
                                                 high=criterion["max"])
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise PlanError(f"The pilot's model for '{key}' could not be fitted ({exc}). Enter the components instead.",
                        pilot=True) from None
    if not all(np.isfinite(v) for v in asdict(components).values()) or not np.isfinite(effect):
        raise PlanError(f"The pilot's model for '{key}' did not converge. Enter the components instead.", pilot=True)
    return components, effect, len(rows)


def score_pilot(study: Study, criterion_key: str, arm_a_id: int, arm_b_id: int) -> tuple[Components, float, int]:
    """(components, the pilot's effect B - A, number of ratings used) of one likert criterion, from the
    study's counted ratings of the two arms; the criterion's own min and max as the scale."""
    criterion = _criterion(study, criterion_key)
    return _fit_pilot(criterion, _pilot_rows(study, criterion_key, arm_a_id, arm_b_id))


def pairwise_pilot_rows(study: Study, arm_a_id: int, arm_b_id: int) -> dict[str, list[tuple[int, int]]]:
    """{question key: [(prompt id, +1 B won / 0 tie / -1 A won), ...]} from the counted judgments of pairs
    of these two arms' responses."""
    judgments = counted_pair_judgments(study).filter(pair__first__arm_id__in=[arm_a_id, arm_b_id],
                                                     pair__second__arm_id__in=[arm_a_id, arm_b_id])
    out: dict[str, list[tuple[int, int]]] = {}
    for key, verdict, prompt_id, first_arm in (
        PairVerdict.objects.filter(judgment__in=judgments).order_by("judgment_id", "key")
        .values_list("key", "verdict", "judgment__pair__prompt_id", "judgment__pair__first__arm_id")
    ):
        first_is_b = first_arm == arm_b_id
        score = 0 if verdict == "tie" else (1 if (verdict == "first") == first_is_b else -1)
        out.setdefault(key, []).append((prompt_id, score))
    return out


def plan(study: Study, req: PlanRequest, *, pairwise_pilot: tuple[PairwiseModel, float] | None = None,
         use_cache: bool = True) -> dict:
    """The plan of `req` for `study`: {"inputs", "criteria", "columns", "rows", "command"} (PlanError for a
    request it refuses). `pairwise_pilot`: the (PairwiseModel, effect) a pairwise pilot gave, for
    source "pilot" in pairwise mode instead of the study's own judgments."""
    check_request(req)
    arm_a, arm_b = _arms(study, req)
    if req.mode == "scores":
        specs = [_criterion(study, key) for key in req.criteria]
        pilot_rows = ({c["key"]: _pilot_rows(study, c["key"], arm_a.id, arm_b.id) for c in specs}
                      if req.source == "pilot" else {})
    else:
        specs, pilot_rows = [], {}
        if req.source == "pilot" and pairwise_pilot is None:
            pilot_rows = pairwise_pilot_rows(study, arm_a.id, arm_b.id)
            if not pilot_rows:
                raise PlanError("This study has no pairwise judgments of these two arms to use as a pilot: enter "
                                "nu and prompt_sd instead.", pilot=True)
    key = "plan:" + hashlib.sha256(json.dumps(
        [study.id, asdict(req), pilot_rows, pairwise_pilot and [asdict(pairwise_pilot[0]), pairwise_pilot[1]]],
        default=str, sort_keys=True).encode()).hexdigest()
    cached = _cache_get(key) if use_cache else None
    if cached is not None:
        return cached
    result = _compute(req, arm_a, arm_b, specs, pilot_rows, pairwise_pilot)
    result["command"] = command_line(study, req)
    if use_cache:
        _cache_set(key, result)
    return result


def _compute(req, arm_a, arm_b, specs, pilot_rows, pairwise_pilot) -> dict:
    inputs = {**asdict(req), "arm_a": {"id": arm_a.id, "label": arm_a.label},
              "arm_b": {"id": arm_b.id, "label": arm_b.label}, "prompts": list(req.prompts),
              "criteria": list(req.criteria)}
    criteria, rows = [], []
    if req.mode == "scores":
        for spec in specs:
            if req.source == "pilot":
                components, pilot_effect, n = _fit_pilot(spec, pilot_rows[spec["key"]])
                pilot = {"effect": pilot_effect, "n_ratings": n}
            else:
                components, pilot = Components(**{**req.entered, "low": spec["min"], "high": spec["max"]}), None
            criteria.append({"key": spec["key"], "question": spec["question"], "low": spec["min"],
                             "high": spec["max"], "components": asdict(components), "pilot": pilot})
            curve = power_curve("scores", components, req.effect, list(req.prompts), req.raters_per_response,
                                req.n_raters, n_sims=req.sims, alpha=req.alpha, seed=req.seed)
            rows += [_row(spec["key"], point) for point in curve]
    else:
        if pilot_rows:  # one model per question of the phase, from its own judgments
            models = []
            for key, rows_of_key in pilot_rows.items():
                try:
                    model, pilot_effect = estimate_pairwise_model([r[0] for r in rows_of_key],
                                                                  [r[1] for r in rows_of_key])
                except ValueError as exc:
                    raise PlanError(f"The pairwise pilot on {key!r}: {exc} Enter nu and prompt_sd instead.",
                                    pilot=True) from None
                models.append((key, f"Pairwise: {key}", model, {"effect": pilot_effect, "n_judgments": len(rows_of_key)}))
        elif req.source == "pilot":
            model, pilot_effect = pairwise_pilot
            models = [(PAIRWISE_LABEL, "Which response is better (win, tie or loss of B over A)", model,
                       {"effect": pilot_effect})]
        else:
            models = [(PAIRWISE_LABEL, "Which response is better (win, tie or loss of B over A)",
                       PairwiseModel(**req.entered), None)]
        for key, question, model, pilot in models:
            criteria.append({"key": key, "question": question, "model": asdict(model), "pilot": pilot})
            curve = power_curve("pairwise", model, req.effect, list(req.prompts), req.raters_per_response,
                                n_sims=req.sims, alpha=req.alpha, seed=req.seed)
            rows += [_row(key, point) for point in curve]
    return {"inputs": inputs, "criteria": criteria, "columns": COLUMNS[req.mode], "rows": rows}


def _row(key: str, point: dict) -> dict:
    row = {"criterion": key, "n_prompts": point["n_prompts"], "mc_se": point["mc_se"]}
    for column, _ in COLUMNS[point["mode"]]:
        row[column] = point[column]
    if point["mode"] == "scores":
        interval = point["alpha_interval"]
        row["alpha_median"] = interval[1] if interval else None
        row["alpha_ci_width"] = interval[2] - interval[0] if interval else None
    else:
        row["tie_share"] = point["tie_share"]
    return row


def command_line(study: Study, req: PlanRequest) -> str:
    """The `manage.py plan_study` line that gives this plan again (the pilot as it is now)."""
    parts = [f"manage.py plan_study {study.id} --mode {req.mode}"]
    parts += [f"--criterion {key}" for key in (req.criteria if req.mode == "scores" else ())]
    parts += [f"--arm-a {req.arm_a} --arm-b {req.arm_b} --effect {req.effect:g}",
              f"--prompts {','.join(str(n) for n in req.prompts)}",
              f"--raters-per-response {req.raters_per_response} --raters {req.n_raters}",
              f"--sims {req.sims} --seed {req.seed} --alpha {req.alpha:g}"]
    if req.source == "entered":
        return " ".join([*parts, "--entered " + ",".join(f"{k}={v:g}" for k, v in entered_values(req).items())])
    return " ".join(parts)


def entered_values(req: PlanRequest) -> dict[str, float]:
    """The entered values in full: those given, the model's defaults for the rest."""
    defaults = asdict(Components() if req.mode == "scores" else PairwiseModel())
    names = COMPONENT_FIELDS if req.mode == "scores" else PAIRWISE_FIELDS
    return {name: float(req.entered.get(name, defaults[name])) for name in names}


def table_text(result: dict) -> str:
    """The plan's table as fixed-width text (the command prints it)."""
    columns = [("criterion", "criterion"), ("n_prompts", "prompts"), *result["columns"], ("mc_se", "MC s.e.")]
    if result["inputs"]["mode"] == "scores":
        columns += [("alpha_median", "alpha (median)"), ("alpha_ci_width", "alpha 95% CI width")]
    else:
        columns.append(("tie_share", "tie share"))
    cells = [[label for _, label in columns]]
    for row in result["rows"]:
        cells.append([v if isinstance(v, str) else str(v) if isinstance(v, int) else "-" if v is None else f"{v:.3f}"
                      for v in (row[name] for name, _ in columns)])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)) for line in cells)


def power_plot(result: dict) -> bytes:
    """Power against the number of prompts, one line per criterion, 0.8 marked: PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    first = result["columns"][0]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for c in result["criteria"]:
        points = [r for r in result["rows"] if r["criterion"] == c["key"]]
        x = [r["n_prompts"] for r in points]
        y = [r[first[0]] for r in points]
        ax.errorbar(x, y, yerr=[2 * r["mc_se"] for r in points], marker="o", capsize=3, label=c["key"])
    ax.axhline(0.8, color="#a3302a", lw=1, ls="--")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("prompts")
    ax.set_ylabel(first[1])
    inputs = result["inputs"]
    ax.set_title(f"{inputs['arm_b']['label']} vs {inputs['arm_a']['label']}: effect {inputs['effect']:g}, "
                 f"{inputs['sims']} simulations, seed {inputs['seed']}", fontsize=9)
    ax.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _cache_get(key: str):
    try:
        return cache.get(key)
    except RedisError as exc:
        logger.warning("Plan cache unavailable, computing without it: %s", exc)
        return None


def _cache_set(key: str, value: dict) -> None:
    try:
        cache.set(key, value, 3600)
    except RedisError as exc:
        logger.warning("Plan cache unavailable, not saving: %s", exc)
