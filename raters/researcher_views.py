"""Pages for who runs studies: staff grant the researcher role; a study's owner adds co-researchers; a
study's raters page and rater groups."""

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from evalapp.rubric import answer_text

from . import selectors, services
from .access import get_study_for
from .forms import CalibrationItemForm, ConsentPublishForm, InviteForm, ResearcherGrantForm
from .models import Role, StudyMembership
from .quality import study_rater_quality
from .services.panel import panel_release_idle_lazily
from .services.panel_progress import panel_identities
from .services.researchers import RESEARCHERS_GROUP
from .templatetags.scales import rubric_for_display


@login_required
def staff_researchers(request):
    """Staff grant the researcher role; a new account's one-time password is shown on this response only."""
    if not request.user.is_staff:
        raise PermissionDenied("Only staff grant the researcher role.")
    form = ResearcherGrantForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        try:
            user, password = services.researcher_grant(email=form.cleaned_data["email"])
        except services.RatingError as exc:
            messages.error(request, str(exc))
        else:
            created = {"username": user.get_username(), "password": password}
            messages.success(request, f"{user.get_username()} is a researcher.")
    researchers = get_user_model().objects.filter(groups__name=RESEARCHERS_GROUP).order_by("username")
    return render(request, "raters/staff_researchers.html",
                  {"form": form, "created": created, "researchers": researchers})


@login_required
def study_researchers(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=[Role.RESEARCHER])
    members = StudyMembership.objects.filter(study=study, role=Role.RESEARCHER).select_related("user")
    return render(request, "raters/study_researchers.html", {
        "study": study, "members": members, "is_owner": study.owner_id == request.user.id,
        "form": ResearcherGrantForm(),
    })


@login_required
@require_POST
def study_researcher_change(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=[Role.RESEARCHER])
    try:
        if request.POST.get("action") == "remove":
            user_id = request.POST.get("user", "")
            if not user_id.isdigit():
                raise services.RatingError("Choose the co-researcher to remove.")
            services.coresearcher_remove(study=study, actor=request.user, user_id=int(user_id))
            messages.success(request, "Co-researcher removed.")
        else:
            form = ResearcherGrantForm(request.POST)
            if not form.is_valid():
                raise services.RatingError("Give the co-researcher's e-mail address.")
            membership = services.coresearcher_add(study=study, actor=request.user, email=form.cleaned_data["email"])
            messages.success(request, f"{membership.user.get_username()} is a co-researcher.")
    except services.RatingError as exc:
        if exc.status == 403:
            raise PermissionDenied(str(exc)) from exc
        messages.error(request, str(exc))
    return redirect("study_researchers", study_id=study.id)


@login_required
def rater_groups(request, study_id: int):
    """Each rater's group (students, psychologists, ...): the judge validation report's expert group and the
    subgroup results read it. A POST sets them all at once."""
    study = get_study_for(request.user, study_id, roles=[Role.RESEARCHER])
    members = StudyMembership.objects.filter(study=study, role=Role.RATER).order_by("pseudonym", "id")
    if request.method == "POST":
        wanted = {m.user_id: request.POST.get(f"group-{m.user_id}", m.group) for m in members}
        try:
            changed = services.rater_groups_set(study=study, groups=wanted, actor=request.user)
        except services.RatingError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"{changed} rater group{'s' if changed != 1 else ''} changed.")
        return redirect("rater_groups", study_id=study.id)
    names = sorted({m.group for m in members if m.group})
    return render(request, "raters/rater_groups.html", {"study": study, "members": members, "names": names,
                                                        "panel_ids": panel_identities(study)})


@login_required
def raters_page(request, study_id: int):
    """Who joined and how they rate, invitations, consent and calibration items. Pool participants are named
    by their pool id (with their pseudonym), and their idle ones are timed out first, so statuses are current."""
    study = get_study_for(request.user, study_id, roles=[Role.RESEARCHER])
    panel_release_idle_lazily(study=study)
    context = {
        "study": study,
        "panel_ids": panel_identities(study),
        "invite_form": InviteForm(),
        "consent_form": ConsentPublishForm(),
        "calibration_form": CalibrationItemForm(rubric=study.rubric()),
        "criteria": rubric_for_display(study),
        "consent_version": study.consent_versions.order_by("-version").first(),
        "calibration_items": [
            {"item": item, "references": ", ".join(f"{c['key']} {answer_text(c, item.references[c['key']])}"
                                                   for c in study.rubric() if c["key"] in item.references)}
            for item in study.calibration_items.all()],
        "raters": selectors.study_raters(study=study),
        "quality": study_rater_quality(study=study),
        "invitations": study.invitations.select_related("accepted_by")[:50],
    }
    return render(request, "raters/raters.html", context)
