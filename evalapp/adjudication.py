"""Disagreement and safety queues, and the adjudicators' decisions, with an audit trail.

The queue rule itself is pure (`needs_adjudication`); the rest reads and writes rows.
"""

import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Count

from raters.models import Assignment, Role, StudyMembership

from .models import (
    SCALE_KEYS,
    SCALE_MAX,
    SCALE_MIN,
    Adjudication,
    AuditEvent,
    DisagreementRule,
    Rating,
    Response,
    SafetyClassification,
    SafetyDecision,
    SafetyReview,
    Study,
)


class AdjudicationError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def needs_adjudication(scores: list[float], *, rule: str, threshold: float, sd_threshold: float) -> bool:
    """Whether a scale's ratings of one item disagree enough; fewer than two ratings never do."""
    if len(scores) < 2:
        return False
    if rule == DisagreementRule.SD:
        return statistics.stdev(scores) >= sd_threshold
    return max(scores) - min(scores) >= threshold


def audit(*, study: Study, actor, action: str, obj, before=None, after=None) -> None:
    AuditEvent.objects.create(
        study=study, actor=actor, action=action, object_type=type(obj).__name__, object_id=str(obj.pk),
        before=before, after=after,
    )


# ----------------------------------------------------------------------------- reads


@dataclass
class RatingView:
    pseudonym: str
    empathy: int
    fluency: int
    unsafe: bool
    unsafe_category: str
    comment: str


@dataclass
class QueueItem:
    response: Response
    scales: list[str]  # scales in disagreement (disagreement queue) or [] (safety queue)
    ratings: list[RatingView] = field(default_factory=list)
    categories: set[str] = field(default_factory=set)
    reviews: int = 0


def counted_ratings(study: Study) -> dict[int, list[Rating]]:
    """Ratings that count for analysis and adjudication: not from withdrawn or excluded raters."""
    left_out = StudyMembership.objects.filter(study=study, role=Role.RATER).exclude(
        withdrawn_at__isnull=True, excluded_at__isnull=True
    ).values("user_id")
    by_response: dict[int, list[Rating]] = defaultdict(list)
    for rating in Rating.objects.filter(response__prompt__study=study).exclude(rater_id__in=left_out):
        by_response[rating.response_id].append(rating)
    return by_response


def _pseudonyms(study: Study) -> dict[int, str]:
    return dict(
        StudyMembership.objects.filter(study=study, role=Role.RATER).values_list("user_id", "pseudonym")
    )


def disagreement_queue(*, study: Study, scale: str | None = None, topic: str | None = None) -> list[QueueItem]:
    ratings = counted_ratings(study)
    resolved = set(Adjudication.objects.filter(response__prompt__study=study, action="resolved")
                   .values_list("response_id", "scale"))
    sent_back = dict(Adjudication.objects.filter(response__prompt__study=study, action="sent_back")
                     .values("response_id").annotate(n=Count("id")).values_list("response_id", "n"))
    names = _pseudonyms(study)
    responses = Response.objects.filter(prompt__study=study, id__in=list(ratings)).select_related("prompt")
    if topic:
        responses = responses.filter(prompt__topic=topic)
    queue = []
    for response in responses.order_by("id"):
        rows = ratings[response.id]
        # An item enters the queue once its last assigned rating is in (k, plus one per send-back).
        if len(rows) < study.ratings_per_response + sent_back.get(response.id, 0):
            continue
        scales = [
            key for key in SCALE_KEYS
            if (scale is None or key == scale)
            and (response.id, key) not in resolved
            and needs_adjudication([getattr(r, key) for r in rows], rule=study.disagreement_rule,
                                   threshold=study.disagreement_threshold, sd_threshold=study.disagreement_sd)
        ]
        if scales:
            queue.append(QueueItem(response=response, scales=scales, ratings=_views(rows, names)))
    return queue


def safety_queue(*, study: Study, category: str | None = None, topic: str | None = None, user=None) -> list[QueueItem]:
    ratings = counted_ratings(study)
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
        queue.append(QueueItem(response=response, scales=[], ratings=_views(flagged[response.id], names),
                               categories=categories, reviews=reviews.get(response.id, 0)))
    return queue


def _views(rows: list[Rating], names: dict[int, str]) -> list[RatingView]:
    return [RatingView(names.get(r.rater_id, "?"), r.empathy, r.fluency, r.unsafe, r.unsafe_category, r.comment)
            for r in rows]


# ----------------------------------------------------------------------------- writes


def _check_adjudicator(study: Study, user) -> None:
    is_member = StudyMembership.objects.filter(study=study, user=user, role=Role.ADJUDICATOR).exists()
    if not (is_member or study.owner_id == user.id):
        raise AdjudicationError("No such item.", status=404)


@transaction.atomic
def adjudication_resolve(*, study: Study, response: Response, scale: str, adjudicator, final_score: int,
                         rationale: str) -> Adjudication:
    _check_adjudicator(study, adjudicator)
    if scale not in SCALE_KEYS:
        raise AdjudicationError(f"Unknown scale {scale!r}.")
    if not isinstance(final_score, int) or not SCALE_MIN <= final_score <= SCALE_MAX:
        raise AdjudicationError(f"The final score must be a whole number from {SCALE_MIN} to {SCALE_MAX}.")
    if not rationale.strip():
        raise AdjudicationError("Give a rationale for the final score.")
    in_queue = {(item.response.id, s) for item in disagreement_queue(study=study) for s in item.scales}
    if (response.id, scale) not in in_queue:
        raise AdjudicationError("This item does not need adjudication on that scale (or it is already resolved).", 409)
    n = len(counted_ratings(study).get(response.id, []))
    try:
        with transaction.atomic():
            adjudication = Adjudication.objects.create(
                response=response, scale=scale, adjudicator=adjudicator, action=Adjudication.Action.RESOLVED,
                final_score=final_score, rationale=rationale.strip(), n_ratings_seen=n,
            )
    except IntegrityError:
        raise AdjudicationError("Another adjudicator resolved this scale a moment ago.", 409) from None
    audit(study=study, actor=adjudicator, action="adjudication.resolve", obj=adjudication,
          after={"response": response.public_id, "scale": scale, "final_score": final_score, "rationale": rationale})
    return adjudication


@transaction.atomic
def adjudication_send_back(*, study: Study, response: Response, scale: str, adjudicator, rationale: str) -> Adjudication:
    """Ask for one more rating: the item leaves the queue until it arrives."""
    _check_adjudicator(study, adjudicator)
    if not rationale.strip():
        raise AdjudicationError("Say why the item needs more ratings.")
    in_queue = {item.response.id for item in disagreement_queue(study=study)}
    if response.id not in in_queue:
        raise AdjudicationError("This item is not waiting for adjudication.", 409)
    from raters.services import eligible_raters

    rated = set(Rating.objects.filter(response=response).values_list("rater_id", flat=True))
    assigned = set(Assignment.objects.filter(response=response).values_list("rater_id", flat=True))
    candidates = [u for u in eligible_raters(study) if u.id not in rated | assigned]
    if not candidates:
        raise AdjudicationError("Every eligible rater has already rated this item; resolve it instead.", 409)
    load = dict(Assignment.objects.filter(study=study, completed_at__isnull=True).values("rater_id")
                .annotate(n=Count("id")).values_list("rater_id", "n"))
    rater = min(candidates, key=lambda u: (load.get(u.id, 0), u.id))
    last = Assignment.objects.filter(study=study, rater=rater).order_by("-position").values_list("position", flat=True).first()
    Assignment.objects.create(study=study, rater=rater, response=response, position=(last or 0) + 1,
                              design_seed=study.design_seed)
    adjudication = Adjudication.objects.create(
        response=response, scale=scale, adjudicator=adjudicator, action=Adjudication.Action.SENT_BACK,
        rationale=rationale.strip(), n_ratings_seen=len(rated),
    )
    audit(study=study, actor=adjudicator, action="adjudication.send_back", obj=adjudication,
          after={"response": response.public_id, "scale": scale, "rationale": rationale, "assigned_to": rater.id})
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
    if not Rating.objects.filter(response=response, unsafe=True).exists():
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
        transaction.on_commit(lambda: send_mail(
            f"Harmful response confirmed in “{study.title}”",
            f"An adjudicator confirmed response {response.public_id} as harmful"
            f"{' and excluded it from the analysis' if decision.excluded else ''}. See the study's adjudication page.",
            None, [study.owner.email],
        ))
    return decision
