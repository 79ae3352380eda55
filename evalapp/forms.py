from django import forms
from django.conf import settings

from .models import Study
from .services import design_frozen_message


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
        fields = ["title", "description", "ratings_per_response", "disagreement_rule", "disagreement_threshold",
                  "disagreement_sd", "score_policy"]
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}
        help_texts = StudySettingsForm.Meta.help_texts

    # The database's CheckConstraint would refuse 0 too, but only with the constraint's name.
    ratings_per_response = forms.IntegerField(min_value=1, initial=3,
                                              help_text="Ratings each response gets from different raters.")
