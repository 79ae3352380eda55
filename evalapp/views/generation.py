"""Pages that set up and start generation: arms and generation runs (researchers only)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from modelserver.models import GenerationRun
from modelserver.services import generation_run_create, generation_run_resume
from modelserver.truncation import regenerate_truncated
from raters.access import get_study_for

from .. import selectors
from ..generation_forms import ArmForm, GenerationRunForm, RegenerateTruncatedForm
from ..errors import ServiceError
from ..models import Arm
from ..services import arm_create
from .jobs import RESEARCHERS, flash_form_errors, resume_view, runs_fragment_view, start_view


@login_required
@require_POST
def arm_add(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    form = ArmForm(request.POST, study=study, user=request.user)
    if form.is_valid():
        try:
            arm_create(
                study=study,
                label=form.cleaned_data["label"],
                base_model=form.cleaned_data["base_model"] or "bundled",
                adapter=form.cleaned_data["adapter"],
                system_prompt=form.cleaned_data["system_prompt"],
                generation_params=form.generation_params(),
            )
        except ServiceError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Arm “{form.cleaned_data['label']}” added.")
    else:
        flash_form_errors(request, form, prefix="Arm ")
    return redirect("study_detail", study_id=study.id)


generation_start = start_view(
    GenerationRunForm,
    lambda request, study, data: generation_run_create(study=study, user=request.user, **data),
    "Generation run {run.id} queued: {run.total} responses.",
)
generation_resume = resume_view(GenerationRun, generation_run_resume,
                                "Run {run.id} queued again; it generates only what is missing.")
generation_runs_fragment = runs_fragment_view(selectors.study_generation_runs, "modelserver/runs_fragment.html", "runs")


@login_required
@require_POST
def generation_regenerate_truncated(request, study_id: int, arm_id: int):
    """Regenerate one arm's replies cut at the token limit with a larger max_new_tokens."""
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    arm = get_object_or_404(Arm, id=arm_id, study=study)
    form = RegenerateTruncatedForm(request.POST)
    if form.is_valid():
        limit = form.cleaned_data["max_new_tokens"]
        try:
            run = regenerate_truncated(study=study, user=request.user, arm=arm, max_new_tokens=limit)
        except ServiceError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Generation run {run.id} queued: arm “{arm.label}”'s cut replies are "
                                      f"generated again with max_new_tokens = {limit}.")
    else:
        flash_form_errors(request, form)
    return redirect("study_detail", study_id=study.id)
