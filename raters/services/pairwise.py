"""The pairwise phase, rater side: its design (draft, open, close), the stored queues, and judgments.

The queues follow the 1-10 mode's rules (raters.services.design): the same eligible raters, rebuilt
whenever they change (design_rebalance calls pair_design_rebalance), completed work kept, the pair on a
rater's screen kept at the head of their queue. Who judges which pair comes from
raters.assignment.build_design with pairs as items and prompts as groups; the sides from
raters.pair_assignment.orient.
"""

from collections import Counter
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from evalapp.audit import audit
from evalapp.models import PairJudgment, PairVerdict, PairwisePhase, Response, ResponsePair, Study, validate_messages
from evalapp.pair_rubric import FIRST, SECOND, TIE, PairCriteriaError, validate

from .. import assignment as design_lib
from .. import pair_assignment
from ..counting import left_out_rater_ids
from ..models import GoldPair, PairAssignment, PairGoldAnswer
from ..selectors import eligible_raters, rater_status
from ..timing import item_seconds
from .common import RatingError
from .welfare import check_cap

# What a rater's keys and buttons send: the response on the left (A), on the right (B), or about the same.
SHOWN = {"a": "left", "b": "right", "same": TIE}


def phase_of(study: Study) -> PairwisePhase | None:
    return PairwisePhase.objects.filter(study=study).first()


@transaction.atomic
def pair_phase_save(*, study: Study, criteria: list[dict], judgments_per_pair: int, gold_rate: float,
                    reason: str) -> PairwisePhase:
    """Create or change the pairwise design while it is a draft."""
    phase = PairwisePhase.objects.select_for_update().filter(study=study).first()
    if phase is not None and phase.status != PairwisePhase.Status.DRAFT:
        raise RatingError("The pairwise design is fixed once the phase has opened.", status=409)
    try:
        criteria = validate(criteria)
    except PairCriteriaError as exc:
        raise RatingError(str(exc)) from exc
    if not 1 <= judgments_per_pair <= 20:
        raise RatingError("Judgments per pair must be from 1 to 20.")
    if not 0 <= gold_rate <= 1:
        raise RatingError("The gold rate must be from 0 to 1.")
    if reason not in ("none", "optional"):
        raise RatingError("Choose whether raters may give a reason.")
    values = {"criteria": criteria, "judgments_per_pair": judgments_per_pair, "gold_rate": gold_rate,
              "reason": reason}
    phase, _ = PairwisePhase.objects.update_or_create(study=study, defaults=values)
    return phase


def build_pairs(study: Study) -> int:
    """One pair per prompt and pair of arms, from their first samples; returns the number written."""
    have = {(f, s) for f, s in ResponsePair.objects.filter(study=study).values_list("first_id", "second_id")}
    by_prompt: dict[int, dict[int, int]] = {}
    for response_id, prompt_id, arm_id in (Response.objects.filter(prompt__study=study, sample_index=0)
                                           .values_list("id", "prompt_id", "arm_id")):
        by_prompt.setdefault(prompt_id, {})[arm_id] = response_id
    rows = []
    for prompt_id, arms in sorted(by_prompt.items()):
        for a, b in pair_assignment.arm_pairs(arms):
            if (arms[a], arms[b]) not in have:
                rows.append(ResponsePair(study=study, prompt_id=prompt_id, first_id=arms[a], second_id=arms[b]))
    ResponsePair.objects.bulk_create(rows)
    return len(rows)


@transaction.atomic
def pair_phase_open(*, study: Study) -> int:
    """Open the phase: write its pairs and everyone's queues. Returns the number of pairs."""
    Study.objects.select_for_update().filter(id=study.id).first()
    phase = phase_of(study)
    if phase is None:
        raise RatingError("Save a pairwise design first.", status=409)
    if phase.status != PairwisePhase.Status.DRAFT:
        raise RatingError("The pairwise phase has already opened.", status=409)
    build_pairs(study)
    n_pairs = ResponsePair.objects.filter(study=study).count()
    if not n_pairs:
        raise RatingError("No prompt has responses from two arms yet: generate them first.", status=409)
    if phase.gold_rate > 0 and not study.gold_pairs.exists():
        raise RatingError("The design asks for gold pairs: add one, or set the gold rate to 0.", status=409)
    PairwisePhase.objects.filter(id=phase.id).update(status=PairwisePhase.Status.OPEN, opened_at=timezone.now())
    pair_design_rebalance(study=study)
    return n_pairs


@transaction.atomic
def pair_phase_close(*, study: Study) -> None:
    updated = PairwisePhase.objects.filter(study=study, status=PairwisePhase.Status.OPEN).update(
        status=PairwisePhase.Status.CLOSED)
    if not updated:
        raise RatingError("The pairwise phase is not open.", status=409)


@transaction.atomic
def pair_design_rebalance(*, study: Study) -> int:
    """(Re)build every eligible rater's queue of pairs not yet judged; returns the assignments written."""
    Study.objects.select_for_update().filter(id=study.id).first()
    phase = phase_of(study)
    if phase is None or phase.status != PairwisePhase.Status.OPEN:
        return 0
    raters = eligible_raters(study)
    pairs = list(ResponsePair.objects.filter(study=study).values_list(
        "public_id", "prompt_id", "id", "first__arm_id", "second__arm_id"))
    if not raters or not pairs:
        return 0
    by_public = {public: pk for public, _, pk, _, _ in pairs}
    arms_of = {public: (a, b) for public, _, _, a, b in pairs}
    items = [design_lib.Item(item_id=public, group=prompt_id) for public, prompt_id, _, _, _ in pairs]
    gold = {g.public_id: g for g in study.gold_pairs.all()}
    rater_ids = [str(u.id) for u in raters]
    k = design_lib.ratings_wanted(phase.judgments_per_pair, len(rater_ids))

    left_out = left_out_rater_ids(study)
    rated: dict[str, set[str]] = {}
    for rater_id, public in (PairJudgment.objects.filter(pair__study=study).exclude(rater_id__in=left_out)
                             .values_list("rater_id", "pair__public_id")):
        rated.setdefault(str(rater_id), set()).add(public)
    for rater_id, public in (PairAssignment.objects.filter(study=study, completed_at__isnull=False, pair__isnull=False)
                             .exclude(rater_id__in=left_out).values_list("rater_id", "pair__public_id")):
        rated.setdefault(str(rater_id), set()).add(public)
    on_screen: dict[int, tuple[int, str | None]] = {}
    for assignment_id, rater_id, public in (
        PairAssignment.objects.filter(study=study, completed_at__isnull=True, rater_id__in=[u.id for u in raters])
        .order_by("rater_id", "position").values_list("id", "rater_id", "pair__public_id")
    ):
        on_screen.setdefault(rater_id, (assignment_id, public))
    for rater_id, (_, public) in on_screen.items():
        if public is not None:
            rated.setdefault(str(rater_id), set()).add(public)
    over = design_lib.trim_over_target(rated, dict.fromkeys(by_public, k))

    seed = phase.design_seed + PairAssignment.objects.filter(study=study, completed_at__isnull=False).count()
    try:
        base = design_lib.build_design(items, rater_ids, k, seed=seed,
                                       gold=[design_lib.GoldItem(item_id=g) for g in gold],
                                       gold_rate=phase.gold_rate if gold else 0.0)
        design = design_lib.rebalance(base, over, rater_ids, seed=seed) if over else base
    except ValueError as exc:
        raise RatingError(f"No balanced pairwise design exists for the current raters: {exc}", status=409) from exc

    PairAssignment.objects.filter(study=study, completed_at__isnull=True).exclude(
        id__in=[assignment_id for assignment_id, _ in on_screen.values()]).delete()
    kept = PairAssignment.objects.filter(study=study)
    rater_balance: Counter = Counter()
    group_balance: Counter = Counter()
    for rater_id, first_on_left, public, _ in kept.values_list(
            "rater_id", "first_on_left", "pair__public_id", "gold_pair__public_id"):
        step = 1 if first_on_left else -1
        rater_balance[str(rater_id)] += step
        group_balance[arms_of[public] if public is not None else ("gold",)] += step
    rows_in = design_lib.design_to_rows(design)
    done_gold = set(kept.filter(gold_pair__isnull=False).values_list("rater_id", "gold_pair__public_id"))
    rows_in = [row for row in rows_in if not (row[3] and (int(row[0]), row[2]) in done_gold)]
    sides = pair_assignment.orient(
        [(item, ("gold",) if is_gold else arms_of[item], rater) for rater, _, item, is_gold in rows_in],
        seed=seed, rater_balance=rater_balance, group_balance=group_balance)
    next_position = dict(kept.values("rater_id").annotate(p=Max("position")).values_list("rater_id", "p"))
    rows, position = [], {}
    for rater_id, _, item_id, is_gold in rows_in:
        rater = int(rater_id)
        position[rater] = position.get(rater, next_position.get(rater, -1)) + 1
        rows.append(PairAssignment(study=study, rater_id=rater, position=position[rater], design_seed=seed,
                                   pair_id=None if is_gold else by_public[item_id],
                                   gold_pair=gold[item_id] if is_gold else None,
                                   first_on_left=sides[(rater_id, item_id)]))
    PairAssignment.objects.bulk_create(rows)
    return len(rows)


@dataclass
class PairSubmission:
    # {question key: "a" (the left response), "b" (the right) or "same"}
    answers: dict
    reason: str = ""
    seconds_on_item: object = None  # as sent; raters.timing reads and bounds it


def parse_pair_answers(phase: PairwisePhase, answers: dict, first_on_left: bool) -> dict[str, str]:
    """{key: "first" | "second" | "tie"} from what the rater chose on screen, or RatingError."""
    keys = phase.keys()
    missing = [c["question"] for c in phase.criteria if not str(answers.get(c["key"], "")).strip()]
    if missing:
        raise RatingError("Choose A, B or about the same for: " + "; ".join(missing))
    unknown = sorted(set(answers) - set(keys))
    if unknown:
        raise RatingError(f"Unknown question(s): {', '.join(unknown)}.")
    out = {}
    for key in keys:
        shown = SHOWN.get(str(answers[key]).strip().lower())
        if shown is None:
            raise RatingError(f"{key}: answer a, b or same.")
        if shown == TIE:
            out[key] = TIE
        else:
            out[key] = FIRST if (shown == "left") == first_on_left else SECOND
    return out


def _open_phase(study: Study) -> PairwisePhase:
    phase = phase_of(study)
    if phase is None or phase.status == PairwisePhase.Status.DRAFT:
        raise RatingError("This study has no pairwise phase open.", status=409)
    if phase.status == PairwisePhase.Status.CLOSED:
        raise RatingError("The pairwise phase is closed; judgments can no longer be changed.", status=409)
    return phase


def _pair_assignment_for(study: Study, rater, public_id: str, status=None) -> PairAssignment:
    status = status or rater_status(study=study, user=rater)
    if not status.can_rate:
        raise RatingError("No such item.", status=404)
    found = (PairAssignment.objects.filter(study=study, rater=rater, pair__public_id=public_id).first()
             or PairAssignment.objects.filter(study=study, rater=rater, gold_pair__public_id=public_id).first())
    if found is None:
        raise RatingError("No such item.", status=404)
    return found


def pair_judgment_submit(*, study: Study, rater, item_public_id: str, submission: PairSubmission,
                         status=None) -> str:
    """Record a judgment (or a gold answer) of an assigned pair; idempotent, revisions audited.

    Returns "created", "unchanged" or "revised"."""
    phase = _open_phase(study)
    assignment = _pair_assignment_for(study, rater, item_public_id, status)
    verdicts = parse_pair_answers(phase, submission.answers, assignment.first_on_left)
    reason = submission.reason.strip() if phase.reason == "optional" else ""
    if "\x00" in reason:
        raise RatingError("The reason holds a NUL character.")
    # Taken before this item's completion is written, which is the next item's start.
    seconds = item_seconds(study=study, rater=rater, client=submission.seconds_on_item)
    with transaction.atomic():
        check_cap(study, rater, assignment)  # in the write's transaction: it locks until the item is done
        if assignment.gold_pair_id:
            # An attention check keeps the first answer, as a 1-10 gold answer does: a second try after
            # seeing nothing new would only measure the retry.
            _, created = PairGoldAnswer.objects.get_or_create(
                assignment=assignment, defaults={"verdicts": verdicts, "seconds_on_item": seconds})
            outcome = "created" if created else "unchanged"
        else:
            outcome = _save_judgment(study, assignment, rater, verdicts, reason, seconds)
        PairAssignment.objects.filter(id=assignment.id, completed_at__isnull=True).update(completed_at=timezone.now())
    return outcome


def _save_judgment(study, assignment, rater, verdicts: dict, reason: str, seconds) -> str:
    judgment = PairJudgment.objects.select_for_update().filter(pair_id=assignment.pair_id, rater=rater).first()
    if judgment is None:
        # As ratings: a concurrent duplicate loses quietly to the unique (pair, rater) constraint.
        PairJudgment.objects.bulk_create(
            [PairJudgment(pair_id=assignment.pair_id, rater=rater, first_on_left=assignment.first_on_left,
                          reason=reason, seconds_on_item=seconds)], ignore_conflicts=True)
        judgment = PairJudgment.objects.select_for_update().get(pair_id=assignment.pair_id, rater=rater)
        if not judgment.verdicts.exists():
            PairVerdict.objects.bulk_create(PairVerdict(judgment=judgment, key=k, verdict=v) for k, v in verdicts.items())
            return "created"
    before = {"reason": judgment.reason, "verdicts": dict(judgment.verdicts.values_list("key", "verdict"))}
    after = {"reason": reason, "verdicts": verdicts}
    if before == after:
        return "unchanged"
    PairJudgment.objects.filter(id=judgment.id).update(reason=reason, updated_at=timezone.now())
    judgment.verdicts.all().delete()
    PairVerdict.objects.bulk_create(PairVerdict(judgment=judgment, key=k, verdict=v) for k, v in verdicts.items())
    audit(study=study, actor=rater, action="pair_judgment.revise", obj=judgment, before=before, after=after)
    return "revised"


def pair_skip(*, study: Study, rater, item_public_id: str, reason: str) -> None:
    if not reason.strip():
        raise RatingError("Say why you can't compare these responses.")
    _open_phase(study)
    assignment = _pair_assignment_for(study, rater, item_public_id)
    with transaction.atomic():
        check_cap(study, rater, assignment)
        PairAssignment.objects.filter(id=assignment.id, completed_at__isnull=True).update(
            completed_at=timezone.now(), skip_reason=reason.strip()[:500])


def gold_pair_add(*, study: Study, user, messages: list[dict], better_text: str, worse_text: str,
                  rationale: str) -> GoldPair:
    try:
        validate_messages(messages)
    except ValidationError as exc:
        raise RatingError(" ".join(exc.messages)) from exc
    if not better_text.strip() or not worse_text.strip() or not rationale.strip():
        raise RatingError("A gold pair needs both responses and why the better one is better.")
    phase = phase_of(study)
    if phase is not None and phase.status != PairwisePhase.Status.DRAFT:
        raise RatingError("Gold pairs are part of the design, fixed once the phase has opened.", status=409)
    return GoldPair.objects.create(study=study, messages=messages, better_text=better_text.strip(),
                                   worse_text=worse_text.strip(), rationale=rationale.strip(), created_by=user)

