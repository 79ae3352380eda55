"""Adjudicators' pages: the two queues, an item, and one's own history. Adjudicators and the owner only."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from modelserver.judge_models import Judge
from raters.access import get_study_for, roles_in
from raters.models import Role

from .. import adjudication as adj
from .. import pair_adjudication as pair_adj
from ..errors import ServiceError
from ..judge_results import study_judge
from ..models import (Adjudication, AuditEvent, PairAdjudication, PairwisePhase, Response, ResponsePair,
                      SafetyClassification, SafetyReview, UnsafeCategory, Verdict)

ADJUDICATORS = [Role.ADJUDICATOR, Role.RESEARCHER]
TRIAGE_SHOWN = 100  # the triage list's longest stretch on one page: the rest wait for the top to be read


def _study(request, study_id):
    study = get_study_for(request.user, study_id, roles=ADJUDICATORS)
    roles = roles_in(request.user, study)
    # A researcher member who is not the owner does not adjudicate.
    if Role.ADJUDICATOR not in roles and study.owner_id != request.user.id:
        raise Http404("No such study.")
    return study


@login_required
def queues(request, study_id: int):
    study = _study(request, study_id)
    scale = request.GET.get("scale") or None
    topic = request.GET.get("topic") or None
    category = request.GET.get("category") or None
    keys = [c["key"] for c in study.rubric()]
    if scale not in (None, *keys):
        scale = None
    safety = adj.safety_queue(study=study, category=category, topic=topic)
    disagreements = adj.disagreement_queue(study=study, scale=scale, topic=topic)
    wanted = request.GET.get("triage") or ""
    judge, triage = None, None
    if wanted:
        judge = study_judge(study, wanted)
        if judge is None:
            raise Http404("No such judge.")
        triage = adj.judge_triage(study=study, judge=judge, scale=scale, topic=topic)
        disagreements = adj.triage_order(disagreements, triage)
    topics = sorted(set(study.prompts.exclude(topic="").values_list("topic", flat=True)))
    has_pairs = PairwisePhase.objects.filter(study=study).exclude(status=PairwisePhase.Status.DRAFT).exists()
    return render(request, "adjudication/queues.html", {
        "study": study, "safety": safety, "disagreements": disagreements, "topics": topics,
        "pair_queue": pair_adj.pair_queue(study=study) if has_pairs else None,
        "categories": UnsafeCategory.choices, "scales": keys, "judge": judge,
        "judges": Judge.objects.filter(study=study).order_by("name"),
        "triage": triage[:TRIAGE_SHOWN] if triage is not None else None,
        "triage_total": len(triage) if triage is not None else 0,
        "filters": {"scale": scale or "", "topic": topic or "", "category": category or "",
                    "triage": str(judge.id) if judge else ""},
    })


@login_required
def item(request, study_id: int, public_id: str):
    study = _study(request, study_id)
    response = get_object_or_404(Response.objects.select_related("prompt", "safety_decision"), public_id=public_id,
                                 prompt__study=study)
    review = adj.item_review(study=study, response=response)
    my_review = SafetyReview.objects.filter(response=response, adjudicator=request.user).first()
    context = {
        "study": study, "response": response, "messages_": response.prompt.messages,
        "ratings": review.ratings,
        "scales_pending": review.scales,
        "flagged": any(r.unsafe for r in review.ratings),
        "decision": getattr(response, "safety_decision", None),
        "my_review": my_review,
        "other_reviews": SafetyReview.objects.filter(response=response).exclude(adjudicator=request.user).count(),
        "adjudications": Adjudication.objects.filter(response=response).select_related("adjudicator"),
        "classifications": SafetyClassification.choices,
        "criteria": study.rubric(),
        "pending": [c for c in study.rubric() if c["key"] in review.scales],
    }
    return render(request, "adjudication/item.html", context)


@login_required
@require_POST
def decide(request, study_id: int, public_id: str):
    study = _study(request, study_id)
    response = get_object_or_404(Response, public_id=public_id, prompt__study=study)
    action = request.POST.get("action")
    try:
        if action == "resolve":
            adj.adjudication_resolve(study=study, response=response, scale=request.POST.get("scale", ""),
                                     adjudicator=request.user, final_score=request.POST.get("final_score", ""),
                                     rationale=request.POST.get("rationale", ""))
            messages.success(request, "Final score recorded.")
        elif action == "send_back":
            adj.adjudication_send_back(study=study, response=response, scale=request.POST.get("scale", ""),
                                       adjudicator=request.user, rationale=request.POST.get("rationale", ""))
            messages.success(request, "Sent back: one more rating was assigned.")
        elif action == "safety":
            decision = adj.safety_review_submit(
                study=study, response=response, adjudicator=request.user,
                classification=request.POST.get("classification", ""), note=request.POST.get("note", ""),
                exclude=request.POST.get("exclude") == "on", exclusion_reason=request.POST.get("exclusion_reason", ""),
            )
            messages.success(request, "Safety review recorded." + ("" if decision else " The item stays open until a second adjudicator agrees."))
        else:
            raise ServiceError("Unknown action.")
    except ServiceError as exc:  # an adjudication's, or the design's when a send-back rebalances
        if exc.status == 404:
            raise Http404(str(exc)) from None
        messages.error(request, str(exc))
        return redirect("adjudication_item", study_id=study.id, public_id=public_id)
    return redirect("adjudication_queues", study_id=study.id)


@login_required
def history(request, study_id: int):
    study = _study(request, study_id)
    events = AuditEvent.objects.filter(study=study, actor=request.user).order_by("-created_at")[:200]
    return render(request, "adjudication/history.html", {"study": study, "events": events})


@login_required
def pair(request, study_id: int, public_id: str):
    """A pair whose raters found no majority: both responses, every verdict, and the final verdict's form."""
    study = _study(request, study_id)
    found = get_object_or_404(ResponsePair.objects.select_related("prompt", "first", "second"), public_id=public_id,
                              study=study)
    if request.method == "POST":
        try:
            pair_adj.pair_adjudication_resolve(study=study, pair=found, key=request.POST.get("key", ""),
                                               adjudicator=request.user, verdict=request.POST.get("verdict", ""),
                                               rationale=request.POST.get("rationale", ""))
        except ServiceError as exc:
            if exc.status == 404:
                raise Http404(str(exc)) from None
            messages.error(request, str(exc))
            return redirect("adjudication_pair", study_id=study.id, public_id=public_id)
        messages.success(request, "Final verdict recorded.")
        return redirect("adjudication_queues", study_id=study.id)
    phase = get_object_or_404(PairwisePhase, study=study)
    review = pair_adj.pair_item(study=study, pair=found)
    questions = {c["key"]: c["question"] for c in phase.criteria}
    labels = dict(Verdict.choices)
    rows = [{"pseudonym": j["pseudonym"], "reason": j["reason"],
             "verdicts": [labels.get(j["verdicts"].get(key, ""), "-") for key in questions]} for j in review.judgments]
    return render(request, "adjudication/pair.html", {
        "study": study, "pair": found, "messages_": found.prompt.messages, "questions": list(questions.values()),
        "rows": rows, "pending": [{"key": key, "question": questions[key]} for key in review.keys],
        "verdicts": Verdict.choices,
        "decisions": PairAdjudication.objects.filter(pair=found).select_related("adjudicator"),
    })
