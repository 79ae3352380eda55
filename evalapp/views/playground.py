"""The playground: a researcher tries one conversation against the study's arms before generating."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render

from modelserver.models import PlaygroundRequest
from modelserver.services import playground_request_create
from raters.access import get_study_for

from ..errors import ServiceError
from ..generation_forms import PlaygroundForm
from .jobs import RESEARCHERS


@login_required
def playground(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    form = PlaygroundForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            item = playground_request_create(
                study=study, user=request.user, messages=form.cleaned_data["conversation"], seed=form.cleaned_data["seed"]
            )
        except ServiceError as exc:
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
