"""The results page, its plots, and the export downloads (researchers only)."""

import json
import tempfile

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import render

from modelserver.judge_models import Judge
from raters.access import get_study_for

from .. import plots, text_plots
from ..exports.bundle import write_bundle
from ..exports.copy_export import export_chunks
from ..exports.csv import stream_response
from ..exports.tables import EXPORTS
from ..judge_results import judge_criterion_results, judge_results, study_judge
from ..results import results_state
from .jobs import RESEARCHERS


def asked_judge(study, request) -> Judge | None:
    """The study's judge named by ?judge=<id>, None when none is asked; 404 for one not of this study."""
    wanted = request.GET.get("judge") or ""
    if not wanted:
        return None
    judge = study_judge(study, wanted)
    if judge is None:
        raise Http404("No such judge.")
    return judge


@login_required
def results(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    state = results_state(study)  # rows only: the computation is a task (evalapp.results)
    data = state.data or {}
    judge = asked_judge(study, request)
    judged = judge_results(study, judge) if judge else None
    return render(request, "evalapp/results.html", {
        "study": study, "state": state, "progress": state.progress(), "data": data,
        "scales": criterion_results(study, data), "plots": PLOTS,
        "judges": Judge.objects.filter(study=study).order_by("name"), "judge": judge, "judged": judged,
        "judge_scales": judge_criterion_results(study, judged) if judged else []})


PLOTS = (*plots.PLOTS, "length_score")


def criterion_results(study, data: dict) -> list[dict]:
    """Each analysed criterion of the rubric, in rubric order, with what the page shows of it: its
    agreement, its arm means, and one comparison per pair of arms."""
    out = []
    agreement = (data.get("agreement") or {}).get("scales", {})
    for criterion in study.rubric():
        key = criterion["key"]
        if key not in agreement:
            continue
        block = agreement[key]
        shown = {**criterion, "name": criterion["question"], "agreement": block,
                 "alpha": block.get(block.get("alpha_headline", ""), {}),
                 "arms": data.get("arm_means", {}).get(key, {}), "comparisons": []}
        for contrast, analysis in (data.get("comparisons") or {}).items():
            comparison = analysis.get("scales", {}).get(key, {}).get("comparison")
            if not comparison:
                continue
            second, first = contrast.split(" - ", 1)
            entry = {"contrast": contrast, "labels": [first, second], "comparison": comparison}
            if criterion["level"] == "nominal":
                names = {str(i): o["label"] for i, o in enumerate(criterion["options"])}
                entry["choice_rows"] = [{"label": names.get(option, option), **o}
                                        for option, o in comparison["options"].items()]
            shown["comparisons"].append(entry)
        out.append(shown)
    return out


@login_required
def results_json(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    judge = asked_judge(study, request)
    body, status = results_state(study).as_json()
    if status != 200:
        return JsonResponse(body, status=status)
    return HttpResponse(json.dumps(with_judge(study, body, judge), default=str), content_type="application/json")



@login_required
def results_progress(request, study_id: int):
    """What the results page polls: the computation's status and stage, small enough to ask every 2 s."""
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    state = results_state(study)
    return JsonResponse({"stale": state.stale, "computed": state.entry is not None,
                         "computed_at": state.computed_at.isoformat() if state.computed_at else None,
                         "progress": state.progress()})


def with_judge(study, data: dict, judge: Judge | None) -> dict:
    """The human results, and beside them under their own key, only when asked, one judge's comparison."""
    return data if judge is None else {**data, "judge_comparison": judge_results(study, judge)}


@login_required
def results_plot(request, study_id: int, name: str, fmt: str):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    if name not in PLOTS or fmt not in ("png", "svg"):
        raise Http404("No such plot.")
    state = results_state(study)
    if state.entry is None:
        # The page shows no plots until the first computation finishes; one asked for earlier waits too.
        return HttpResponse("The results are still being computed.", status=202, content_type="text/plain")
    summary, data = state.plots, state.data
    image = (text_plots.length_score_plot(summary["length_score"], fmt, simulated=bool(data.get("simulated")))
             if name == "length_score" else plots.render(name, summary, data, fmt))
    response = HttpResponse(image,
                            content_type="image/png" if fmt == "png" else "image/svg+xml")
    if request.GET.get("download"):
        response["Content-Disposition"] = f'attachment; filename="study-{study.id}-{name}.{fmt}"'
    return response


@login_required
def export_csv(request, study_id: int, name: str):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    if name not in EXPORTS:
        raise Http404("No such export.")
    return stream_response(export_chunks(study=study, name=name, actor=request.user), f"study-{study.id}-{name}.csv")


@login_required
def export_zip(request, study_id: int):
    """Every export, a codebook and a manifest with row counts and sha256s, in one zip (spooled to disk)."""
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    spool = tempfile.TemporaryFile()
    write_bundle(study, spool, actor=request.user)
    spool.seek(0)
    return FileResponse(spool, as_attachment=True, filename=f"study-{study.id}-export.zip")
