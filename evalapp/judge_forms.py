"""The forms of the judges page: add a judge, start a run.

A judge's model is picked from lists the site builds (``allowed_local_models`` for a local judge, the
names in JUDGE_ENDPOINTS for an endpoint), never typed: a request can name nothing else to load or call.
The service checks the same lists again; the form only keeps a typo from reaching it.
"""

from django import forms

from modelserver.judge_models import JudgeKind, JudgeMode
from modelserver.judge_services import allowed_local_models, endpoint_names


class JudgeForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Unique in the study, e.g. “qwen-7b, t=0”.")
    kind = forms.ChoiceField(choices=JudgeKind.choices, initial=JudgeKind.LOCAL, widget=forms.RadioSelect)
    local_model = forms.ChoiceField(required=False, label="Local model",
                                    help_text="The bundled model, the study's base models, or one an operator "
                                              "added to JUDGE_LOCAL_MODELS.")
    endpoint = forms.ChoiceField(required=False, label="Endpoint",
                                 help_text="An OpenAI-compatible endpoint an operator named in JUDGE_ENDPOINTS.")
    safety = forms.BooleanField(required=False, initial=True, label="Also ask whether each response is unsafe")
    samples = forms.IntegerField(min_value=1, max_value=20, initial=1,
                                 help_text="Answers per item: more than 1 only for an endpoint at a temperature "
                                           "above 0.")
    temperature = forms.FloatField(min_value=0, max_value=2, initial=0.0,
                                   help_text="0 for a local judge (it reads probabilities, the same every time).")
    batch_size = forms.IntegerField(min_value=1, max_value=256, initial=8)
    seed = forms.IntegerField(min_value=0, max_value=2**62, initial=0)

    def __init__(self, *args, study, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["local_model"].choices = [(m, m) for m in allowed_local_models(study)]
        endpoints = endpoint_names()
        self.fields["endpoint"].choices = [(e, e) for e in endpoints]
        if not endpoints:
            self.fields["endpoint"].help_text = "None configured: an operator names endpoints in JUDGE_ENDPOINTS."

    def clean(self):
        data = super().clean()
        field = "local_model" if data.get("kind") == JudgeKind.LOCAL else "endpoint"
        if data.get("kind") and not data.get(field) and field not in self.errors:
            self.add_error(field, "Pick one." if self.fields[field].choices else "None to pick from.")
        return data

    def judge_kwargs(self) -> dict:
        """judge_create's arguments."""
        data = self.cleaned_data
        model = data["local_model"] if data["kind"] == JudgeKind.LOCAL else data["endpoint"]
        return {"name": data["name"], "kind": data["kind"], "model": model, "safety": data["safety"],
                "samples": data["samples"], "temperature": data["temperature"], "batch_size": data["batch_size"],
                "seed": data["seed"]}


class JudgeRunForm(forms.Form):
    mode = forms.ChoiceField(choices=JudgeMode.choices)
