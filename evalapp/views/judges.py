"""The researcher's judges page: add an LLM judge to a study, run it on the responses or the pairs, follow
and resume its runs. Everything goes through modelserver.judge_services; its refusals are the page's
messages. Judge answers are a table of their own (modelserver.judge_models): nothing here touches ratings.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Sum
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from modelserver.heartbeats import silent_gpu_queue
from modelserver.judge_models import Judge, JudgeMode, JudgeRun
from modelserver.judge_services import judge_create, judge_run_create, judge_run_resume
from raters.access import get_study_for

from ..errors import ServiceError
from ..judge_forms import JudgeForm, JudgeRunForm
from ..models import ResponsePair
from .jobs import RESEARCHERS, flash_form_errors

RUNS_SHOWN = 10  # per judge, the latest


def study_judges(study) -> list[Judge]:
    """The study's judges, each with ``n_answers`` and ``latest_runs``, in two queries."""
    judges = list(Judge.objects.filter(study=study).annotate(n_answers=Count("answers")).order_by("id"))
    runs: dict[int, list[JudgeRun]] = {}
    for run in JudgeRun.objects.filter(judge__in=judges).order_by("-created_at", "-id"):
        runs.setdefault(run.judge_id, []).append(run)
    for judge in judges:
        judge.latest_runs = runs.get(judge.id, [])[:RUNS_SHOWN]
        judge.n_older_runs = max(len(runs.get(judge.id, [])) - RUNS_SHOWN, 0)
    return judges


def _fragment_context(study) -> dict:
    judges = study_judges(study)
    return {"study": study, "judges": judges,
            "judges_active": any(run.is_active for judge in judges for run in judge.latest_runs),
            "has_pairs": ResponsePair.objects.filter(study=study).exists(),
            "gpu_silence": silent_gpu_queue(study=study)}


def _page(request, study, form=None, status=200):
    context = {**_fragment_context(study), "form": form or JudgeForm(study=study)}
    return render(request, "evalapp/judges.html", context, status=status)


@login_required
def judges(request, study_id: int):
    """The page (GET), or add a judge (POST): a refusal shows on the form with the service's status."""
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    if request.method != "POST":
        return _page(request, study)
    form = JudgeForm(request.POST, study=study)
    if not form.is_valid():
        return _page(request, study, form=form, status=400)
    try:
        judge = judge_create(study=study, user=request.user, **form.judge_kwargs())
    except ServiceError as exc:
        form.add_error(None, exc.message)
        return _page(request, study, form=form, status=exc.status)
    messages.success(request, f"Judge “{judge.name}” added.")
    return redirect("judges", study_id=study.id)


@login_required
def judges_fragment(request, study_id: int):
    """The judges and their runs, re-fetched by poll.js while a run is queued or running."""
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    return render(request, "evalapp/_judges_fragment.html", _fragment_context(study))


@login_required
@require_POST
def judge_run_start(request, study_id: int, judge_id: int):
    # A second click while the first run is active is the service's 409, shown as the page's message.
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    judge = get_object_or_404(Judge, id=judge_id, study=study)
    form = JudgeRunForm(request.POST)
    if not form.is_valid():
        flash_form_errors(request, form)
        return redirect("judges", study_id=study.id)
    try:
        run = judge_run_create(judge=judge, user=request.user, mode=form.cleaned_data["mode"])
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        what = "pairs" if run.mode == JudgeMode.PAIRS else "responses"
        # Counted from the chunks, not the run's status or progress: a worker may already have started.
        # (The service refuses a run with nothing to judge, so there is always a chunk.)
        pending = run.chunks.aggregate(n=Sum("size"))["n"]
        messages.success(request, f"Judge run {run.id} of “{judge.name}” queued: {pending} to judge ({what}"
                                  f"{', each in both orders' if run.mode == JudgeMode.PAIRS else ''}"
                                  f"{', counted once per sample' if judge.samples > 1 else ''}).")
    return redirect("judges", study_id=study.id)


@login_required
@require_POST
def judge_run_resume_view(request, study_id: int, run_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    run = get_object_or_404(JudgeRun, id=run_id, study=study)
    try:
        judge_run_resume(run=run)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Judge run {run.id} queued again; it judges only what is missing.")
    return redirect("judges", study_id=study.id)
