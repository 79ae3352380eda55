"""The results page, its plots, and the export downloads (researchers only)."""

import json
import tempfile

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import render

from raters.access import get_study_for

from .. import plots
from ..exports.bundle import write_bundle
from ..exports.csv import csv_response
from ..exports.tables import EXPORTS
from ..results import plot_inputs, study_results
from .jobs import RESEARCHERS


@login_required
def results(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    data = study_results(study)
    scales = []
    agreement = (data.get("agreement") or {}).get("scales", {})
    comparison = (data.get("comparison") or {}).get("scales", {})
    for key in ("empathy", "fluency"):
        if key in agreement:
            scales.append({"key": key, "name": next(s["name"] for s in study.scales if s["key"] == key),
                           "agreement": agreement[key], "comparison": comparison.get(key, {}).get("comparison"),
                           "arms": data.get("arm_means", {}).get(key, {})})
    return render(request, "evalapp/results.html", {"study": study, "data": data, "scales": scales,
                                                     "plots": plots.PLOTS})


@login_required
def results_json(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    return HttpResponse(json.dumps(study_results(study), default=str), content_type="application/json")


@login_required
def results_plot(request, study_id: int, name: str, fmt: str):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    if name not in plots.PLOTS or fmt not in ("png", "svg"):
        raise Http404("No such plot.")
    summary, data = plot_inputs(study)
    response = HttpResponse(plots.render(name, summary, data, fmt),
                            content_type="image/png" if fmt == "png" else "image/svg+xml")
    if request.GET.get("download"):
        response["Content-Disposition"] = f'attachment; filename="study-{study.id}-{name}.{fmt}"'
    return response


@login_required
def export_csv(request, study_id: int, name: str):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    if name not in EXPORTS:
        raise Http404("No such export.")
    header, rows = EXPORTS[name]
    return csv_response(header, rows(study), f"study-{study.id}-{name}.csv")


@login_required
def export_zip(request, study_id: int):
    """Every export, a codebook and a manifest with row counts and sha256s, in one zip (spooled to disk)."""
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    spool = tempfile.TemporaryFile()
    write_bundle(study, spool)
    spool.seek(0)
    return FileResponse(spool, as_attachment=True, filename=f"study-{study.id}-export.zip")
