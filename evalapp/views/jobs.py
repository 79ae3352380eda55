"""The views every job kind (generation runs, training runs) shares: start, resume, the run list.

A job page either queues work or requeues it, and both end on the study page with one message, so
each shape is written once here and each job kind makes its views from them with its own service,
form and wording.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from modelserver.heartbeats import silent_gpu_queue
from raters.access import get_study_for
from raters.models import Role

from ..errors import ServiceError

RESEARCHERS = [Role.RESEARCHER]


def flash_form_errors(request, form, prefix: str = "") -> None:
    for field, errors in form.errors.items():
        messages.error(request, f"{prefix}{field}: {' '.join(errors)}")


def start_view(form_class, start, done_message: str):
    """A POST view that queues a job from a form; `start(request, study, cleaned_data)` returns the run."""

    @login_required
    @require_POST
    def view(request, study_id: int):
        study = get_study_for(request.user, study_id, roles=RESEARCHERS)
        form = form_class(request.POST)
        if form.is_valid():
            _carry_out(request, lambda: start(request, study, form.cleaned_data), done_message)
        else:
            flash_form_errors(request, form)
        return redirect("study_detail", study_id=study.id)

    return view


def resume_view(model, resume, done_message: str):
    """A POST view that requeues a failed or abandoned run of the study through `resume(run=...)`."""

    @login_required
    @require_POST
    def view(request, study_id: int, run_id: int):
        study = get_study_for(request.user, study_id, roles=RESEARCHERS)
        run = get_object_or_404(model, id=run_id, study=study)

        def requeue():
            resume(run=run)
            return run

        _carry_out(request, requeue, done_message)
        return redirect("study_detail", study_id=study.id)

    return view


def runs_fragment_view(latest_runs, template: str, context_name: str):
    """The self-refreshing list of a study's latest runs of one kind (`latest_runs` is its selector)."""

    @login_required
    def view(request, study_id: int):
        study = get_study_for(request.user, study_id, roles=RESEARCHERS)
        return render(request, template, {"study": study, context_name: latest_runs(study=study),
                                          "gpu_silence": silent_gpu_queue(study=study)})

    return view


def _carry_out(request, action, done_message: str) -> None:
    """Run the service call: its refusal becomes the page's error, success `done_message` formatted with the run."""
    try:
        run = action()
    except ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, done_message.format(run=run))
