"""Reads of the study domain."""

from django.db.models import Count, QuerySet

from .models import Arm, Prompt, Study


def study_prompts(*, study: Study) -> QuerySet[Prompt]:
    return study.prompts.order_by("id")


def study_arms_with_counts(*, study: Study) -> QuerySet[Arm]:
    return study.arms.annotate(n_responses=Count("responses")).order_by("id")


def study_counts(*, study: Study) -> dict[str, int]:
    return {
        "prompts": study.prompts.count(),
        "arms": study.arms.count(),
        "responses": Arm.objects.filter(study=study).aggregate(n=Count("responses"))["n"] or 0,
    }


def study_generation_runs(*, study: Study, limit: int = 10) -> list:
    from modelserver.models import GenerationRun

    return list(GenerationRun.objects.filter(study=study).order_by("-created_at")[:limit])


def study_confirmed_harmful(*, study: Study) -> int:
    from .models import SafetyClassification, SafetyDecision

    return SafetyDecision.objects.filter(
        response__prompt__study=study, classification=SafetyClassification.HARMFUL
    ).count()


def study_training_runs(*, study: Study, limit: int = 10) -> list:
    from modelserver.models import TrainingRun

    return list(TrainingRun.objects.filter(study=study).select_related("adapter").order_by("-created_at")[:limit])
