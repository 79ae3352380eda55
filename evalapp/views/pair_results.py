"""The pairwise results page, its JSON and plots, and the preference-pairs download (researchers only)."""

import json

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import render

from raters.access import get_study_for

from .. import pair_plots
from ..exports.preferences import FILE, MIN_JUDGMENTS, UnknownCriterion, export_preferences
from ..pair_results import pairwise_results
from .jobs import RESEARCHERS


@login_required
def pairwise_results_page(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    data = pairwise_results(study)
    return render(request, "evalapp/pairwise_results.html", {"study": study, "data": data, "plots": pair_plots.PLOTS,
                                                             "min_judgments": MIN_JUDGMENTS})


@login_required
def pairwise_results_json(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    return HttpResponse(json.dumps(pairwise_results(study), default=str), content_type="application/json")


@login_required
def pairwise_plot(request, study_id: int, name: str):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    if name not in pair_plots.PLOTS:
        raise Http404("No such plot.")
    response = HttpResponse(pair_plots.render(name, pairwise_results(study)), content_type="image/png")
    if request.GET.get("download"):
        response["Content-Disposition"] = f'attachment; filename="study-{study.id}-pairwise-{name}.png"'
    return response


@login_required
def preferences_export(request, study_id: int):
    """Preference pairs as JSON lines for TRL's DPO trainer; `?criterion=key` for one question only."""
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    unknown = sorted(set(request.GET) - {"criterion"})
    if unknown:
        return HttpResponseBadRequest(f"Unknown query parameter(s): {', '.join(unknown)}. Allowed: criterion.",
                                      content_type="text/plain; charset=utf-8")
    criterion = request.GET.get("criterion") or None
    try:
        lines = export_preferences(study=study, actor=request.user, criterion=criterion)
    except UnknownCriterion as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    response = StreamingHttpResponse(lines, content_type="application/jsonl; charset=utf-8")
    suffix = f"-{criterion}" if criterion else ""
    response["Content-Disposition"] = f'attachment; filename="study-{study.id}-{FILE.replace(".", suffix + ".", 1)}"'
    return response
