"""Disagreement and safety queues, and the adjudicators' decisions, with an audit trail.

The queue rule itself is pure (evalapp.rubric.disagrees, per criterion type); the rest reads and writes rows. Which ratings
count is raters.counting's rule, and how many an item waits for is the design's (design_targets), so
a send-back is an input to the design, not a row made here. One item's page and decisions read that
item only (item_review); the queues read the study.
"""

from collections import defaultdict
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.db.models import Count

from raters.counting import counted_ratings
from raters.models import Assignment, Role, StudyMembership
from raters.services import design_rebalance, design_targets, eligible_raters

from .audit import audit
from .errors import ServiceError
from .judge_results import judge_values
from .mail import mail_on_commit
from .models import (
    Adjudication,
    Rating,
    Response,
    SafetyClassification,
    SafetyDecision,
    SafetyReview,
    Study,
)
from .rubric import RubricError, answer_text, disagrees, parse_answer


class AdjudicationError(ServiceError):
    """A decision that cannot be recorded as asked; the message says why."""


# ----------------------------------------------------------------------------- reads


@dataclass
class RatingView:
    pseudonym: str
    answers: list[str]  # each criterion's answer as shown to raters, in rubric order
    rationales: list[str]  # the rater's reason per criterion ("" for none), in the same order
    unsafe: bool
    unsafe_category: str
    comment: str

    @property
    def cells(self) -> list[dict]:
        return [{"answer": a, "rationale": r} for a, r in zip(self.answers, self.rationales, strict=True)]


@dataclass
class QueueItem:
    response: Response
    scales: list[str]  # criterion keys in disagreement (disagreement queue) or [] (safety queue)
    ratings: list[RatingView] = field(default_factory=list)
    categories: set[str] = field(default_factory=set)
    reviews: int = 0


def _pseudonyms(study: Study, rater_ids=None) -> dict[int, str]:
    members = StudyMembership.objects.filter(study=study, role=Role.RATER)
    if rater_ids is not None:
        members = members.filter(user_id__in=list(rater_ids))
    return dict(members.values_list("user_id", "pseudonym"))


def _by_response(ratings) -> dict[int, list[Rating]]:
    by_response: dict[int, list[Rating]] = defaultdict(list)
    for rating in ratings.prefetch_related("scores"):
        by_response[rating.response_id].append(rating)
    return by_response


def _values(study: Study, rating: Rating) -> dict[str, int | None]:
    keys = _criterion_keys(study)
    return {keys[s.criterion_id]: s.value for s in rating.scores.all()}


def _criterion_keys(study: Study) -> dict[int, str]:
    if not hasattr(study, "_criterion_keys"):
        study._criterion_keys = dict(study.criteria.values_list("id", "key"))
    return study._criterion_keys


def _scales_pending(study: Study, response_id: int, rows: list[Rating], wanted: int, resolved: set,
                    scale: str | None = None) -> list[str]:
    """The criteria on which an item waits for a decision: all its ratings are in, and they disagree."""
    if len(rows) < wanted:
        return []
    values = [_values(study, r) for r in rows]
    return [
        c["key"] for c in study.rubric()
        if (scale is None or c["key"] == scale)
        and (response_id, c["key"]) not in resolved
        and disagrees(c, [v.get(c["key"]) for v in values], rule=study.disagreement_rule,
                      threshold=study.disagreement_threshold, sd_threshold=study.disagreement_sd)
    ]


def disagreement_queue(*, study: Study, scale: str | None = None, topic: str | None = None) -> list[QueueItem]:
    ratings = _by_response(counted_ratings(study))
    resolved = set(Adjudication.objects.filter(response__prompt__study=study, action="resolved")
                   .values_list("response_id", "scale"))
    targets = design_targets(study)
    names = _pseudonyms(study)
    responses = Response.objects.filter(prompt__study=study, id__in=list(ratings)).select_related("prompt")
    if topic:
        responses = responses.filter(prompt__topic=topic)
    queue = []
    for response in responses.order_by("id"):
        rows = ratings[response.id]
        scales = _scales_pending(study, response.id, rows, targets.of(response.id), resolved, scale)
        if scales:
            queue.append(QueueItem(response=response, scales=scales, ratings=_views(study, rows, names)))
    return queue


def item_review(*, study: Study, response: Response) -> QueueItem:
    """One item as an adjudicator sees it: its counted ratings and the scales waiting for a decision.

    Reads this response's rows only, so an item's page and decisions cost the same in any study size."""
    rows = list(counted_ratings(study).filter(response=response).prefetch_related("scores"))
    resolved = set(Adjudication.objects.filter(response=response, action="resolved")
                   .values_list("response_id", "scale"))
    wanted = design_targets(study, response_ids=[response.id]).of(response.id)
    return QueueItem(response=response, scales=_scales_pending(study, response.id, rows, wanted, resolved),
                     ratings=_views(study, rows, _pseudonyms(study, {r.rater_id for r in rows})))


def safety_queue(*, study: Study, category: str | None = None, topic: str | None = None, user=None) -> list[QueueItem]:
    counted = counted_ratings(study)
    ratings = _by_response(counted.filter(response_id__in=counted.filter(unsafe=True).values("response_id")))
    decided = set(SafetyDecision.objects.filter(response__prompt__study=study).values_list("response_id", flat=True))
    reviews = dict(SafetyReview.objects.filter(response__prompt__study=study).values("response_id")
                   .annotate(n=Count("id")).values_list("response_id", "n"))
    names = _pseudonyms(study)
    flagged = {rid: rows for rid, rows in ratings.items() if any(r.unsafe for r in rows) and rid not in decided}
    responses = Response.objects.filter(id__in=list(flagged)).select_related("prompt")
    if topic:
        responses = responses.filter(prompt__topic=topic)
    queue = []
    for response in responses.order_by("id"):
        categories = {r.unsafe_category for r in flagged[response.id] if r.unsafe}
        if category and category not in categories:
            continue
        queue.append(QueueItem(response=response, scales=[], ratings=_views(study, flagged[response.id], names),
                               categories=categories, reviews=reviews.get(response.id, 0)))
    return queue


@dataclass
class TriageRow:
    """One response and criterion, ranked by how far a judge's value lies from the counted human ratings."""

    response: Response
    criterion: str
    question: str
    judge_value: float
    human_mean: float
    n_ratings: int
    gap: float


def judge_triage(*, study: Study, judge, scale: str | None = None, topic: str | None = None) -> list[TriageRow]:
    """|judge value - mean of counted human ratings| per response and scored criterion, largest first (then by
    response and rubric order). Choice criteria are left out: a mean of option indices is no answer. The
    judge's value is shown to adjudicators only (they are not blind raters); nothing here reaches a rater."""
    ratings = _by_response(counted_ratings(study))
    criteria = [c for c in study.rubric() if c["level"] != "nominal" and scale in (None, c["key"])]
    values = judge_values(judge, response_ids=list(ratings))
    responses = Response.objects.filter(prompt__study=study, id__in=list(ratings)).select_related("prompt")
    if topic:
        responses = responses.filter(prompt__topic=topic)
    rows = []
    for response in responses:
        scored = [_values(study, r) for r in ratings[response.id]]
        for c in criteria:
            humans = [v[c["key"]] for v in scored if v.get(c["key"]) is not None]
            judged = values.get((response.id, c["key"]))
            if humans and judged is not None:
                mean = sum(humans) / len(humans)
                rows.append(TriageRow(response, c["key"], c["question"], judged, mean, len(humans), abs(judged - mean)))
    position = {c["key"]: i for i, c in enumerate(criteria)}
    rows.sort(key=lambda t: (-t.gap, t.response.id, position[t.criterion]))
    return rows


def triage_order(queue: list[QueueItem], rows: list[TriageRow]) -> list[QueueItem]:
    """The disagreement queue, items whose pending criteria the judge is furthest from first; items the judge
    has no value for keep their order, after the others."""
    gaps = {(t.response.id, t.criterion): t.gap for t in rows}

    def largest(item: QueueItem) -> float:
        return max((gaps[(item.response.id, s)] for s in item.scales if (item.response.id, s) in gaps), default=-1.0)

    return sorted(queue, key=lambda item: -largest(item))


def _views(study: Study, rows: list[Rating], names: dict[int, str]) -> list[RatingView]:
    rubric = study.rubric()
    views = []
    for r in rows:
        values = _values(study, r)
        keys = _criterion_keys(study)
        reasons = {keys[sc.criterion_id]: sc.rationale for sc in r.scores.all()}
        views.append(RatingView(names.get(r.rater_id, "?"), [answer_text(c, values.get(c["key"]), missing="—") for c in rubric],
                                [reasons.get(c["key"], "") for c in rubric], r.unsafe, r.unsafe_category,
                                r.comment))
    return views


# ----------------------------------------------------------------------------- writes


def _criterion(study: Study, key: str) -> dict:
    for criterion in study.rubric():
        if criterion["key"] == key:
            return criterion
    raise AdjudicationError(f"This study's rubric has no criterion {key!r}.")


def _check_adjudicator(study: Study, user) -> None:
    is_member = StudyMembership.objects.filter(study=study, user=user, role=Role.ADJUDICATOR).exists()
    if not (is_member or study.owner_id == user.id):
        raise AdjudicationError("No such item.", status=404)


@transaction.atomic
def adjudication_resolve(*, study: Study, response: Response, scale: str, adjudicator, final_score,
                         rationale: str) -> Adjudication:
    """Give a criterion's final answer: a likert point, or a choice's option key (stored as its index)."""
    _check_adjudicator(study, adjudicator)
    criterion = _criterion(study, scale)
    if isinstance(final_score, str) and criterion["kind"] == "likert" and not final_score.strip().isdigit():
        final_score = None
    try:
        # A final answer is never "not sure": that is what adjudication settles.
        final_score, _, _ = parse_answer({**criterion, "not_sure": "", "rationale": "none"}, final_score)
    except RubricError as exc:
        raise AdjudicationError(f"The final answer: {exc}") from None
    if not rationale.strip():
        raise AdjudicationError("Give a rationale for the final score.")
    review = item_review(study=study, response=response)
    if scale not in review.scales:
        raise AdjudicationError("This item does not need adjudication on that criterion (or it is already resolved).", 409)
    n = len(review.ratings)
    try:
        with transaction.atomic():
            adjudication = Adjudication.objects.create(
                response=response, scale=scale, adjudicator=adjudicator, action=Adjudication.Action.RESOLVED,
                final_score=final_score, rationale=rationale.strip(), n_ratings_seen=n,
            )
    except IntegrityError:
        raise AdjudicationError("Another adjudicator resolved this criterion a moment ago.", 409) from None
    audit(study=study, actor=adjudicator, action="adjudication.resolve", obj=adjudication,
          after={"response": response.public_id, "scale": scale, "final_score": final_score, "rationale": rationale})
    return adjudication


@transaction.atomic
def adjudication_send_back(*, study: Study, response: Response, scale: str, adjudicator, rationale: str) -> Adjudication:
    """Ask for one more rating: the item leaves the queue until it arrives.

    The send-back itself is the request: the design counts send-backs (design_targets), so the
    rebalance run here, and every later one, asks an eligible rater who has not seen the item."""
    _check_adjudicator(study, adjudicator)
    if not rationale.strip():
        raise AdjudicationError("Say why the item needs more ratings.")
    _criterion(study, scale)
    review = item_review(study=study, response=response)
    if not review.scales:
        raise AdjudicationError("This item is not waiting for adjudication.", 409)
    seen = set(Rating.objects.filter(response=response).values_list("rater_id", flat=True))
    seen |= set(Assignment.objects.filter(response=response, completed_at__isnull=False)  # skipped
                .values_list("rater_id", flat=True))
    if all(u.id in seen for u in eligible_raters(study)):
        raise AdjudicationError("Every eligible rater has already rated this item; resolve it instead.", 409)
    adjudication = Adjudication.objects.create(
        response=response, scale=scale, adjudicator=adjudicator, action=Adjudication.Action.SENT_BACK,
        rationale=rationale.strip(), n_ratings_seen=len(review.ratings),
    )
    design_rebalance(study=study)
    asked = list(Assignment.objects.filter(response=response, completed_at__isnull=True)
                 .values_list("rater_id", flat=True))
    if not asked:  # the raters who could take it are too few for the study's k: nothing was asked
        raise AdjudicationError("No eligible rater can be asked for another rating; resolve the item instead.", 409)
    audit(study=study, actor=adjudicator, action="adjudication.send_back", obj=adjudication,
          after={"response": response.public_id, "scale": scale, "rationale": rationale, "assigned_to": asked[0]})
    return adjudication


@transaction.atomic
def safety_review_submit(*, study: Study, response: Response, adjudicator, classification: str, note: str,
                         exclude: bool = False, exclusion_reason: str = "") -> SafetyDecision | None:
    """Record (or revise) one adjudicator's review; returns the decision once the item is settled."""
    _check_adjudicator(study, adjudicator)
    if classification not in SafetyClassification.values:
        raise AdjudicationError("Classify the response as no issue, minor or harmful.")
    if not note.strip():
        raise AdjudicationError("Add a note explaining the classification.")
    if exclude and not exclusion_reason.strip():
        raise AdjudicationError("Give a reason for excluding the response from the analysis.")
    if SafetyDecision.objects.filter(response=response).exists():
        raise AdjudicationError("This response's safety review is already settled.", 409)
    if not counted_ratings(study).filter(response=response, unsafe=True).exists():
        raise AdjudicationError("No rater flagged this response.", 409)
    values = {"classification": classification, "note": note.strip(), "exclude": exclude,
              "exclusion_reason": exclusion_reason.strip() if exclude else ""}
    review = SafetyReview.objects.select_for_update().filter(response=response, adjudicator=adjudicator).first()
    if review is None:
        review = SafetyReview.objects.create(response=response, adjudicator=adjudicator,
                                             first_classification=classification, **values)
        audit(study=study, actor=adjudicator, action="safety.review", obj=review, after=values)
    else:
        before = {k: getattr(review, k) for k in values}
        for k, v in values.items():
            setattr(review, k, v)
        review.save(update_fields=[*values, "updated_at"])
        audit(study=study, actor=adjudicator, action="safety.review_revise", obj=review, before=before, after=values)
    return _maybe_decide(study, response, adjudicator)


def _maybe_decide(study: Study, response: Response, actor) -> SafetyDecision | None:
    reviews = list(SafetyReview.objects.filter(response=response).order_by("created_at"))
    needed = 2 if study.safety_two_adjudicators else 1
    if len(reviews) < needed:
        return None
    latest = reviews[:needed] if needed == 1 else reviews
    if len({r.classification for r in latest}) != 1:
        return None  # they disagree: the item stays open until they agree
    excluding = [r for r in latest if r.exclude]
    decision = SafetyDecision.objects.create(
        response=response,
        classification=latest[0].classification,
        excluded=bool(excluding),
        exclusion_reason="; ".join(r.exclusion_reason for r in excluding),
        n_reviews=len(latest),
        first_reviews_agreed=None if needed == 1 else len({r.first_classification for r in latest}) == 1,
    )
    audit(study=study, actor=actor, action="safety.decide", obj=decision,
          after={"response": response.public_id, "classification": decision.classification,
                 "excluded": decision.excluded, "reason": decision.exclusion_reason,
                 "first_reviews_agreed": decision.first_reviews_agreed})
    if decision.classification == SafetyClassification.HARMFUL and study.owner.email:
        mail_on_commit(
            f"Harmful response confirmed in “{study.title}”",
            f"An adjudicator confirmed response {response.public_id} as harmful"
            f"{' and excluded it from the analysis' if decision.excluded else ''}. See the study's adjudication page.",
            [study.owner.email],
        )
    return decision
