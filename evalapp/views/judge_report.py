"""One judge's validation report: the page, its JSON (`?format=json`) and its Bland-Altman plots
(researchers only). `?expert=group` picks the group the verdict is measured against."""

import json

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.views.decorators.http import require_safe

from modelserver.models import Judge
from raters.access import get_study_for

from .. import judge_plots
from ..judge_validation import EXPERT_PREFIXES, JudgeReportError, judge_report
from .jobs import RESEARCHERS

ALLOWED = {"expert", "format"}


def _judge_of(request, study_id: int, judge_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    judge = Judge.objects.filter(study=study, id=judge_id).select_related("study").first()
    if judge is None:
        raise Http404("No such judge.")
    return study, judge


def _bad(message: str) -> HttpResponseBadRequest:
    return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")


def _query(request) -> tuple[str | None, str | None]:
    """(the refusal, the expert group asked for)."""
    unknown = sorted(set(request.GET) - ALLOWED)
    if unknown:
        return f"Unknown query parameter(s): {', '.join(unknown)}. Allowed: {', '.join(sorted(ALLOWED))}.", None
    if request.GET.get("format", "html") not in ("html", "json"):
        return "format must be html or json.", None
    return None, request.GET.get("expert") or None


@login_required
@require_safe
def judge_report_page(request, study_id: int, judge_id: int):
    study, judge = _judge_of(request, study_id, judge_id)
    refusal, expert = _query(request)
    if refusal:
        return _bad(refusal)
    try:
        report = judge_report(judge, expert=expert)
    except JudgeReportError as exc:
        return _bad(exc.message)
    if request.GET.get("format") == "json":
        return HttpResponse(json.dumps(report), content_type="application/json")
    return render(request, "evalapp/judge_report.html", {
        "study": study, "judge": judge, "report": report, "expert_asked": expert,
        "expert_named": any(str(name).lower().startswith(EXPERT_PREFIXES) for name in report["groups"]),
        "criteria": [criterion_tables(c, report["expert"]) for c in report["criteria"]]})


def criterion_tables(block: dict, expert: str | None) -> dict:
    """A criterion's numbers as the page's rows: the judge against each group, the ceilings within and
    across groups (a template cannot look a dict up by a group's name)."""
    stats = block.get("stats")
    if not stats:
        return {**block, "groups": [], "ceilings": []}
    groups = [{"name": name, "raters": block["raters"].get(name, 0), "expert": name == expert, **numbers}
              for name, numbers in stats["judge"].items()]
    ceilings = [{"name": f"within {name}", "expert": name == expert, **numbers}
                for name, numbers in stats["ceiling"].items()]
    ceilings += [{"name": pair.replace("~", " vs "), "expert": False, **numbers}
                 for pair, numbers in stats["across"].items()]
    return {**block, "groups": groups, "ceilings": ceilings}


@login_required
@require_safe
def judge_report_plot(request, study_id: int, judge_id: int, key: str):
    _, judge = _judge_of(request, study_id, judge_id)
    refusal, expert = _query(request)
    if refusal:
        return _bad(refusal)
    try:
        report = judge_report(judge, expert=expert)
    except JudgeReportError as exc:
        return _bad(exc.message)
    if key not in judge_plots.criterion_keys(report):
        raise Http404("No such criterion.")
    return HttpResponse(judge_plots.render(key, report), content_type="image/png")
