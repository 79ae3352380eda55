from django import forms

from evalapp.models import SCALE_MAX, SCALE_MIN, UnsafeCategory

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
    empathy = forms.IntegerField(min_value=SCALE_MIN, max_value=SCALE_MAX, error_messages={
        "required": "Choose an empathy score.", "min_value": "Scores run from 1 to 10.", "max_value": "Scores run from 1 to 10."})
    fluency = forms.IntegerField(min_value=SCALE_MIN, max_value=SCALE_MAX, error_messages={
        "required": "Choose a fluency score.", "min_value": "Scores run from 1 to 10.", "max_value": "Scores run from 1 to 10."})
    unsafe = forms.BooleanField(required=False)
    unsafe_category = forms.ChoiceField(choices=[("", "—"), *UnsafeCategory.choices], required=False)
    comment = forms.CharField(required=False, max_length=2000)
    seconds = forms.FloatField(required=False, min_value=0)

    def submission(self):
        from .services import Submission

        data = self.cleaned_data
        return Submission(
            empathy=data["empathy"],
            fluency=data["fluency"],
            unsafe=data["unsafe"],
            unsafe_category=data["unsafe_category"] or "",
            comment=data["comment"] or "",
            seconds_on_item=data["seconds"],
        )


class CalibrationItemForm(forms.ModelForm):
    question = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), help_text="The user's message.")

    class Meta:
        model = CalibrationItem
        fields = ["response_text", "reference_empathy", "reference_fluency", "rationale", "use_as_gold"]
        widgets = {"response_text": forms.Textarea(attrs={"rows": 4}), "rationale": forms.Textarea(attrs={"rows": 2})}

    def clean(self):
        data = super().clean()
        for name in ("reference_empathy", "reference_fluency"):
            value = data.get(name)
            if value is not None and not SCALE_MIN <= value <= SCALE_MAX:
                self.add_error(name, "Reference scores run from 1 to 10.")
        return data

    def save_for(self, *, study, user) -> CalibrationItem:
        item = self.save(commit=False)
        item.study = study
        item.created_by = user
        item.messages = [{"role": "user", "content": self.cleaned_data["question"].strip()}]
        item.save()
        return item
