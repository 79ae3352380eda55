"""Participant pools: the public entry link and completion page, and the researcher's panel pages."""

from axes.helpers import get_client_ip_address
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView, redirect_to_login
from django.core.cache import cache
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.db.models import Count
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from evalapp.audit import audit
from evalapp.exports.csv import csv_response
from evalapp.prompt_import import upload_problem

from .access import get_study_for
from .models import Role, StudyMembership
from .panel_import import SUBMISSIONS_MAX_BYTES
from .panel_models import PLACEHOLDERS, PRESET_PARAMS, PanelLink, PanelParticipant, ParticipantStatus
from .services import panel as panel_services
from .services.panel_pay import PAY_HEADER, panel_pay_rows, pay_sheet
from .services.common import RatingError
from .services.welfare_panel import panel_cap_reached, panel_finish_at_cap

RESEARCHERS = [Role.RESEARCHER]
PAY_ACTION = "export.panel_payments"


# The session remembers which pool participant this browser entered as: once they are timed out their
# account no longer signs in, and this is how their way back is recognised (not as a stranger to log in).
PANEL_SESSION_KEY = "panel_participant_id"


class PanelLinkForm(forms.ModelForm):
    class Meta:
        model = PanelLink
        fields = list(panel_services.LINK_FIELDS)
        # The words the panel page and the participants' pages use (the model's names are the pool's).
        labels = {
            "code_completed": "Code for completing", "code_screened_out": "Code for being screened out",
            "code_returned": "Code for stopping early", "code_timed_out": "Code for timing out",
            "redirect_completed": "Redirect after completing",
            "redirect_screened_out": "Redirect after being screened out",
            "redirect_returned": "Redirect after stopping early",
            "idle_minutes": "Idle minutes before timing out", "gap_minutes": "Break length (minutes)",
        }
        help_texts = {
            "label": "Your own name for this link (e.g. \"Prolific pilot\"), shown in the list of links.",
            "id_param": "Custom links only: the query parameter that carries the participant id.",
            "code_timed_out": "Optional: shown to a participant who comes back after timing out. Without one "
                              "they are asked to contact you through the pool.",
            "redirect_completed": "e.g. https://app.prolific.com/submissions/complete?cc={code}",
            "idle_minutes": "No activity for this long: timed out, unfinished items go to others. More than the "
                            "prompted break; the clock stops during a break.",
            "gap_minutes": "An item on screen longer than this counts as a break, not as paid time.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["id_param"].required = False  # a preset names it; panel_link_save checks a custom one

    def add_service_errors(self, errors: dict) -> None:
        for field, msgs in errors.items():
            for msg in msgs:
                self.add_error(field if field in self.fields else None, msg)


# ----------------------------------------------------------------------------- participants


def _too_many_entries(request, slug: str) -> bool:
    """More than PANEL_ENTRIES_PER_MINUTE (default 120) follows of one link from one address this minute:
    a script minting accounts, not a lab room behind one address. django-axes throttles logins only, and
    the client's address is read as axes reads it (behind the deployment's trusted proxies)."""
    limit = getattr(settings, "PANEL_ENTRIES_PER_MINUTE", 120)
    key = f"panel-entry:{slug[:40]}:{get_client_ip_address(request) or 'unknown'}"
    try:
        cache.add(key, 0, timeout=60)
        return cache.incr(key) > limit
    except Exception:  # a cache that does not answer must not turn participants away
        return False


@require_GET
def panel_enter(request, slug: str):
    """/p/<slug>/?PROLIFIC_PID=...: create or resume the participant's pseudonymous account and sign it in."""
    if _too_many_entries(request, slug):
        return render(request, "raters/panel_entry.html",
                      {"error": "Too many requests from your network; wait a minute and open the link again."},
                      status=429)
    try:
        link = panel_services.panel_link_for_slug(slug)
        participant = panel_services.panel_enter(link=link, query=request.GET)
    except RatingError as exc:
        return render(request, "raters/panel_entry.html", {"error": str(exc)}, status=exc.status)
    if request.user.is_authenticated and request.user.id != participant.user_id:
        # The link is the credential: whoever was signed in on this browser is signed out first, so the
        # participant never rates under (or sees the studies of) someone else's account.
        logout(request)
    if participant.status in PARTED:
        return _parted_page(request, participant)
    if not request.user.is_authenticated:
        login(request, participant.user, backend="django.contrib.auth.backends.ModelBackend")
    request.session[PANEL_SESSION_KEY] = participant.id
    if panel_services.panel_outcome(participant)[0] is not None:  # finished, or screened out: their code
        return redirect("panel_done", slug=slug)
    return redirect("rate", study_id=link.study_id)


# Those whose place ended here (timed out, or stopped early): their account no longer signs in, so their way
# back (the link, the code page, the login) is recognised by the session and shown what happened, with the code.
PARTED = (ParticipantStatus.TIMED_OUT, ParticipantStatus.RETURNED)


def _parted_page(request, participant: PanelParticipant):
    # 410: their place is gone; the page still says what happened and gives the code for it.
    if participant.status == ParticipantStatus.RETURNED:
        return stopped_page(request, participant, panel_services.panel_stopped(participant), status=410)
    return render(request, "raters/panel_timed_out.html", {
        "study": participant.study, "timed_out": panel_services.panel_timed_out(participant)}, status=410)


# What a pool participant has once their part is over: the code page is theirs from then on.
OUTCOMES = (ParticipantStatus.COMPLETED, ParticipantStatus.SCREENED_OUT, ParticipantStatus.RETURNED,
            ParticipantStatus.TIMED_OUT)


def outcome_redirect(request, study, status):
    """The way to their code page for a pool participant whose part is over (finished, at a cap included;
    screened out, recorded or not yet; stopped; timed out), or None. The rater pages ask first: their consent
    is closed by then, and the consent form would take an "I agree" and give back the same form."""
    participant = panel_services.participant_for(request.user, study=study)
    if participant is None:
        return None
    if (participant.status in OUTCOMES or status.excluded
            or status.calibration in ("failed", "rejected")):
        return redirect("panel_done", slug=participant.link.slug)
    return None


def stopped_page(request, participant: PanelParticipant, completion, *, status: int = 200):
    """The stopped-early code, signed out (the account no longer signs in), the session still knowing who
    they were so that the code page and the login show it again."""
    if request.user.is_authenticated:
        logout(request)
    request.session[PANEL_SESSION_KEY] = participant.id
    return render(request, "raters/panel_done.html", {"completion": completion, "study": participant.study},
                  status=status)


def parted_in_session(request, slug: str | None = None) -> PanelParticipant | None:
    """The timed-out or stopped pool participant this (signed-out) browser entered as, if any, for that link."""
    if request.user.is_authenticated or PANEL_SESSION_KEY not in request.session:
        return None
    found = PanelParticipant.objects.select_related("link", "study").filter(
        id=request.session[PANEL_SESSION_KEY], status__in=PARTED)
    if slug is not None:
        found = found.filter(link__slug=slug)
    return found.first()


class PanelAwareLoginView(LoginView):
    """The password login, except for a pool participant who timed out or stopped: they have no password, so
    they are sent to the page that says what happened (and gives their code) instead."""

    def get(self, request, *args, **kwargs):
        participant = parted_in_session(request)
        if participant is not None:
            return redirect("panel_done", slug=participant.link.slug)
        return super().get(request, *args, **kwargs)


def _participant_or_404(request, slug: str) -> PanelParticipant:
    link = PanelLink.objects.filter(slug=slug).first()
    participant = panel_services.participant_for(request.user, link) if link else None
    if participant is None:
        raise Http404("No such study.")
    return participant


@require_http_methods(["GET", "POST"])
def panel_done(request, slug: str):
    """The outcome's code and the way back to the pool; a participant still rating is told what is left;
    one who timed out, what happened. Stopping early is asked for (?stop=1), then confirmed (a POST)."""
    if not request.user.is_authenticated:
        participant = parted_in_session(request, slug)
        if participant is not None:
            return _parted_page(request, participant)
        return redirect_to_login(request.get_full_path())
    participant = _participant_or_404(request, slug)
    returning = request.POST.get("action") == "return"
    confirmed = request.method == "POST" and returning and request.POST.get("confirm") == "yes"
    if ((request.GET.get("stop") == "1" or returning) and not confirmed
            and participant.status == ParticipantStatus.ACTIVE and participant.link.code_returned):
        outcome, open_items = panel_services.panel_outcome(participant)
        if outcome is None:  # one who has finished is shown their code below, never asked to stop
            return render(request, "raters/panel_stop.html", {"study": participant.study,
                                                              "participant": participant, "open_items": open_items})
    if confirmed:
        try:
            completion = panel_services.panel_return(participant=participant)
        except RatingError as exc:
            messages.error(request, str(exc))
            return redirect("panel_done", slug=slug)
        return stopped_page(request, participant, completion)
    if participant.status in panel_services.LEFT:
        raise Http404("No such study.")
    try:
        # At a cap nothing more can be rated: the code, as the cap box gives it, never "go on rating".
        completion = (panel_finish_at_cap(participant=participant)
                      or panel_services.panel_complete(participant=participant))
    except RatingError as exc:
        messages.error(request, str(exc))
        return redirect("rate", study_id=participant.study_id)
    participant.refresh_from_db(fields=["status"])
    _, open_items = panel_services.panel_outcome(participant)
    return render(request, "raters/panel_done.html", {
        "completion": completion, "open_items": open_items, "study": participant.study,
        "cap": panel_cap_reached(participant) if completion else None,
        "participant": participant, "can_return": bool(participant.link.code_returned)})


# ----------------------------------------------------------------------------- researchers


@login_required
@require_http_methods(["GET", "POST"])
def panel_page(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    links = list(study.panel_links.all())
    editing = None
    if request.GET.get("link") or request.POST.get("link"):
        editing = get_object_or_404(PanelLink, study=study, id=request.GET.get("link") or request.POST.get("link"))
    form = PanelLinkForm(request.POST or None, instance=editing)
    if request.method == "POST":
        if form.is_valid():
            try:
                link = panel_services.panel_link_save(study=study, actor=request.user, values=form.cleaned_data,
                                                      link=editing)
            except panel_services.LinkInvalid as exc:
                form.add_service_errors(exc.errors)
            except RatingError as exc:
                messages.error(request, str(exc))
            else:
                messages.success(request, "Saved the panel link.")
                return redirect(f"{reverse('panel_page', args=[study.id])}?link={link.id}")
        if form.errors:
            messages.error(request, "Check the link's settings: the problems are shown beside each field.")
    panel_services.panel_release_idle_lazily(study=study)
    participants = list(study.panel_participants.select_related("link", "user").order_by("created_at"))
    seen = panel_services.last_activity(study, participants) if participants else {}
    progress = panel_services.panel_progress(study)
    pseudonyms = dict(StudyMembership.objects.filter(study=study, role=Role.RATER).values_list("user_id", "pseudonym"))
    n_participants = {row["link_id"]: row["n"] for row in
                      study.panel_participants.values("link_id").annotate(n=Count("id"))}
    return render(request, "raters/panel.html", {
        "study": study, "form": form, "editing": editing, "placeholders": PLACEHOLDERS,
        "links": [{"link": link, "url": _entry_url(request, link), "n_participants": n_participants.get(link.id, 0)}
                  for link in links],
        "participants": [{"p": p, "last_seen": seen.get(p.user_id), "progress": progress.get(p.user_id),
                          "pseudonym": pseudonyms.get(p.user_id, "")} for p in participants],
        "status_counts": panel_services.panel_status_counts(participants),
        "statuses": ParticipantStatus.choices, "has_consent": study.consent_versions.exists(),
        "warnings": panel_services.panel_link_warnings(study),
    })


@login_required
@require_POST
def panel_link_change(request, study_id: int, link_id: int):
    """Close a link, open it again, or delete one that no one has entered by."""
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    link = get_object_or_404(PanelLink, study=study, id=link_id)
    action = request.POST.get("action")
    try:
        if action == "delete":
            panel_services.panel_link_delete(link=link, actor=request.user)
            messages.success(request, f"Deleted {link.name}.")
        elif action in ("close", "open"):
            panel_services.panel_link_set_enabled(link=link, actor=request.user, enabled=action == "open")
            messages.success(request, f"{'Opened' if action == 'open' else 'Closed'} {link.name}.")
        else:
            return HttpResponseBadRequest("Say delete, close or open.", content_type="text/plain; charset=utf-8")
    except RatingError as exc:
        messages.error(request, str(exc))
        return redirect("panel_page", study_id=study.id)
    return redirect("panel_page", study_id=study.id)


def _entry_url(request, link: PanelLink) -> str:
    base = request.build_absolute_uri(reverse("panel_enter", args=[link.slug]))
    if link.preset == "prolific":
        return base + "?PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"
    if link.preset == "sona":
        return base + "?id=%SURVEY_CODE%"
    params = PRESET_PARAMS.get(link.preset) or (link.id_param, link.study_param, link.session_param,
                                                link.assignment_param)
    return base + "?" + "&".join(f"{p}=…" for p in params if p)


@login_required
@require_http_methods(["GET", "POST"])
def panel_reconcile(request, study_id: int):
    """Upload the pool's submissions file: all rows applied or none, with the two lists side by side."""
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    links = list(study.panel_links.all())
    report = None
    status = 200
    if request.method == "POST":
        link = next((lk for lk in links if str(lk.id) == request.POST.get("link", str(links[0].id) if links else "")),
                    None)
        upload = request.FILES.get("file")
        problem = ("Create a panel link first." if link is None else "Choose the pool's submissions CSV."
                   if upload is None else upload_problem(upload, max_bytes=SUBMISSIONS_MAX_BYTES))
        if problem:
            messages.error(request, f"The file {problem}." if upload is not None and link is not None else problem)
            status = 400
        else:
            report = panel_services.panel_submissions_import(link=link, data=upload.read(), actor=request.user)
            status = 400 if report.errors else 200
    panel_services.panel_release_idle_lazily(study=study)
    participants = study.panel_participants.select_related("link").order_by("participant_id")
    return render(request, "raters/panel_reconcile.html",
                  {"study": study, "links": links, "report": report, "participants": participants}, status=status)


def _number(request, name: str, *, required: bool) -> float | None:
    raw = request.GET.get(name, "").strip()
    if not raw:
        if required:
            raise ValueError(f"Give {name}.")
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number.") from None
    if not 0 <= value <= 100_000:
        raise ValueError(f"{name} must be between 0 and 100000.")
    return value


# active_seconds: the seconds each item was on screen, summed over items of at most break_over_seconds; a
# longer item is left out whole (items_left_out_as_breaks). The columns and their time basis: PAY_HEADER and
# TIME_BASIS in raters.services.panel_pay.
@login_required
@require_GET
def panel_payments(request, study_id: int):
    """The payment sheet: ?rate= (per hour of active time), &minimum= (the wage to check), &bonus= (gold
    accuracy from 0 to 1). How active time is counted: the panel page, and the columns named for each part."""
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    try:
        rate = _number(request, "rate", required=True)
        minimum = _number(request, "minimum", required=False)
        bonus = _number(request, "bonus", required=False)
        if bonus is not None and bonus > 1:
            raise ValueError("bonus is a gold accuracy between 0 and 1.")
    except ValueError as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    rows = panel_pay_rows(study=study, hourly_rate=rate, minimum_wage=minimum, bonus_accuracy=bonus)
    audit(study=study, actor=request.user, action=PAY_ACTION, obj=study,
          after={"file": "panel-payments.csv", "rate": rate, "minimum": minimum, "bonus": bonus})
    body = pay_sheet(rows, hourly_rate=rate, minimum_wage=minimum, bonus_accuracy=bonus)
    return csv_response(PAY_HEADER, body, f"study-{study.id}-panel-payments.csv")
