"""Pages for fine-tuning: training runs of a study, and the adapters they produce (researchers only)."""

import io

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, render

from modelserver.models import Adapter, TrainingRun
from modelserver.training_services import training_run_create, training_run_resume

from .. import selectors
from ..generation_forms import TrainingForm
from .jobs import resume_view, runs_fragment_view, start_view


def _start(request, study, data):
    config = {key: value for key, value in data.items() if key != "name"}
    return training_run_create(user=request.user, name=data["name"], config={"base": "bundled", **config}, study=study)


training_start = start_view(TrainingForm, _start,
                            "Training run {run.id} queued; this study's prompts are excluded from its data.")
training_resume = resume_view(TrainingRun, training_run_resume, "Training run {run.id} resumes from its last checkpoint.")
training_runs_fragment = runs_fragment_view(selectors.study_training_runs, "modelserver/training_fragment.html",
                                            "training_runs")


@login_required
def adapter_list(request):
    adapters = Adapter.objects.filter(created_by=request.user)
    return render(request, "modelserver/adapters.html", {"adapters": adapters})


@login_required
def adapter_detail(request, adapter_id: int):
    adapter = get_object_or_404(Adapter, id=adapter_id, created_by=request.user)
    return render(request, "modelserver/adapter_detail.html", {"adapter": adapter})


@login_required
def adapter_loss_plot(request, adapter_id: int):
    # matplotlib is imported here, not at module load: only this page needs it, and it is slow to import.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
