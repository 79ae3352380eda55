"""Rater pages (consent, calibration, blind rating) and the researcher's rater management.

A rater's pages carry nothing about where a response came from: no arm label,
model or adapter name, sequential id or ordering hint (tests scan every byte).
"""

import csv
import io

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from evalapp.models import PairwisePhase, UnsafeCategory
from evalapp.rubric import answer_text

from . import selectors, services
from .access import get_study_for
from .compiled import run_together
from .forms import CalibrationItemForm, ConsentPublishForm, InviteForm, RatingForm, answers_from
from .models import CalibrationItem, PairAssignment, Role, StudyMembership
from .panel_models import ParticipantStatus
from .panel_views import outcome_redirect, stopped_page
from .services import panel as panel_services
from .templatetags.scales import rubric_for_display

RESEARCHERS = [Role.RESEARCHER]


# ----------------------------------------------------------------------------- invitations


def lockout(request, original_response=None, credentials=None):
    """django-axes' answer to a locked-out login (AXES_LOCKOUT_CALLABLE): a page that says why and for how long."""
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    minutes = max(1, int(settings.AXES_COOLOFF_TIME.total_seconds() // 60))
    return render(request, "registration/lockout.html",
                  {"failure_limit": settings.AXES_FAILURE_LIMIT, "username": username, "minutes": minutes}, status=429)


def invitation_accept(request, token: str):
    try:
        invitation = services.invitation_for_token(token)
    except services.RatingError as exc:
        return render(request, "raters/invitation.html", {"error": str(exc)}, status=exc.status)
    form = UserCreationForm(request.POST or None) if not request.user.is_authenticated else None
    if request.method == "POST":
        if form is not None:
            if not form.is_valid():
                return render(request, "raters/invitation.html", {"invitation": invitation, "form": form}, status=400)
            user = form.save()
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        try:
            services.invitation_accept(token=token, user=request.user)
        except services.RatingError as exc:
            return render(request, "raters/invitation.html", {"error": str(exc)}, status=exc.status)
        messages.success(request, f"You joined “{invitation.study.title}”.")
        if invitation.role == Role.ADJUDICATOR:
            return redirect("adjudication_queues", study_id=invitation.study_id)
        return redirect("rate", study_id=invitation.study_id)
    return render(request, "raters/invitation.html", {"invitation": invitation, "form": form})


# ----------------------------------------------------------------------------- consent


@login_required
def consent(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=[Role.RATER])
    status = selectors.rater_status(study=study, user=request.user)
    if (to_outcome := outcome_redirect(request, study, status)) is not None:
        return to_outcome
    if status.withdrawn:
        raise Http404("No such study.")
    version = study.consent_versions.order_by("-version").first()
    if request.method == "POST" and version is not None:
        if request.POST.get("version") != str(version.version) or request.POST.get("agree") != "yes":
            messages.error(request, "Tick the box to agree to the current consent text.")
        else:
            try:
                services.consent_accept_noticed(study=study, user=request.user, version=version,
                                                shown=request.POST.get("welfare_notice") == "shown")
            except services.RatingError as exc:
                messages.error(request, str(exc))
            else:
                return redirect("rate", study_id=study.id)
    return render(request, "raters/consent.html", {"study": study, "version": version, "status": status})


@login_required
@require_POST
def withdraw(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=[Role.RATER])
    participant = panel_services.participant_for(request.user, study=study)
    if participant is not None and participant.status == ParticipantStatus.ACTIVE:
        # A pool participant who withdraws has stopped early: their place, code and way back to the pool.
        completion = panel_services.panel_withdraw(participant=participant)
        return stopped_page(request, participant, completion)
    policy = services.consent_withdraw(study=study, user=request.user)
    outcome = "deleted" if policy == "delete" else "kept but excluded from the analysis"
    messages.success(request, f"You have withdrawn from “{study.title}”. Your ratings were {outcome}.")
    return redirect("study_list")


# ----------------------------------------------------------------------------- calibration


@login_required
def calibration(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=[Role.RATER])
    status = selectors.rater_status(study=study, user=request.user)
    if request.method == "GET" and (to_outcome := outcome_redirect(request, study, status)) is not None:
        return to_outcome  # a POST answers with its feedback first; "Continue" then leads there
    if not status.consented or status.withdrawn:
        return redirect("rate", study_id=study.id)
    feedback = None
    if request.method == "POST":
        try:
            attempt = services.calibration_attempt_start(study=study, rater=request.user)
            item = get_object_or_404(CalibrationItem, study=study, public_id=request.POST.get("item", ""))
            answers, rationales = answers_from(request.POST)
            answer = services.calibration_answer(attempt=attempt, item=item, answers=answers, rationales=rationales)
            attempt.refresh_from_db()
            feedback = {"item": item, "answer": answer, "attempt": attempt, "rows": [
                {"question": c["question"], "given": answer_text(c, answer.values.get(c["key"])),
                 "reference": answer_text(c, item.references.get(c["key"]))}
                for c in study.rubric() if c["key"] in item.references]}
        except services.RatingError as exc:
            messages.error(request, str(exc))
    status = selectors.rater_status(study=study, user=request.user)
    attempt = None
    item = None
    if status.calibration in ("pending", "in_progress", "retry") and feedback is None:
        try:
            attempt = services.calibration_attempt_start(study=study, rater=request.user)
        except services.RatingError as exc:
            messages.error(request, str(exc))
        else:
            answered = attempt.answers.values_list("item_id", flat=True)
            item = services.calibration_pool(study).exclude(id__in=answered).order_by("id").first()
    return render(
        request,
        "raters/calibration.html",
        {
            "study": study,
            "status": status,
            "attempt": attempt,
            "item": item,
            "feedback": feedback,
            "n_items": services.calibration_pool(study).count(),
            "max_error": study.calibration_max_mae,
            "criteria": rubric_for_display(study),
        },
    )


# ----------------------------------------------------------------------------- rating


def gate(request, study, status):  # consent or calibration first; None: may rate; 404 once they left
    # Whoever may rate is let through without looking up a pool participant (the rating page's hot path):
    # one whose part is over has had their consent closed or failed calibration; one who finished every
    # item while consented sees "all done" with the way to their code.
    if not status.can_rate and (to_outcome := outcome_redirect(request, study, status)) is not None:
        return to_outcome
    if status.withdrawn or status.excluded:
        raise Http404("No such study.")
    if not status.consented:
        return redirect("consent", study_id=study.id)
    if status.calibration in ("pending", "in_progress", "retry"):
        return redirect("calibration", study_id=study.id)
    return None


@login_required
def rate(request, study_id: int):
    study, status, _ = selectors.rater_study(user=request.user, study_id=study_id)
    gate_to = gate(request, study, status)
    if gate_to is not None:
        return gate_to
    context = _item_context(study, request.user, status)
    return render(request, "raters/rate.html", context)


def _item_reads(study, user) -> tuple:
    """The next item and, where the study sets a break or a cap, the rater's welfare state: one round trip."""
    if services.welfare_limits(study).any:
        return selectors.next_item_query(study=study, rater=user), services.rater_state_query(study, user)
    return (selectors.next_item_query(study=study, rater=user),)


def _item_context(study, user, status, read=None):
    """The item fragment's context; `read`: _item_reads' answers where the caller has them."""
    answers = read or run_together(*_item_reads(study, user))
    upcoming, state = answers[0], (answers[1] if len(answers) > 1 else None)
    assignment = upcoming.assignment
    item = None
    if assignment is not None:
        if assignment.gold_item_id:
            gold = assignment.gold_item
            item = {"public_id": gold.public_id, "messages": gold.messages, "text": gold.response_text}
        else:
            response = assignment.response
            item = {"public_id": response.public_id, "messages": response.prompt.messages, "text": response.text}
        item.update(history=item["messages"][:-1], question=item["messages"][-1]["content"])
    comparing = item is None and PairwisePhase.objects.filter(study=study, status="open").exists()
    return {
        "study": study,
        "status": status,
        "item": item,
        "done": upcoming.done, "total": upcoming.total,
        "position": upcoming.done + 1,
        "criteria": rubric_for_display(study),
        "welfare": services.welfare_shown(study, state),
        "categories": UnsafeCategory.choices,
        "comparing": comparing,
        # The 1-10 queue done is not all done while comparisons are open: counted as the code page counts them.
        "pairs_left": (PairAssignment.objects.filter(study=study, rater=user, completed_at__isnull=True).count()
                       if comparing else 0),
    }


@login_required
@require_POST
def rate_submit(request, study_id: int, public_id: str):
    skipping = request.POST.get("action") == "skip"
    # The item is read with the study (one round trip); a skip reads it in its own service.
    item = () if skipping else (services.item_query(study_id=study_id, rater=request.user, item_public_id=public_id),)
    study, status, item_rows = selectors.rater_study(user=request.user, study_id=study_id, also=item)
    is_fetch = request.headers.get("X-Requested-With") == "fetch"
    form = RatingForm(request.POST)
    read = None
    try:
        if skipping:
            services.assignment_skip(study=study, rater=request.user, item_public_id=public_id,
                                     reason=request.POST.get("skip_reason", ""))
        else:
            if not form.is_valid():
                raise services.RatingError(" ".join(e for errs in form.errors.values() for e in errs))
            # The next item is read in the write's round trip (where it is one statement).
            _, read = services.rating_submit_then(
                study=study, rater=request.user, item_public_id=public_id, submission=form.submission(),
                status=status, item=item_rows[0], then=lambda: _item_reads(study, request.user) if is_fetch else ())
    except services.RatingError as exc:
        if is_fetch:
            return HttpResponse(str(exc), status=exc.status, content_type="text/plain; charset=utf-8")
        if exc.status == 404:
            raise Http404(str(exc)) from None
        messages.error(request, str(exc))
        return redirect("rate", study_id=study.id)
    if is_fetch:
        return render(request, "raters/rate_item.html", _item_context(study, request.user, status, read))
    return redirect("rate", study_id=study.id)


# ----------------------------------------------------------------------------- researcher: raters


@login_required
@require_POST
def raters_invite(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    form = InviteForm(request.POST)
    if form.is_valid():
        links = []

        def accept_url(token):
            links.append(request.build_absolute_uri(reverse("invitation_accept", args=[token])))
            return links[-1]

        try:
            invitations = services.invitations_create_from_list(
                study=study, created_by=request.user, role=form.cleaned_data["role"],
                emails_text=form.cleaned_data["emails"], accept_url=accept_url,
            )
        except services.RatingError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Sent {len(invitations)} invitation(s).")
            if settings.EMAIL_BACKEND.endswith(("console.EmailBackend", "locmem.EmailBackend")):
                # No mail server is configured: the researcher sends the links (shown this once).
                messages.warning(request, "E-mail is not configured on this server, so nothing reached the "
                                          "invitees; send each one their link yourself: "
                                          + "  ".join(f"{i.email}: {link}" for i, link in zip(invitations, links,
                                                                                             strict=True)))
    return redirect("raters_page", study_id=study.id)


@login_required
@require_POST
def raters_bulk_codes(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    upload = request.FILES.get("file")
    # A huge upload is answered from its size, never read into memory.
    if upload is None or upload.size > services.CODES_MAX_BYTES:
        messages.error(request, "Choose a CSV file with a 'code' column." if upload is None else
                       f"The file is {upload.size:,} bytes; the limit is {services.CODES_MAX_BYTES:,}.")
        return redirect("raters_page", study_id=study.id)
    result = services.rater_accounts_bulk_create(study=study, data=upload.read())
    if result.errors:
        for error in result.errors:
            messages.error(request, error)
        return redirect("raters_page", study_id=study.id)
    # The passwords exist only in this response: hand them over as a CSV, once.
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["code", "password", "login_url"])
    for code, password in result.accounts:
        writer.writerow([code, password, request.build_absolute_uri(reverse("login"))])
    response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="study-{study.id}-rater-accounts.csv"'
    return response


@login_required
@require_POST
def consent_publish(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    form = ConsentPublishForm(request.POST)
    if form.is_valid():
        version = services.consent_publish(study=study, **form.cleaned_data)
        messages.success(request, f"Consent version {version.version} published; raters must accept it.")
    else:
        messages.error(request, "The consent text and the withdrawal policy are both required.")
    return redirect("raters_page", study_id=study.id)


@login_required
@require_POST
def calibration_item_add(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=[Role.RESEARCHER, Role.ADJUDICATOR])
    form = CalibrationItemForm(request.POST, rubric=study.rubric())
    if form.is_valid():
        form.save_for(study=study, user=request.user)
        messages.success(request, "Calibration item added.")
    else:
        for field, errors in form.errors.items():
            messages.error(request, " ".join(errors) if field == "__all__" else f"{field}: {' '.join(errors)}")
    return redirect("raters_page", study_id=study.id)


@login_required
@require_POST
def calibration_item_remove(request, study_id: int, public_id: str):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    item = get_object_or_404(CalibrationItem, study=study, public_id=public_id)
    try:
        services.calibration_item_remove(study=study, item=item)
    except services.RatingError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Calibration item removed.")
    return redirect("raters_page", study_id=study.id)


@login_required
@require_POST
def rater_decide(request, study_id: int, user_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    membership = get_object_or_404(StudyMembership, study=study, user_id=user_id, role=Role.RATER)
    action = request.POST.get("action")
    try:
        if action == "exclude":
            services.rater_exclude(study=study, rater=membership.user, reason=request.POST.get("reason", ""),
                                   actor=request.user)
        elif action in ("approve", "reject"):
            services.calibration_decide(study=study, rater=membership.user, approve=action == "approve")
        else:
            raise services.RatingError("Unknown action.")
    except services.RatingError as exc:
        messages.error(request, str(exc))
    return redirect("raters_page", study_id=study.id)


@login_required
@require_POST
def open_for_rating(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    if request.POST.get("confirm") != "yes":
        messages.error(request, "Tick the box to confirm: opening freezes the study's design.")
        return redirect("raters_page", study_id=study.id)
    try:
        n = services.study_open_for_rating(study=study)
    except services.RatingError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"The study is open for rating: {n} items assigned.")
    return redirect("raters_page", study_id=study.id)
