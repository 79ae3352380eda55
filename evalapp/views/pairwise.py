"""The researcher's page for a study's pairwise phase: its design (while a draft), gold pairs, open, close."""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from raters import services as rater_services
from raters.access import get_study_for
from raters.models import PairAssignment

from ..errors import ServiceError
from ..models import PairJudgment, PairwisePhase, ResponsePair
from ..pair_rubric import DEFAULT_CRITERIA, PairCriteriaError, as_lines, parse_lines
from .jobs import RESEARCHERS


class PairDesignForm(forms.Form):
    criteria = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}),
                               help_text="One question per line, as key: question. A key that is also a 1-10 "
                                         "criterion's key (e.g. empathy) lets the results compare the two modes.")
    judgments_per_pair = forms.IntegerField(min_value=1, max_value=20, initial=3,
                                            help_text="Raters who judge each pair (fewer if the study has fewer).")
    gold_rate = forms.FloatField(min_value=0, max_value=1, initial=0.1,
                                 help_text="Hidden gold pairs per real pair in a queue (0 for none).")
    reason = forms.ChoiceField(choices=[("optional", "Raters may give a reason"), ("none", "No reason asked")])

    def clean_criteria(self):
        try:
            return parse_lines(self.cleaned_data["criteria"])
        except PairCriteriaError as exc:
            raise forms.ValidationError(str(exc)) from None


class GoldPairForm(forms.Form):
    question = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=5000,
                               help_text="What the user wrote.")
    better_text = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=5000, label="Better response")
    worse_text = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=5000, label="Worse response")
    rationale = forms.CharField(max_length=2000, help_text="Why the better one is better on every question.")


def _page(request, study, form=None, gold_form=None, status=200):
    phase = PairwisePhase.objects.filter(study=study).first()
    if form is None:
        criteria = phase.criteria if phase else list(DEFAULT_CRITERIA)
        form = PairDesignForm(initial={"criteria": as_lines(criteria),
                                       "judgments_per_pair": phase.judgments_per_pair if phase else 3,
                                       "gold_rate": phase.gold_rate if phase else 0.1,
                                       "reason": phase.reason if phase else "optional"})
    progress = PairAssignment.objects.filter(study=study, pair__isnull=False).aggregate(
        assigned=Count("id"), done=Count("id", filter=Q(completed_at__isnull=False)))
    context = {"study": study, "phase": phase, "form": form, "gold_form": gold_form or GoldPairForm(),
               "gold_pairs": study.gold_pairs.all(), "n_pairs": ResponsePair.objects.filter(study=study).count(),
               "n_judgments": PairJudgment.objects.filter(pair__study=study).count(), **progress}
    return render(request, "evalapp/pairwise.html", context, status=status)


@login_required
def pairwise_design(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    if request.method != "POST":
        return _page(request, study)
    form = PairDesignForm(request.POST)
    if not form.is_valid():
        return _page(request, study, form=form, status=400)
    try:
        rater_services.pair_phase_save(study=study, **form.cleaned_data)
    except ServiceError as exc:
        messages.error(request, exc.message)
        return _page(request, study, form=form, status=exc.status)
    messages.success(request, "Pairwise design saved.")
    return redirect("pairwise_design", study_id=study.id)


@login_required
@require_POST
def pairwise_gold_add(request, study_id: int):
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    form = GoldPairForm(request.POST)
    if not form.is_valid():
        return _page(request, study, gold_form=form, status=400)
    data = form.cleaned_data
    try:
        rater_services.gold_pair_add(study=study, user=request.user,
                                     messages=[{"role": "user", "content": data["question"]}],
                                     better_text=data["better_text"], worse_text=data["worse_text"],
                                     rationale=data["rationale"])
    except ServiceError as exc:
        messages.error(request, exc.message)
        return _page(request, study, gold_form=form, status=exc.status)
    messages.success(request, "Gold pair added.")
    return redirect("pairwise_design", study_id=study.id)


@login_required
@require_POST
def pairwise_status(request, study_id: int):
    """Open (write the pairs and queues) or close the phase."""
    study = get_study_for(request.user, study_id, roles=RESEARCHERS)
    try:
        if request.POST.get("action") == "open":
            n = rater_services.pair_phase_open(study=study)
            messages.success(request, f"The pairwise phase is open: {n} pairs, queues written for every eligible rater.")
        elif request.POST.get("action") == "close":
            rater_services.pair_phase_close(study=study)
            messages.success(request, "The pairwise phase is closed.")
        else:
            raise ServiceError("Unknown action.")
    except ServiceError as exc:
        messages.error(request, exc.message)
    return redirect("pairwise_design", study_id=study.id)
