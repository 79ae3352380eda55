"""Replies cut at the token limit: how many per arm, and regenerating them with a larger limit.

Every response's provenance says why its generation stopped: ``finish_reason`` "stop" (the model ended
its turn) or "length" (it reached ``max_new_tokens`` and was cut, often mid-word). The researcher sees the
share per arm before the study opens for rating and may regenerate an arm's cut replies with a larger
limit: those responses are deleted and a generation run (resumable like any other) writes them again,
with the same seeds, under the larger ``max_new_tokens`` recorded in the run and in each new provenance.
"""

from collections import Counter

from django.db import transaction
from django.db.models import Count, Q
from django.db.models.fields.json import KT

from evalapp.audit import audit
from evalapp.errors import ServiceError
from evalapp.models import Arm, Response, Study

from .models import ACTIVE, GenerationRun
from .services import GenerationError, generation_run_create

# The largest limit a regeneration may ask for (the arm form's own bound).
MAX_NEW_TOKENS_CAP = 2048
# Regenerating is allowed only before raters see the study.
REGENERATE_STATUSES = (Study.Status.DRAFT, Study.Status.GENERATING)
CUT = Q(provenance__finish_reason="length")


def arm_max_new_tokens(arm: Arm) -> int:
    """The limit the arm's own settings give (GenerationParams' default where it sets none)."""
    from .inference.params import GenerationParams

    value = (arm.generation_params or {}).get("max_new_tokens")
    return value if isinstance(value, int) else GenerationParams.max_new_tokens


def truncation_by_arm(study: Study) -> list[dict]:
    """Per arm: responses, those cut at the token limit (finish_reason "length"), their share, and the
    max_new_tokens values seen (all responses, and the cut ones). Two queries, whatever the study's size."""
    arms = list(
        study.arms.order_by("id").annotate(
            n_responses=Count("responses"),
            n_length=Count("responses", filter=Q(responses__provenance__finish_reason="length")),
        )
    )
    seen: dict[int, set[int]] = {}
    seen_cut: dict[int, set[int]] = {}
    rows = (
        Response.objects.filter(arm__study=study)
        .annotate(limit=KT("provenance__params__max_new_tokens"), finish=KT("provenance__finish_reason"))
        .values_list("arm_id", "limit", "finish")
        .distinct()
        .order_by()
    )
    for arm_id, limit, finish in rows:
        if limit is None or not str(limit).isdigit():
            continue
        seen.setdefault(arm_id, set()).add(int(limit))
        if finish == "length":
            seen_cut.setdefault(arm_id, set()).add(int(limit))
    open_for_regeneration = study.status in REGENERATE_STATUSES
    result = []
    for arm in arms:
        current = max([arm_max_new_tokens(arm), *seen_cut.get(arm.id, ())])
        share = arm.n_length / arm.n_responses if arm.n_responses else 0.0
        result.append(
            {
                "label": arm.label,
                "arm_id": arm.id,
                "n_responses": arm.n_responses,
                "n_length": arm.n_length,
                "share": share,
                "percent": round(100 * share),
                "max_new_tokens_seen": sorted(seen.get(arm.id, ())),
                "current_max_new_tokens": current,
                "suggested_max_new_tokens": min(max(2 * current, current + 1), MAX_NEW_TOKENS_CAP),
                "max_new_tokens_cap": MAX_NEW_TOKENS_CAP,
                "can_regenerate": open_for_regeneration and arm.n_length > 0 and current < MAX_NEW_TOKENS_CAP,
            }
        )
    return result


def regenerate_truncated(*, study: Study, user, arm: Arm, max_new_tokens: int) -> GenerationRun:
    """Delete the arm's replies cut at the token limit and queue a run that writes them again with a
    larger ``max_new_tokens`` (after commit). All or nothing: a refusal or a failure deletes nothing."""
    if arm.study_id != study.id:
        raise ServiceError("The arm does not belong to this study.", status=400)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise ServiceError("max_new_tokens must be a whole number.", status=400)
    if max_new_tokens > MAX_NEW_TOKENS_CAP:
        raise ServiceError(f"max_new_tokens can be at most {MAX_NEW_TOKENS_CAP}; {max_new_tokens} was asked.",
                           status=400)
    with transaction.atomic():
        locked = Study.objects.select_for_update().get(id=study.id)
        if locked.status not in REGENERATE_STATUSES:
            raise ServiceError(
                f"The study is {locked.get_status_display().lower()}: its responses can be regenerated only "
                "before it opens for rating. Clone the study to generate them again.",
                status=409,
            )
        if GenerationRun.objects.filter(study=study, status__in=ACTIVE).exists():
            raise GenerationError("A generation run for this study is already queued or running: "
                                  "wait for it to finish before regenerating.", status=409)
        cut = Response.objects.filter(CUT, arm=arm, prompt__study=study)
        victims = list(cut.values_list("id", "public_id", "sample_index", "provenance__run_seed",
                                       "provenance__batch_size"))
        if not victims:
            raise ServiceError(f"Arm “{arm.label}” has no replies cut at the token limit.", status=409)
        current = max([arm_max_new_tokens(arm)]
                      + [int(v) for v in cut.values_list("provenance__params__max_new_tokens", flat=True)
                         if isinstance(v, int)])
        if max_new_tokens <= current:
            raise ServiceError(
                f"max_new_tokens must be larger than the current limit of {current} tokens; "
                f"{max_new_tokens} would cut the same replies again.",
                status=400,
            )
        if cut.filter(ratings__isnull=False).exists() or cut.filter(assignments__isnull=False).exists():
            raise ServiceError("Some of these replies are already rated or assigned to raters: "
                               "they cannot be regenerated.", status=409)
        # The same seeds as the replies being replaced (and their run's batch size): same prompts,
        # same random stream, only a longer budget.
        run_seed = _most_common(v[3] for v in victims)
        batch_size = _most_common(v[4] for v in victims)
        samples = 1 + max(
            Response.objects.filter(arm=arm, prompt__study=study).order_by("-sample_index")
            .values_list("sample_index", flat=True)[:1]
        )
        deleted = [v[1] for v in victims]
        cut.delete()
        run = generation_run_create(
            study=study,
            user=user,
            arms=[arm],
            samples_per_prompt=samples,
            seed=run_seed if isinstance(run_seed, int) and run_seed >= 0 else 0,
            batch_size=batch_size if isinstance(batch_size, int) and batch_size >= 1 else 16,
            generation_params={"max_new_tokens": max_new_tokens},
        )
        audit(
            study=study, actor=user, action="responses.regenerate_cut", obj=run,
            before={"arm": arm.id, "max_new_tokens": current, "responses": deleted},
            after={"arm": arm.id, "max_new_tokens": max_new_tokens, "generation_run": run.id},
        )
    return run


def _most_common(values):
    counts = Counter(v for v in values if v is not None)
    return counts.most_common(1)[0][0] if counts else None
