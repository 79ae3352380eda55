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
    """The latest runs, each with ``holders`` (the workers holding one of its chunks under a live lease
    now) and ``workers`` (every worker that took a chunk of it), in two queries whatever the run's size."""
    from modelserver.models import GenerationChunk, GenerationRun, RunStatus

    runs = list(GenerationRun.objects.filter(study=study).order_by("-created_at")[:limit])
    rows = (GenerationChunk.objects.filter(run__in=runs).exclude(worker="").values("run_id", "worker")
            .annotate(live=Count("id", filter=GenerationChunk.held_live())).order_by("run_id", "worker"))
    by_run: dict[int, list[dict]] = {}
    for row in rows:
        by_run.setdefault(row["run_id"], []).append(row)
    for run in runs:
        chunk_workers = by_run.get(run.id)
        if chunk_workers is None:
            # A run from before chunks: its own worker field is all there is.
            run.workers = [run.worker] if run.worker else []
            run.holders = run.workers if run.status == RunStatus.RUNNING else []
        else:
            run.workers = [row["worker"] for row in chunk_workers]
            run.holders = [row["worker"] for row in chunk_workers if row["live"]]
    return runs


def study_confirmed_harmful(*, study: Study) -> int:
    from .models import SafetyClassification, SafetyDecision

    return SafetyDecision.objects.filter(
        response__prompt__study=study, classification=SafetyClassification.HARMFUL
    ).count()


def study_training_runs(*, study: Study, limit: int = 10) -> list:
    from modelserver.models import TrainingRun

    return list(TrainingRun.objects.filter(study=study).select_related("adapter").order_by("-created_at")[:limit])
