from django import forms
from django.conf import settings

import json

from raters.models import WithdrawalPolicy

from .models import Study
from .prompt_import import upload_problem
from .rubric import RubricError, validate
from .rubric_presets import DEFAULT_PRESET, PRESETS
from .services import design_frozen_message

PRESET_CHOICES = [(key, p["name"]) for key, p in PRESETS.items()]


class PromptImportForm(forms.Form):
    file = forms.FileField(
        help_text=(
            f"CSV (id,text[,topic,split,reference,source]), JSONL (generic, chat messages, transcripts or "
            f"CounselChat questions) or a .txt of &lt;USER&gt;/&lt;AI&gt; transcripts. At most "
            f"{settings.PROMPT_IMPORT_MAX_BYTES // (1024 * 1024)} MB, {settings.PROMPT_MAX_CHARS:,} characters a message."
        )
    )
    split = forms.CharField(required=False, max_length=50, help_text="Import only prompts of this split, e.g. test.")
    sample = forms.IntegerField(required=False, min_value=1, help_text="Import a random sample of this many prompts.")
    seed = forms.IntegerField(required=False, initial=0, help_text="Seed for the sample, recorded so it can be redrawn.")
    redact = forms.BooleanField(required=False, help_text="Replace e-mail addresses, phone numbers and URLs.")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        problem = upload_problem(upload, max_bytes=settings.PROMPT_IMPORT_MAX_BYTES)
        if problem:
            raise forms.ValidationError(f"The file {problem}.")
        return upload


class StudySettingsForm(forms.ModelForm):
    class Meta:
        from .models import Study

        model = Study
        fields = ["title", "description", "ratings_per_response", "calibration_max_mae", "gold_rate",
                  "disagreement_rule", "disagreement_threshold", "disagreement_sd", "safety_two_adjudicators",
                  "score_policy"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}
        help_texts = {
            "ratings_per_response": "Ratings each response gets; fixed once the study opens for rating.",
            "disagreement_threshold": "Range of scores (points) that sends an item to adjudication.",
            "disagreement_sd": "Standard deviation that sends an item to adjudication (SD rule).",
            "score_policy": "Which score the analysis uses per item; the export says which.",
        }


    def clean(self):
        cleaned = super().clean()
        changed = [name for name in self.changed_data if name in Study.DESIGN_FIELDS]
        if changed and self.instance.status != Study.Status.DRAFT:
            labels = ", ".join(str(self.fields[name].label) for name in changed)
            raise forms.ValidationError(design_frozen_message(f"changing {labels}"))
        return cleaned


class StudyCreateForm(forms.ModelForm):
    """What a researcher decides before anything else exists; the rest is on the study's settings page."""

    class Meta:
        from .models import Study

        model = Study
        # The range threshold and calibration limit come with the preset (its scale's width);
        # the study's settings change them.
        fields = ["title", "description", "ratings_per_response", "disagreement_rule", "disagreement_sd",
                  "score_policy"]
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}
        help_texts = StudySettingsForm.Meta.help_texts

    # The database's CheckConstraint would refuse 0 too, but only with the constraint's name.
    ratings_per_response = forms.IntegerField(min_value=1, initial=3,
                                              help_text="Ratings each response gets from different raters.")
    preset = forms.ChoiceField(choices=PRESET_CHOICES, initial=DEFAULT_PRESET, label="Rubric", required=False,
                               help_text="A published protocol to start from; edit its criteria on the study's "
                                         "page before opening. Its recommended thresholds are used unless you "
                                         "change them there.")
    consent_text = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}),
                                   help_text="Optional now: raters can't start until a consent text is published.")
    withdrawal_policy = forms.ChoiceField(choices=[("", "—"), *WithdrawalPolicy.choices], required=False,
                                          help_text="What happens to a rater's ratings if they withdraw.")

    def clean(self):
        data = super().clean()
        data["preset"] = data.get("preset") or DEFAULT_PRESET
        if (data.get("consent_text") or "").strip() and not data.get("withdrawal_policy"):
            self.add_error("withdrawal_policy", "Say what happens to a rater's ratings if they withdraw.")
        return data


class RubricForm(forms.Form):
    """The rubric as JSON (evalapp.rubric describes a criterion), or a preset to replace it with."""

    preset = forms.ChoiceField(choices=[("", "— keep editing the criteria below —"), *PRESET_CHOICES], required=False,
                               label="Replace with a preset")
    criteria = forms.CharField(widget=forms.Textarea(attrs={"rows": 14, "spellcheck": "false", "class": "code"}),
                               required=False, label="Criteria (JSON)")

    def clean(self):
        data = super().clean()
        if data.get("preset"):
            data["parsed"] = PRESETS[data["preset"]]["criteria"]
            return data
        try:
            parsed = json.loads(data.get("criteria") or "")
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"The criteria are not valid JSON: {exc.msg} at line {exc.lineno}, "
                                        f"column {exc.colno}.") from None
        try:
            data["parsed"] = validate(parsed)
        except RubricError as exc:
            raise forms.ValidationError(str(exc)) from None
        return data
