"""The study planner's page and its plot (researchers only). A plan is its query string: the page and
the plot read the same parameters, so a plan is a URL to share, and the plot draws the cached plan."""

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from raters.access import get_study_for

from ..planner import PlanError, plan, power_plot
from ..planner_forms import PlanForm
from .jobs import RESEARCHERS


def _bound(request, study) -> PlanForm:
    return PlanForm(request.GET if "mode" in request.GET else None, study=study)


@login_required
@require_safe
def planner(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    form = _bound(request, study)
    result, problem, status = None, None, 200
    if form.is_bound:
        if form.is_valid():
            try:
                result = plan(study, form.plan_request())
            except PlanError as exc:
                problem, status = exc, 400
        else:
            status = 400
    columns = result["columns"] if result else []
    table = [{**row, "powers": [row[name] for name, _ in columns]} for row in (result or {}).get("rows", [])]
    return render(request, "evalapp/planner.html",
                  {"study": study, "form": form, "result": result, "table": table, "problem": problem,
                   "plot_query": request.GET.urlencode()}, status=status)


@login_required
@require_safe
def planner_plot(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    form = _bound(request, study)
    if not form.is_bound:
        return HttpResponse("Give the plan's parameters, as the planner page's plot link does.", status=400,
                            content_type="text/plain")
    if not form.is_valid():
        errors = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in form.errors.items())
        return HttpResponse(f"Not a plan: {errors}", status=400, content_type="text/plain")
    try:
        result = plan(study, form.plan_request())
    except PlanError as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    return HttpResponse(power_plot(result), content_type="image/png")
