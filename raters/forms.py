from django import forms

from evalapp.models import UnsafeCategory
from evalapp.rubric import NOT_SURE_KEY, RubricError, parse_answer

from .models import CalibrationItem, Role, WithdrawalPolicy


class InviteForm(forms.Form):
    emails = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), help_text="One or more addresses.")
    role = forms.ChoiceField(choices=[(Role.RATER, "Rater"), (Role.ADJUDICATOR, "Adjudicator")])


class ResearcherGrantForm(forms.Form):
    email = forms.EmailField(help_text="An existing account with this address gets the role; otherwise one is created.")


class ConsentPublishForm(forms.Form):
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 6}))
    withdrawal_policy = forms.ChoiceField(
        choices=WithdrawalPolicy.choices, help_text="What happens to a rater's ratings if they withdraw; shown to them."
    )


class RatingForm(forms.Form):
    """The fields every rating has; the rubric's answers come as score-<key> and rationale-<key>.

    The posted `seconds` (rate.js) is no field of the form: it is not the rater's answer, so nothing in it
    may make the rating invalid. It goes as sent to the service, which reads and bounds it (raters.timing)."""

    unsafe = forms.BooleanField(required=False)
    unsafe_category = forms.ChoiceField(choices=[("", "—"), *UnsafeCategory.choices], required=False)
    comment = forms.CharField(required=False, max_length=2000)

    def submission(self):
        from .services import Submission

        data = self.cleaned_data
        answers, rationales = answers_from(self.data)
        return Submission(
            answers=answers,
            rationales=rationales,
            unsafe=data["unsafe"],
            unsafe_category=data["unsafe_category"] or "",
            comment=data["comment"] or "",
            seconds_on_item=self.data.get("seconds"),
        )


def answers_from(data) -> tuple[dict, dict]:
    """({key: answer}, {key: rationale}) from a posted rating form."""
    answers = {name[len("score-"):]: value for name, value in data.items() if name.startswith("score-")}
    rationales = {name[len("rationale-"):]: value for name, value in data.items() if name.startswith("rationale-")}
    return answers, rationales


class CalibrationItemForm(forms.ModelForm):
    """A calibration item with a reference answer to each criterion (posted as score-<key>)."""

    question = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), help_text="The user's message.")

    class Meta:
        model = CalibrationItem
        fields = ["response_text", "rationale", "use_as_gold"]
        widgets = {"response_text": forms.Textarea(attrs={"rows": 4}), "rationale": forms.Textarea(attrs={"rows": 2})}

    def __init__(self, *args, rubric: list[dict] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.rubric = rubric or []

    def clean(self):
        data = super().clean()
        references = {}
        for criterion in self.rubric:
            raw = self.data.get(f"score-{criterion['key']}", "")
            if raw == NOT_SURE_KEY:
                self.add_error(None, f"{criterion['question']}: a reference answer can't be \"not sure\".")
                continue
            try:
                # The reference's own rationale is the item's; per-criterion reasons are not asked.
                value, _, _ = parse_answer({**criterion, "rationale": "none"}, raw)
            except RubricError as exc:
                self.add_error(None, f"Reference: {exc}")
            else:
                references[criterion["key"]] = value
        data["references"] = references
        return data

    def save_for(self, *, study, user) -> CalibrationItem:
        item = self.save(commit=False)
        item.study = study
        item.created_by = user
        item.messages = [{"role": "user", "content": self.cleaned_data["question"].strip()}]
        item.references = self.cleaned_data["references"]
        item.save()
        return item
