from django import forms

from evalapp.errors import ServiceError
from evalapp.models import Arm


class ArmForm(forms.ModelForm):
    max_new_tokens = forms.IntegerField(min_value=1, max_value=2048, initial=256)
    temperature = forms.FloatField(min_value=0.0, max_value=5.0, initial=0.7, help_text="0 means greedy decoding.")
    top_p = forms.FloatField(min_value=0.01, max_value=1.0, initial=0.9)
    repetition_penalty = forms.FloatField(min_value=1.0, max_value=5.0, initial=1.1)

    class Meta:
        model = Arm
        fields = ["label", "base_model", "adapter", "system_prompt"]
        widgets = {"system_prompt": forms.Textarea(attrs={"rows": 2})}
        help_texts = {
            "base_model": "“bundled” (SmolLM2-135M-Instruct) or a local Hugging Face model directory.",
            "adapter": "A LoRA adapter directory (peft); leave empty for the base model.",
            "system_prompt": "Empty: the documented neutral default. Keep it the same in every arm to compare models; arms that "
                             "differ only here (a prompt-engineered baseline) compare prompts.",
        }

    registered_adapter = forms.ModelChoiceField(queryset=None, required=False,
                                                help_text="Or pick an adapter you trained here.")
    field_order = ["label", "base_model", "registered_adapter", "adapter"]

    def __init__(self, *args, study=None, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        from modelserver.models import Adapter

        self.study = study
        self.fields["registered_adapter"].queryset = Adapter.objects.filter(created_by=user) if user else Adapter.objects.none()

    def clean_label(self):
        label = self.cleaned_data["label"].strip()
        if self.study and self.study.arms.filter(label=label).exists():
            raise forms.ValidationError("This study already has an arm with that label.")
        return label

    def clean_adapter(self):
        from modelserver.inference.errors import ModelLoadError
        from modelserver.inference.paths import check_adapter_dir
        from modelserver.services import resolve_adapter_path
        from modelserver.training_services import check_adapter_for_study

        adapter = self.cleaned_data["adapter"].strip()
        registered = self.cleaned_data.get("registered_adapter")
        if registered is not None:
            adapter = registered.path
        if adapter:
            try:
                check_adapter_dir(resolve_adapter_path(adapter))
                if self.study is not None:
                    check_adapter_for_study(resolve_adapter_path(adapter), self.study)
            except (ModelLoadError, ServiceError) as exc:
                raise forms.ValidationError(str(exc)) from None
        return adapter

    def generation_params(self) -> dict:
        data = self.cleaned_data
        return {
            "max_new_tokens": data["max_new_tokens"],
            "temperature": data["temperature"],
            "top_p": data["top_p"],
            "repetition_penalty": data["repetition_penalty"],
            "do_sample": data["temperature"] > 0,
        }


class GenerationRunForm(forms.Form):
    samples_per_prompt = forms.IntegerField(min_value=1, max_value=20, initial=1)
    seed = forms.IntegerField(initial=0, min_value=0, max_value=2**62)
    batch_size = forms.IntegerField(min_value=1, max_value=256, initial=16)


class RegenerateTruncatedForm(forms.Form):
    # The upper bound is the service's (modelserver.truncation.MAX_NEW_TOKENS_CAP), with its own message.
    max_new_tokens = forms.IntegerField(min_value=1)


class PlaygroundForm(forms.Form):
    conversation = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 8}),
        help_text="One turn per paragraph, starting “User:” or “Assistant:”; end with a user turn.",
    )
    seed = forms.IntegerField(initial=0, min_value=0, max_value=2**62)

    def clean_conversation(self):
        from evalapp.models import validate_messages

        messages = []
        for block in self.cleaned_data["conversation"].replace("\r\n", "\n").split("\n\n"):
            block = block.strip()
            if not block:
                continue
            head, _, rest = block.partition(":")
            role = {"user": "user", "assistant": "assistant"}.get(head.strip().lower())
            if role is None or not rest.strip():
                if not messages:
                    role, rest = "user", block  # a bare question is one user turn
                else:
                    raise forms.ValidationError(f"Start each turn with “User:” or “Assistant:” (at “{block[:40]}”).")
            messages.append({"role": role, "content": rest.strip()})
        validate_messages(messages)
        return messages


class TrainingForm(forms.Form):
    name = forms.CharField(max_length=200, initial="counselchat-lora")
    max_steps = forms.IntegerField(min_value=1, max_value=100000, initial=50)
    rank = forms.IntegerField(min_value=1, max_value=256, initial=8)
    alpha = forms.FloatField(min_value=0.1, initial=16)
    learning_rate = forms.FloatField(min_value=1e-7, max_value=1, initial=2e-4)
    batch_size = forms.IntegerField(min_value=1, max_value=256, initial=4)
    max_length = forms.IntegerField(min_value=16, max_value=8192, initial=256)
    eval_every = forms.IntegerField(min_value=0, initial=25, help_text="Validation loss every N steps (0: never).")
    seed = forms.IntegerField(min_value=0, initial=0)
