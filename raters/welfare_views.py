"""Rater welfare pages: the researcher's settings and distress reports, the support page, the distress
skip and the break's "continue" on the rater's pages (which stay blind: no arm, no judge output)."""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from . import pair_views, selectors, services
from . import views as rating_views
from . import welfare as rules
from .access import get_study_for
from .models import Role
from .panel_models import PanelParticipant
from .services.welfare import EDITABLE
from .services.welfare_panel import panel_cap_finish

RESEARCHERS = [Role.RESEARCHER]


class WelfareForm(forms.Form):
    topics = forms.MultipleChoiceField(choices=list(rules.PRESET_TOPICS.items()), required=False,
                                       widget=forms.CheckboxSelectMultiple, label="Content topics")
    other_topics = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False,
                                   label="Other topics (one a line)")
    notice = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), label="Content notice (before consent)")
    break_every_items = forms.IntegerField(min_value=0, max_value=10000, label="Break every N items (0: off)")
    break_every_minutes = forms.IntegerField(min_value=0, max_value=1440, label="Break every M minutes (0: off)")
    cap_per_day = forms.IntegerField(min_value=0, max_value=100000, label="Items per day at most (0: no cap)")
    cap_per_session = forms.IntegerField(min_value=0, max_value=100000,
                                         label="Items per session at most (0: no cap)")
    crisis_text = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), label="Crisis resources text")
    crisis_links = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "wrap": "off"}), required=False,
                                   label="Crisis links, one a line: label | https://… or tel:…")
    flag_min_reports = forms.IntegerField(min_value=0, max_value=10000,
                                          label="Flag an item when at least this many raters found it distressing "
                                                "(0: no minimum)")
    flag_min_percent = forms.IntegerField(min_value=0, max_value=100,
                                          label="… and at least this % of the raters who read it (0: no minimum; "
                                                "both 0: no flags)")

    def clean_crisis_links(self):
        try:
            return rules.parse_links(self.cleaned_data["crisis_links"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


def _initial(settings) -> dict:
    return {**{name: getattr(settings, name) for name in EDITABLE},
            "crisis_links": rules.links_text(settings.crisis_links)}


@login_required
def welfare_page(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    settings = services.welfare_settings(study)
    form = WelfareForm(initial=_initial(settings))
    if request.method == "POST":
        form = WelfareForm(request.POST)
        if form.is_valid():
            try:
                services.welfare_save(study=study, actor=request.user, **form.cleaned_data)
            except services.RatingError as exc:
                messages.error(request, str(exc))
            else:
                messages.success(request, "Welfare settings saved; raters see them from their next page.")
                return redirect("welfare_page", study_id=study.id)
    return render(request, "raters/welfare.html", {
        "study": study, "form": form, "summary": services.distress_summary(study),
        "report": services.welfare_report(study),
        "session_gap": int(rules.SESSION_GAP.total_seconds() // 60), "rest": int(rules.REST.total_seconds() // 60),
        "time_zone": timezone.get_current_timezone_name(),
    }, status=400 if form.errors else 200)


@login_required
def support(request, study_id: int):
    study = get_study_for(request.user, study_id)
    return render(request, "raters/support.html", {"study": study})


def _distress(request, study_id: int, public_id: str, pairwise: bool):
    study = get_study_for(request.user, study_id, roles=[Role.RATER])
    phase = pair_views._phase_for_rater(study) if pairwise else None
    status = selectors.rater_status(study=study, user=request.user)
    page = "compare" if pairwise else "rate"
    is_fetch = request.headers.get("X-Requested-With") == "fetch"
    try:
        services.distress_report(study=study, rater=request.user, item_public_id=public_id,
                                 topic=request.POST.get("distress_topic", ""), pairwise=pairwise)
    except services.RatingError as exc:
        if is_fetch:
            return HttpResponse(str(exc), status=exc.status, content_type="text/plain; charset=utf-8")
        if exc.status == 404:
            raise Http404(str(exc)) from None
        messages.error(request, str(exc))
        return redirect(page, study_id=study.id)
    if is_fetch:
        if pairwise:
            return render(request, "raters/compare_item.html", pair_views._item_context(study, request.user, phase))
        return render(request, "raters/rate_item.html", rating_views._item_context(study, request.user, status))
    messages.success(request, "Skipped. Thank you for telling us; take a break if you need one.")
    return redirect(page, study_id=study.id)


@login_required
@require_POST
def rate_distress(request, study_id: int, public_id: str):
    return _distress(request, study_id, public_id, pairwise=False)


@login_required
@require_POST
def compare_distress(request, study_id: int, public_id: str):
    return _distress(request, study_id, public_id, pairwise=True)


@login_required
@require_POST
def welfare_break(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=[Role.RATER])
    status = selectors.rater_status(study=study, user=request.user)
    if status.withdrawn or status.excluded:
        raise Http404("No such study.")
    services.break_taken(study=study, rater=request.user)
    return redirect("compare" if request.POST.get("page") == "compare" else "rate", study_id=study.id)


@login_required
@require_POST
def welfare_cap_finish(request, study_id: int):
    """A pool participant at a cap: finished, paid for what they did, sent to their completion code."""
    study = get_study_for(request.user, study_id, roles=[Role.RATER])
    status = selectors.rater_status(study=study, user=request.user)
    if status.withdrawn or status.excluded:  # as the break: an excluded rater rates no more, so reaches no cap
        raise Http404("No such study.")
    try:
        completion = panel_cap_finish(study=study, rater=request.user)
    except services.RatingError as exc:
        messages.error(request, str(exc))
        return redirect("rate", study_id=study.id)
    slug = PanelParticipant.objects.filter(user=request.user, study=study).values_list("link__slug", flat=True).first()
    messages.success(request, f"Thank you. Your completion code is {completion.code}.")
    return redirect("panel_done", slug=slug)
