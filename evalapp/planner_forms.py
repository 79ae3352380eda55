"""The planner's form: a plan's inputs as query parameters (a plan is a URL to share), checked as
evalapp.planner.check_request checks the command's."""

from django import forms

from .models import Study
from .planner import (MAX_POINTS, MAX_PROMPTS, MAX_RATERS, MAX_RATERS_PER_RESPONSE, MAX_SIMS, PlanError, PlanRequest,
                      check_request, likert_criteria)
from .stats.planning import Components, PairwiseModel

DEFAULT_SCORES, DEFAULT_PAIRWISE = Components(), PairwiseModel()


def _component(initial: float, help_text: str, minimum: float | None = 0.0) -> forms.FloatField:
    return forms.FloatField(required=False, initial=initial, min_value=minimum, help_text=help_text)


class PlanForm(forms.Form):
    mode = forms.ChoiceField(choices=[("scores", "Scores on each criterion's scale"),
                                      ("pairwise", "Pairwise: which of two responses is better")], initial="scores")
    criteria = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple,
                                         help_text="Scores mode: the criteria to plan (scale criteria only).")
    arm_a = forms.TypedChoiceField(coerce=int, label="Arm A (the reference)")
    arm_b = forms.TypedChoiceField(coerce=int, label="Arm B (compared with A)")
    source = forms.ChoiceField(choices=[("pilot", "The study's own ratings so far (pilot)"),
                                        ("entered", "Values entered below")], initial="pilot")
    mean = _component(DEFAULT_SCORES.mean, "Scores: the mean score of arm A.", minimum=None)
    prompt_sd = _component(DEFAULT_SCORES.prompt_sd, "Scores: sd between prompts.")
    arm_prompt_sd = _component(DEFAULT_SCORES.arm_prompt_sd, "Scores: sd of the prompt x arm interaction.")
    rater_sd = _component(DEFAULT_SCORES.rater_sd, "Scores: sd of raters' severity.")
    residual_sd = _component(DEFAULT_SCORES.residual_sd, "Scores: sd of one rating around its response's mean.")
    nu = _component(DEFAULT_PAIRWISE.nu, "Pairwise: Davidson's tie parameter (0: no ties).")
    pairwise_prompt_sd = _component(DEFAULT_PAIRWISE.prompt_sd, "Pairwise: sd over prompts of the log-strength "
                                    "difference.")
    effect = forms.FloatField(initial=0.5, help_text="The difference to detect, B - A: scale points (scores) or the "
                              "log-strength difference (pairwise).")
    prompts = forms.CharField(initial="20,40,80,160", help_text=f"Numbers of prompts, comma-separated (at most "
                              f"{MAX_POINTS}, each 3 to {MAX_PROMPTS}).")
    raters_per_response = forms.IntegerField(initial=3, min_value=1, max_value=MAX_RATERS_PER_RESPONSE)
    n_raters = forms.IntegerField(initial=10, min_value=1, max_value=MAX_RATERS, label="Raters in the pool",
                                  help_text="Scores: each response's raters are drawn from this many.")
    sims = forms.IntegerField(initial=500, min_value=10, max_value=MAX_SIMS, label="Simulations",
                              help_text=f"Studies simulated at each number of prompts (at most {MAX_SIMS}).")
    seed = forms.IntegerField(initial=1, min_value=0, max_value=2**31 - 1)
    alpha = forms.FloatField(initial=0.05, min_value=0.0001, max_value=0.49, label="Significance level",
                             help_text="With more than two arms, divide by the number of contrasts you will test.")

    SCORE_FIELDS = ("mean", "prompt_sd", "arm_prompt_sd", "rater_sd", "residual_sd")

    def __init__(self, *args, study: Study, **kwargs):
        super().__init__(*args, **kwargs)
        self.study = study
        self.fields["criteria"].choices = [(c["key"], f"{c['question']} ({c['kind']})") for c in study.rubric()]
        self.fields["criteria"].initial = [c["key"] for c in likert_criteria(study)]
        arms = [(a.id, a.label) for a in study.arms.order_by("id")]
        for name, index in (("arm_a", 0), ("arm_b", 1)):
            self.fields[name].choices = arms
            self.fields[name].initial = arms[index][0] if len(arms) > index else None
        self.pilot_problem = False  # the study's pilot fell short: the page offers entered values

    def clean_prompts(self):
        text = self.cleaned_data["prompts"]
        try:
            values = sorted({int(part) for part in text.replace(" ", "").split(",") if part})
        except ValueError:
            raise forms.ValidationError("Give whole numbers of prompts separated by commas, e.g. 20,40,80.") from None
        if not values or len(values) > MAX_POINTS or not all(3 <= n <= MAX_PROMPTS for n in values):
            raise forms.ValidationError(f"Give 1 to {MAX_POINTS} numbers of prompts, each from 3 to {MAX_PROMPTS}.")
        return tuple(values)

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        kinds = {c["key"]: c for c in self.study.rubric()}
        if cleaned["mode"] == "scores":
            refused = [k for k in cleaned["criteria"] if kinds[k]["kind"] != "likert"]
            if refused:
                self.add_error("criteria", f"{', '.join(refused)}: a choice of named options has no mean to "
                                           "compare, so the planner plans scale (likert) criteria only.")
                return cleaned
        try:
            check_request(self.plan_request(cleaned))
        except PlanError as exc:
            raise forms.ValidationError(str(exc)) from None
        return cleaned

    def plan_request(self, cleaned: dict | None = None) -> PlanRequest:
        c = cleaned if cleaned is not None else self.cleaned_data
        entered = {}
        if c["source"] == "entered":
            names = self.SCORE_FIELDS if c["mode"] == "scores" else ("nu", "pairwise_prompt_sd")
            for name in names:
                if c.get(name) is not None:
                    entered["prompt_sd" if name == "pairwise_prompt_sd" else name] = c[name]
        return PlanRequest(mode=c["mode"], criteria=tuple(c["criteria"]) if c["mode"] == "scores" else (),
                           arm_a=c["arm_a"], arm_b=c["arm_b"], source=c["source"], effect=c["effect"],
                           prompts=c["prompts"], raters_per_response=c["raters_per_response"],
                           n_raters=c["n_raters"], sims=c["sims"], seed=c["seed"], alpha=c["alpha"], entered=entered)
