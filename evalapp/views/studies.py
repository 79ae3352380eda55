"""Server-rendered pages. Every study is fetched through raters.access."""

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from modelserver.heartbeats import silent_gpu_queue
from modelserver.truncation import truncation_by_arm
from raters.access import get_study_for, roles_in, studies_for
from raters.models import Role
from raters.services import is_researcher

from .. import selectors
from ..forms import PromptImportForm, RubricForm, StudyCreateForm, StudySettingsForm
from ..generation_forms import ArmForm, GenerationRunForm, TrainingForm
from ..errors import ServiceError
from ..models import PairwisePhase
from ..rubric_presets import PRESETS
from ..services import study_clone, study_create, study_delete, study_import_prompts, study_set_rubric


@login_required
def study_list(request):
    studies = studies_for(request.user).select_related("owner").order_by("-created_at")
    return render(request, "evalapp/study_list.html", {"studies": studies, "can_create": is_researcher(request.user)})


@login_required
@require_POST
def study_clone_view(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=[Role.RESEARCHER])
    if not is_researcher(request.user):
        raise PermissionDenied("Only researchers create studies; an administrator grants the role.")
    copy = study_clone(study=study, owner=request.user)
    messages.success(request, "A new draft with this study's design: import prompts, check the arms, then open it.")
    return redirect("study_detail", copy.id)


@login_required
def study_delete_view(request, study_id: int):
    """The confirm page (GET) and the deletion (POST, the title typed again): the owner only."""
    study = get_study_for(request.user, study_id, roles=[Role.RESEARCHER])
    if study.owner_id != request.user.id:
        raise PermissionDenied("Only the study's owner can delete it.")
    if request.method == "POST":
        if request.POST.get("title", "").strip() != study.title.strip():
            messages.error(request, "Type the study's title exactly as shown to delete it.")
        else:
            try:
                study_delete(study=study, actor=request.user)
            except ServiceError as exc:
                messages.error(request, exc.message)
            else:
                messages.success(request, f"Deleted “{study.title}” and everything in it.")
                return redirect("study_list")
    counts = {**selectors.study_counts(study=study), "members": study.memberships.count()}
    return render(request, "evalapp/study_delete.html", {"study": study, "counts": counts})


@login_required
def study_new(request):
    if not is_researcher(request.user):
        raise PermissionDenied("Only researchers create studies; an administrator grants the role.")
    form = StudyCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        study = study_create(owner=request.user, **form.cleaned_data)
        messages.success(request, "Study created. Import prompts and add arms next.")
        return redirect("study_detail", study.id)
    return render(request, "evalapp/study_new.html", {"form": form, "presets": PRESETS})


@login_required
@require_POST
def study_rubric(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=[Role.RESEARCHER])
    form = RubricForm(request.POST)
    if form.is_valid():
        try:
            study_set_rubric(study=study, criteria=form.cleaned_data["parsed"], actor=request.user,
                             preset=form.cleaned_data.get("preset") or None)
        except ServiceError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, "Rubric saved.")
            return redirect("study_detail", study_id=study.id)
    return _render_study(request, study, PromptImportForm(), None, status=400, rubric_form=form)


@login_required
def study_detail(request, study_id: int):
    study = get_study_for(request.user, study_id)
    return _render_study(request, study, PromptImportForm(), None)


@login_required
@require_POST
def study_import(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=[Role.RESEARCHER])
    form = PromptImportForm(request.POST, request.FILES)
    report = None
    if form.is_valid():
        upload = form.cleaned_data["file"]
        report = study_import_prompts(
            study=study,
            data=upload.read(),
            filename=upload.name,
            split=form.cleaned_data["split"] or None,
            sample=form.cleaned_data["sample"],
            seed=form.cleaned_data["seed"] or 0,
            redact=form.cleaned_data["redact"],
        )
        if report.ok:
            messages.success(request, report.summary())
            if not report.warnings:
                return redirect("study_detail", study_id=study.id)
    status = 400 if report is None or not report.ok else 200
    return _render_study(request, study, form, report, status=status)


@login_required
@require_POST
def study_settings(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=[Role.RESEARCHER])
    form = StudySettingsForm(request.POST, instance=study)
    if form.is_valid():
        form.save()
        messages.success(request, "Study settings saved.")
        return redirect("study_detail", study_id=study.id)
    return _render_study(request, study, PromptImportForm(), None, status=400, settings_form=form)


def _render_study(request, study, form, report, status=200, settings_form=None, rubric_form=None):
    roles = roles_in(request.user, study)
    context = {"study": study, "roles": roles, "is_researcher": Role.RESEARCHER in roles,
               "pairwise": PairwisePhase.objects.filter(study=study).first()}
    if Role.RESEARCHER in roles:
        page = Paginator(selectors.study_prompts(study=study), 50).get_page(request.GET.get("page"))
        context.update(
            counts=selectors.study_counts(study=study),
            arms=selectors.study_arms_with_counts(study=study),
            prompts_page=page,
            import_form=form,
            report=report,
            arm_form=ArmForm(study=study, user=request.user),
            training_form=TrainingForm(),
            training_runs=selectors.study_training_runs(study=study),
            generation_form=GenerationRunForm(),
            runs=selectors.study_generation_runs(study=study),
            gpu_silence=silent_gpu_queue(study=study),
            truncation=truncation_by_arm(study),
            n_harmful=selectors.study_confirmed_harmful(study=study),
            settings_form=settings_form or StudySettingsForm(instance=study),
            rubric_form=rubric_form or RubricForm(initial={"criteria": json.dumps(study.rubric(), indent=2)}),
            presets=PRESETS,
        )
    return render(request, "evalapp/study_detail.html", context, status=status)
