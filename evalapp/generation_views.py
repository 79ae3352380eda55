"""Pages that start and follow generation: arms, runs, the playground (researchers only)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from modelserver.models import GenerationRun, PlaygroundRequest
from modelserver.services import (
    GenerationError,
    generation_run_create,
    generation_run_resume,
    playground_request_create,
)
from raters.access import get_study_for
from raters.models import Role

from .generation_forms import ArmForm, GenerationRunForm, PlaygroundForm
from .services import arm_create

RESEARCHERS = [Role.RESEARCHER]


@login_required
@require_POST
def arm_add(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    form = ArmForm(request.POST, study=study, user=request.user)
    if form.is_valid():
        arm_create(
            study=study,
            label=form.cleaned_data["label"],
            base_model=form.cleaned_data["base_model"] or "bundled",
            adapter=form.cleaned_data["adapter"],
            system_prompt=form.cleaned_data["system_prompt"],
            generation_params=form.generation_params(),
        )
        messages.success(request, f"Arm “{form.cleaned_data['label']}” added.")
    else:
        for field, errors in form.errors.items():
            messages.error(request, f"Arm {field}: {' '.join(errors)}")
    return redirect("study_detail", study_id=study.id)


@login_required
@require_POST
def generation_start(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    form = GenerationRunForm(request.POST)
    if not form.is_valid():
        for field, errors in form.errors.items():
            messages.error(request, f"{field}: {' '.join(errors)}")
        return redirect("study_detail", study_id=study.id)
    try:
        run = generation_run_create(study=study, user=request.user, **form.cleaned_data)
    except GenerationError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Generation run {run.id} queued: {run.total} responses.")
    return redirect("study_detail", study_id=study.id)


@login_required
@require_POST
def generation_resume(request, study_id: int, run_id: int):
    return _resume(request, study_id, GenerationRun, run_id,
                   lambda run: generation_run_resume(run=run), GenerationError,
                   "Run {id} queued again; it generates only what is missing.")


def _resume(request, study_id, model, run_id, resume, error_class, done_message):
    """Requeue a failed or abandoned job of the study: generation and training alike."""
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    run = get_object_or_404(model, id=run_id, study=study)
    try:
        resume(run)
    except error_class as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, done_message.format(id=run.id))
    return redirect("study_detail", study_id=study.id)


@login_required
def generation_runs_fragment(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    return render(request, "modelserver/runs_fragment.html", {"study": study, "runs": _runs(study)})


def _runs(study):
    return list(GenerationRun.objects.filter(study=study).order_by("-created_at")[:10])


@login_required
def playground(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    form = PlaygroundForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            item = playground_request_create(
                study=study, user=request.user, messages=form.cleaned_data["conversation"], seed=form.cleaned_data["seed"]
            )
        except GenerationError as exc:
            messages.error(request, str(exc))
        else:
            return redirect("playground_item", study_id=study.id, request_id=item.id)
    recent = PlaygroundRequest.objects.filter(study=study, created_by=request.user)[:5]
    return render(request, "modelserver/playground.html", {"study": study, "form": form, "recent": recent})


@login_required
def playground_item(request, study_id: int, request_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    item = get_object_or_404(PlaygroundRequest, id=request_id, study=study, created_by=request.user)
    template = "modelserver/playground_fragment.html" if request.headers.get("X-Requested-With") else "modelserver/playground_item.html"
    return render(request, template, {"study": study, "item": item, "arms": study.arms.order_by("id")})


# ----------------------------------------------------------------------------- training and adapters


@login_required
@require_POST
def training_start(request, study_id: int):
    from modelserver.training_services import training_run_create

    from .generation_forms import TrainingForm

    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    form = TrainingForm(request.POST)
    if not form.is_valid():
        for field, errors in form.errors.items():
            messages.error(request, f"{field}: {' '.join(errors)}")
        return redirect("study_detail", study_id=study.id)
    data = dict(form.cleaned_data)
    name = data.pop("name")
    run = training_run_create(user=request.user, name=name, config={"base": "bundled", **data}, study=study)
    messages.success(request, f"Training run {run.id} queued; this study's prompts are excluded from its data.")
    return redirect("study_detail", study_id=study.id)


@login_required
def training_runs_fragment(request, study_id: int):
    from modelserver.models import TrainingRun

    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    runs = TrainingRun.objects.filter(study=study).select_related("adapter")[:10]
    return render(request, "modelserver/training_fragment.html", {"study": study, "training_runs": runs})


@login_required
@require_POST
def training_resume(request, study_id: int, run_id: int):
    from modelserver.models import TrainingRun
    from modelserver.training_services import TrainingError, training_run_resume

    return _resume(request, study_id, TrainingRun, run_id,
                   lambda run: training_run_resume(run=run), TrainingError,
                   "Training run {id} resumes from its last checkpoint.")


@login_required
def adapter_list(request):
    from modelserver.models import Adapter

    adapters = Adapter.objects.filter(created_by=request.user)
    return render(request, "modelserver/adapters.html", {"adapters": adapters})


@login_required
def adapter_detail(request, adapter_id: int):
    from modelserver.models import Adapter

    adapter = get_object_or_404(Adapter, id=adapter_id, created_by=request.user)
    return render(request, "modelserver/adapter_detail.html", {"adapter": adapter})


@login_required
def adapter_loss_plot(request, adapter_id: int):
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from django.http import HttpResponse

    from modelserver.models import Adapter

    adapter = get_object_or_404(Adapter, id=adapter_id, created_by=request.user)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    if adapter.train_losses:
        steps, losses = zip(*adapter.train_losses, strict=True)
        ax.plot(steps, losses, lw=1, alpha=0.7, label="training loss")
    val = [(p["step"], p["val_loss"]) for p in adapter.loss_curve if p.get("val_loss") is not None]
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation loss (held-out questions)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", dpi=110)
    plt.close(fig)
    return HttpResponse(buffer.getvalue(), content_type="image/png")
