"""The stored rating design: who is asked to rate what, rebuilt whenever its inputs change.

Its inputs are the eligible raters (so joining, consenting, passing or being approved, withdrawing
and being excluded all rebalance), the responses, the ratings that count (raters.counting), and the
extra ratings adjudicators asked for (each send-back is one). raters.assignment turns them into
queues; design_targets() is what the adjudication queue waits for, from the same rule.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Count, Max

from evalapp.models import Adjudication, Response, Study

from .. import assignment as design_lib
from ..counting import counted_ratings, left_out_rater_ids
from ..models import Assignment
from ..selectors import eligible_raters
from .common import RatingError
from .pairwise import pair_design_rebalance


@dataclass(frozen=True)
class DesignTargets:
    """How many counted ratings each response is to get: the design's k, plus what send-backs asked."""
    k: int
    extra: dict[int, int]  # response id -> ratings wanted beyond k, within the raters there are

    def of(self, response_id: int) -> int:
        return self.k + self.extra.get(response_id, 0)


def design_targets(study: Study, *, n_raters: int | None = None,
                   response_ids: Iterable[int] | None = None) -> DesignTargets:
    """The design's targets now (or for `n_raters` eligible raters), optionally for some responses only."""
    if n_raters is None:
        n_raters = len(eligible_raters(study))
    asked = Adjudication.objects.filter(response__prompt__study=study, action=Adjudication.Action.SENT_BACK)
    if response_ids is not None:
        asked = asked.filter(response_id__in=list(response_ids))
    per = study.ratings_per_response
    k = design_lib.ratings_wanted(per, n_raters)
    extra = {
        response_id: design_lib.ratings_wanted(per, n_raters, n) - k
        for response_id, n in asked.values("response_id").annotate(n=Count("id")).values_list("response_id", "n")
    }
    return DesignTargets(k, {r: n for r, n in extra.items() if n})


@transaction.atomic
def design_rebalance(*, study: Study) -> int:
    """(Re)build every eligible rater's queues of unrated work (1-10 items and, when its phase is open,
    pairs), keeping all that was already rated.

    Runs when the study opens for rating and whenever its inputs change (see the module's opening).
    Returns the number of assignments written.
    """
    return _score_rebalance(study) + pair_design_rebalance(study=study)


def _score_rebalance(study: Study) -> int:
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
    targets = design_targets(study, n_raters=len(rater_ids))
    want = {public: targets.of(pk) for public, pk in by_public.items()}

    # A withdrawn or excluded rater's ratings stay (or were deleted by policy) but no longer count toward k.
    rated: dict[str, set[str]] = {}
    for rater_id, public in counted_ratings(study).values_list("rater_id", "response__public_id"):
        rated.setdefault(str(rater_id), set()).add(public)
    # Skipped items count as done for the rater who skipped them: they are not shown again.
    for rater_id, public in (
        Assignment.objects.filter(study=study, completed_at__isnull=False, response__isnull=False)
        .exclude(rater_id__in=left_out_rater_ids(study))
        .values_list("rater_id", "response__public_id")
    ):
        rated.setdefault(str(rater_id), set()).add(public)
    # The first open item of each eligible rater may be on their screen right now: it stays theirs, at the
    # head of their queue, and counts toward its target like a rating, so their submission is not refused.
    on_screen = _items_on_screen(study, [u.id for u in raters])
    for rater_id, (_, public) in on_screen.items():
        if public is not None:
            rated.setdefault(str(rater_id), set()).add(public)
    over = design_lib.trim_over_target(rated, want)

    # Each rebalance gets its own recorded seed, derived from the study's, so the whole history can be replayed.
    seed = study.design_seed + Assignment.objects.filter(study=study, completed_at__isnull=False).count()
    try:
        base = design_lib.build_design(items, rater_ids, targets.k, seed=seed, gold=gold_items,
                                       gold_rate=study.gold_rate if gold_items else 0.0,
                                       extra={public: want[public] - targets.k for public in by_public})
        design = design_lib.rebalance(base, over, rater_ids, seed=seed) if over else base
    except ValueError as exc:
        raise RatingError(f"No balanced rating design exists for the current raters: {exc}", status=409) from exc

    Assignment.objects.filter(study=study, completed_at__isnull=True).exclude(
        id__in=[assignment_id for assignment_id, _ in on_screen.values()]
    ).delete()
    next_position = dict(
        Assignment.objects.filter(study=study).values("rater_id").annotate(p=Max("position")).values_list("rater_id", "p")
    )
    done_gold = set(
        Assignment.objects.filter(study=study, gold_item__isnull=False).values_list("rater_id", "gold_item__public_id")
    )
    rows, position = [], {}
    for rater_id, _, item_id, is_gold in design_lib.design_to_rows(design):
        rater = int(rater_id)
        if is_gold and (rater, item_id) in done_gold:
            continue
        # Queues continue after what each rater already finished; positions stay unique per rater.
        position[rater] = position.get(rater, next_position.get(rater, -1)) + 1
        rows.append(Assignment(study=study, rater_id=rater, position=position[rater], design_seed=seed,
                               response_id=None if is_gold else by_public[item_id],
                               gold_item=gold[item_id] if is_gold else None))
    Assignment.objects.bulk_create(rows)
    return len(rows)


def _items_on_screen(study: Study, rater_ids: list[int]) -> dict[int, tuple[int, str | None]]:
    """rater id -> (assignment id, response public id or None for a gold item) of their first open item."""
    first: dict[int, tuple[int, str | None]] = {}
    for assignment_id, rater_id, public in (
        Assignment.objects.filter(study=study, completed_at__isnull=True, rater_id__in=rater_ids)
        .order_by("rater_id", "position")
        .values_list("id", "rater_id", "response__public_id")
    ):
        first.setdefault(rater_id, (assignment_id, public))
    return first


@transaction.atomic
def study_open_for_rating(*, study: Study) -> int:
    if not Response.objects.filter(prompt__study=study).exists():
        raise RatingError("Generate responses before opening the study for rating.", status=409)
    if not study.criteria.exists():
        raise RatingError("Give the study a rubric (at least one criterion) before opening it for rating.", status=409)
    incomplete = [item.public_id for item in study.calibration_items.all()
                  if set(item.references) != {c["key"] for c in study.rubric()}]
    if incomplete:
        raise RatingError(f"{len(incomplete)} calibration item(s) lack a reference answer to every criterion "
                          "of the rubric (it changed after they were written); remove them on the raters page and add new ones.", status=409)
    Study.objects.filter(id=study.id).update(status=Study.Status.RATING)
    study.refresh_from_db()
    return design_rebalance(study=study)
