"""The results page, its plots, and the exports (researchers only)."""

import json
import tempfile
import zipfile
from hashlib import sha256
from importlib import metadata

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from raters.access import get_study_for
from raters.models import Role

from . import plots
from .exports import RATINGS_COLUMNS, codebook_rows, csv_lines
from .models import AuditEvent, Response
from .results import RATING_HEADER, analysis_records, rating_rows, study_results

RESEARCHERS = [Role.RESEARCHER]


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
    records = analysis_records(rating_rows(study))
    body = plots.render(name, records, study_results(study), fmt)
    response = HttpResponse(body, content_type="image/png" if fmt == "png" else "image/svg+xml")
    if request.GET.get("download"):
        response["Content-Disposition"] = f'attachment; filename="study-{study.id}-{name}.{fmt}"'
    return response


def _response_rows(study):
    queryset = Response.objects.filter(prompt__study=study).order_by("id").values_list(
        "public_id", "prompt__external_id", "arm__label", "arm__blind_code", "sample_index", "text", "provenance",
        "created_at")
    for public_id, prompt_id, arm, code, sample, text, provenance, created in queryset.iterator(chunk_size=2000):
        yield (public_id, prompt_id, arm, code, sample, text, json.dumps(provenance, sort_keys=True), created.isoformat())


RESPONSE_HEADER = ["response_id", "prompt_id", "arm", "arm_blind_code", "sample_index", "text", "provenance_json", "created_at"]
AUDIT_HEADER = ["when", "actor", "action", "object_type", "object_id", "before_json", "after_json"]


def _audit_rows(study):
    for e in AuditEvent.objects.filter(study=study).select_related("actor").order_by("id").iterator(chunk_size=2000):
        yield (e.created_at.isoformat(), e.actor.get_username(), e.action, e.object_type, e.object_id,
               json.dumps(e.before, default=str), json.dumps(e.after, default=str))


EXPORTS = {
    "ratings": (RATING_HEADER, rating_rows),
    "responses": (RESPONSE_HEADER, _response_rows),
    "audit": (AUDIT_HEADER, _audit_rows),
}


@login_required
def export_csv(request, study_id: int, name: str):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    if name not in EXPORTS:
        raise Http404("No such export.")
    header, rows = EXPORTS[name]
    response = StreamingHttpResponse(csv_lines(header, rows(study)), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="study-{study.id}-{name}.csv"'
    return response


@login_required
def export_zip(request, study_id: int):
    """Every export, a codebook and a manifest with row counts and sha256s, in one zip (spooled to disk)."""
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    spool = tempfile.TemporaryFile()
    manifest = {"study": {"id": study.id, "title": study.title, "status": study.status, "scales": study.scales,
                          "ratings_per_response": study.ratings_per_response, "score_policy": study.score_policy,
                          "disagreement_rule": study.disagreement_rule,
                          "disagreement_threshold": study.disagreement_threshold, "design_seed": study.design_seed},
                "arms": list(study.arms.values("label", "blind_code", "base_model", "adapter", "system_prompt",
                                               "generation_params")),
                "models": _model_fingerprints(study),
                "exported_at": timezone.now().isoformat(),
                "software": {p: _version(p) for p in ("empatheval", "django", "numpy", "scipy", "statsmodels",
                                                       "krippendorff", "torch", "transformers", "peft")},
                "files": {}}
    with zipfile.ZipFile(spool, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, (header, rows) in EXPORTS.items():
            digest, count = sha256(), [0]

            def counted(iterable, count=count):
                for row in iterable:
                    count[0] += 1
                    yield row

            with archive.open(f"{name}.csv", "w") as handle:
                for chunk in csv_lines(header, counted(rows(study))):
                    data = chunk.encode("utf-8")
                    digest.update(data)
                    handle.write(data)
            manifest["files"][f"{name}.csv"] = {"rows": count[0], "sha256": digest.hexdigest()}
        codebook = "".join(csv_lines(["file", "column", "meaning"], codebook_rows(RATINGS_COLUMNS, "ratings.csv")))
        archive.writestr("codebook.csv", codebook)
        manifest["files"]["codebook.csv"] = {"sha256": sha256(codebook.encode()).hexdigest()}
        archive.writestr("manifest.json", json.dumps(manifest, indent=2, default=str))
    spool.seek(0)
    return FileResponse(spool, as_attachment=True, filename=f"study-{study.id}-export.zip")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _model_fingerprints(study) -> dict:
    """Per arm, the distinct weight, adapter and chat-template hashes its responses were generated with."""
    seen: dict[str, set] = {}
    for label, provenance in Response.objects.filter(prompt__study=study).values_list("arm__label", "provenance"):
        seen.setdefault(label, set()).add((provenance.get("base_sha256"), provenance.get("adapter_sha256"),
                                           provenance.get("chat_template_sha256")))
    return {label: [dict(zip(("base_sha256", "adapter_sha256", "chat_template_sha256"), v, strict=True))
                    for v in sorted(values, key=str)] for label, values in seen.items()}
