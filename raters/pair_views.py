"""The rater's pairwise pages: the conversation and two responses side by side, A or B or about the same.

Blind as the 1-10 pages are (raters.views): no arm, model, order or id that says where a response came
from. Which response is A is the assignment's side (raters.pair_assignment), never the arm order.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from . import selectors, services
from .access import get_study_for
from .models import PairAssignment, Role
from .services.pairwise import phase_of
from .views import gate


def _phase_for_rater(study):
    phase = phase_of(study)
    if phase is None or phase.status == phase.Status.DRAFT:
        raise Http404("No pairwise phase.")
    return phase


def _next(study, user) -> tuple[PairAssignment | None, int, int]:
    mine = PairAssignment.objects.filter(study=study, rater=user)
    counts = mine.aggregate(total=Count("id"), done=Count("id", filter=Q(completed_at__isnull=False)))
    upcoming = (mine.filter(completed_at__isnull=True).select_related("pair__prompt", "pair__first", "pair__second",
                                                                      "gold_pair").order_by("position").first())
    return upcoming, counts["done"], counts["total"]


def _item_context(study, user, phase) -> dict:
    assignment, done, total = _next(study, user) if phase.status == phase.Status.OPEN else (None, 0, 0)
    item = None
    if assignment is not None:
        if assignment.gold_pair_id:
            gold = assignment.gold_pair
            public_id, conversation, first, second = gold.public_id, gold.messages, gold.better_text, gold.worse_text
        else:
            pair = assignment.pair
            public_id, conversation = pair.public_id, pair.prompt.messages
            first, second = pair.first.text, pair.second.text
        left, right = (first, second) if assignment.first_on_left else (second, first)
        item = {"public_id": public_id, "history": conversation[:-1], "question": conversation[-1]["content"],
                "left": left, "right": right}
    return {"study": study, "phase": phase, "item": item, "done": done, "total": total, "position": done + 1,
            "closed": phase.status == phase.Status.CLOSED}


@login_required
def compare(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=[Role.RATER])
    phase = _phase_for_rater(study)
    status = selectors.rater_status(study=study, user=request.user)
    if (redirect_to := gate(request, study, status)) is not None:
        return redirect_to
    return render(request, "raters/compare.html", _item_context(study, request.user, phase))


@login_required
@require_POST
def compare_submit(request, study_id: int, public_id: str):
    study = get_study_for(request.user, study_id, roles=[Role.RATER])
    phase = _phase_for_rater(study)
    status = selectors.rater_status(study=study, user=request.user)
    is_fetch = request.headers.get("X-Requested-With") == "fetch"
    try:
        if request.POST.get("action") == "skip":
            services.pair_skip(study=study, rater=request.user, item_public_id=public_id,
                               reason=request.POST.get("skip_reason", ""))
        else:
            answers = {name[len("pick-"):]: value for name, value in request.POST.items() if name.startswith("pick-")}
            # As sent: the service reads it and bounds it by the time it observed (raters.timing).
            submission = services.PairSubmission(answers=answers, reason=request.POST.get("reason", "")[:2000],
                                                 seconds_on_item=request.POST.get("seconds"))
            services.pair_judgment_submit(study=study, rater=request.user, item_public_id=public_id,
                                          submission=submission, status=status)
    except services.RatingError as exc:
        if is_fetch:
            return HttpResponse(str(exc), status=exc.status, content_type="text/plain; charset=utf-8")
        if exc.status == 404:
            raise Http404(str(exc)) from None
        messages.error(request, str(exc))
        return redirect("compare", study_id=study.id)
    if is_fetch:
        return render(request, "raters/compare_item.html", _item_context(study, request.user, phase))
    return redirect("compare", study_id=study.id)
