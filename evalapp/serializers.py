from django.conf import settings
from rest_framework import serializers

from evalapp.models import Adjudication, Arm, Prompt, Study
from evalapp.prompt_import import upload_problem
from evalapp.rubric_presets import PRESETS
from raters.models import WithdrawalPolicy
from modelserver.models import GenerationRun, Judge, JudgeRun


class StudySerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.get_username", read_only=True)
    rubric = serializers.SerializerMethodField()

    class Meta:
        model = Study
        fields = ["id", "title", "description", "owner", "status", "rubric_preset", "rubric", "ratings_per_response",
                  "disagreement_rule", "disagreement_threshold", "disagreement_sd", "calibration_max_mae",
                  "score_policy", "created_at", "updated_at"]
        read_only_fields = fields

    def get_rubric(self, study) -> list[dict]:
        return study.rubric()


class StudyCreateSerializer(serializers.ModelSerializer):
    """The design a researcher sets when creating a study (the owner is whoever creates it).

    `rubric` is a list of criteria (evalapp.rubric describes them); without it the `preset`'s
    (default "empatheval"). `consent_text` with `withdrawal_policy` publishes consent version 1.
    """

    preset = serializers.ChoiceField(choices=list(PRESETS), required=False)
    rubric = serializers.ListField(child=serializers.DictField(), required=False, allow_empty=False)
    consent_text = serializers.CharField(required=False, allow_blank=True, max_length=20000)
    withdrawal_policy = serializers.ChoiceField(choices=WithdrawalPolicy.choices, required=False)

    class Meta:
        model = Study
        fields = ["title", "description", "preset", "rubric", "ratings_per_response", "disagreement_rule",
                  "disagreement_threshold", "disagreement_sd", "calibration_max_mae", "score_policy",
                  "consent_text", "withdrawal_policy"]
        # The database's CheckConstraint would refuse 0 too, but only with the constraint's name.
        extra_kwargs = {"ratings_per_response": {"min_value": 1}}


class PromptSerializer(serializers.ModelSerializer):
    class Meta:
        model = Prompt
        fields = ["id", "external_id", "messages", "topic", "source", "split", "reference", "created_at"]
        read_only_fields = fields


class PromptImportSerializer(serializers.Serializer):
    file = serializers.FileField()
    split = serializers.CharField(required=False, allow_blank=True, max_length=50)
    sample = serializers.IntegerField(required=False, min_value=1)
    seed = serializers.IntegerField(required=False, default=0)
    redact = serializers.BooleanField(required=False, default=False)

    def validate_file(self, upload):
        problem = upload_problem(upload, max_bytes=settings.PROMPT_IMPORT_MAX_BYTES)
        if problem:
            raise serializers.ValidationError(f"The file {problem}.")
        return upload


class ImportProblemSerializer(serializers.Serializer):
    row = serializers.IntegerField()
    field = serializers.CharField()
    reason = serializers.CharField()


class ImportReportSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    summary = serializers.CharField()
    format = serializers.CharField()
    rows_in_file = serializers.IntegerField()
    selected = serializers.IntegerField()
    created = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    errors = ImportProblemSerializer(many=True)
    warnings = ImportProblemSerializer(many=True)


class ArmSerializer(serializers.ModelSerializer):
    class Meta:
        model = Arm
        fields = ["id", "label", "blind_code", "base_model", "adapter", "system_prompt", "generation_params"]
        read_only_fields = fields


class GenerationRunSerializer(serializers.ModelSerializer):
    arms = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta:
        model = GenerationRun
        fields = ["id", "status", "arms", "samples_per_prompt", "seed", "batch_size", "total", "done", "error",
                  "attempts", "created_at", "started_at", "finished_at"]
        read_only_fields = fields


class JudgeRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = JudgeRun
        fields = ["id", "mode", "status", "total", "done", "error", "attempts", "created_at", "started_at",
                  "finished_at"]
        read_only_fields = fields


class JudgeSerializer(serializers.ModelSerializer):
    """A judge's configuration, how many answers it has written, and its runs (newest first). The answers
    themselves are not here: they are the validation's input, never ratings."""

    n_answers = serializers.IntegerField(read_only=True)
    runs = JudgeRunSerializer(many=True, read_only=True)

    class Meta:
        model = Judge
        fields = ["id", "name", "kind", "model", "templates", "safety", "samples", "temperature", "batch_size", "seed",
                  "created_at", "n_answers", "runs"]
        read_only_fields = fields


class GenerationStartSerializer(serializers.Serializer):
    samples_per_prompt = serializers.IntegerField(min_value=1, max_value=20, default=1)
    seed = serializers.IntegerField(min_value=0, default=0)
    batch_size = serializers.IntegerField(min_value=1, max_value=256, default=16)


class RaterItemSerializer(serializers.Serializer):
    """What a rater may see of an item: no arm, model or sequential id."""

    public_id = serializers.CharField()
    messages = serializers.ListField(child=serializers.DictField())
    text = serializers.CharField()
    done = serializers.IntegerField()
    total = serializers.IntegerField()
    # The questions to answer (evalapp.rubric criteria): what `answers` in the submission must cover.
    criteria = serializers.ListField(child=serializers.DictField())


class RubricSerializer(serializers.Serializer):
    criteria = serializers.ListField(child=serializers.DictField(), allow_empty=False)


class RatingSubmitSerializer(serializers.Serializer):
    """`answers`: {criterion key: answer} (a whole number for a likert scale, the option key for a
    choice, "not_sure" where offered); `rationales`: {criterion key: text}; `seconds_on_item`: the
    client's measure of the seconds on screen, recorded no larger than the time the server saw since the
    rater's last action, and that observed time when it is missing or not a finite number >= 0 (the timing
    never refuses a rating: raters.timing)."""

    answers = serializers.DictField(child=serializers.JSONField())
    rationales = serializers.DictField(child=serializers.CharField(allow_blank=True, max_length=2000), required=False,
                                       default=dict)
    unsafe = serializers.BooleanField(default=False)
    unsafe_category = serializers.CharField(required=False, allow_blank=True, default="")
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
    seconds_on_item = serializers.JSONField(required=False, allow_null=True, default=None)


class AdjudicationSerializer(serializers.ModelSerializer):
    response = serializers.CharField(source="response.public_id", read_only=True)
    adjudicator = serializers.SerializerMethodField()

    class Meta:
        model = Adjudication
        fields = ["id", "response", "scale", "action", "final_score", "rationale", "adjudicator", "created_at"]
        read_only_fields = fields

    def get_adjudicator(self, adjudication) -> str:
        # The study's pseudonym (AdjudicationList annotates it): an account name may be an e-mail address.
        return getattr(adjudication, "adjudicator_pseudonym", None) or adjudication.adjudicator.get_username()


class PairwiseResultsSerializer(serializers.Serializer):
    """The schema of the pairwise results (evalapp.pair_results.pairwise_results) for the API's documentation;
    the view returns that dict as it is, the one the page and pairwise.json show."""

    phase = serializers.DictField(allow_null=True,
                                  help_text="status, criteria, judgments_per_pair; null without a phase")
    arms = serializers.ListField(child=serializers.CharField(), help_text="arm labels in id order")
    reference = serializers.CharField(allow_null=True, help_text="the arm at 0 in the strengths")
    n_judgments = serializers.IntegerField()
    n_simulated = serializers.IntegerField(help_text="judgments written by the demo's rater simulation")
    simulated = serializers.BooleanField()
    n_excluded_verdicts = serializers.IntegerField(help_text="verdicts on pairs with a response excluded after safety "
                                                             "review, left out")
    side_control = serializers.CharField(help_text="how left/right position was controlled")
    ties = serializers.CharField(help_text="how each test handles ties")
    criteria = serializers.ListField(child=serializers.DictField(), help_text=(
        "per question: key, question, n_verdicts, n_pairs, arm_pairs (B vs A win/tie/loss with Wilson CIs, sign "
        "test, ties-aware test), strengths (Bradley-Terry, Davidson, bootstrap CIs), position_bias, alpha, and "
        "scores (agreement with the 1-10 criterion of the same key) where the rubric has one"))
