"""Writes to the study domain. Views, commands and tasks call these; they hold no logic."""

import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import RestrictedError

from modelserver.models import (
    Adapter,
    GenerationChunk,
    GenerationRun,
    JudgeChunk,
    JudgeRun,
    PlaygroundRequest,
    RunStatus,
    TrainingRun,
)
from modelserver.services import resolve_adapter_path
from raters.models import CalibrationAnswer, CalibrationItem, ConsentVersion, GoldPair

from .archive.tables import TABLES
from .audit import audit
from .errors import ServiceError
from .models import Arm, Criterion, PairwisePhase, Prompt, Study
from .prompt_import import ParsedPrompt, RowProblem, parse_prompt_file
from .pair_results import pairwise_results_forget
from .results import results_forget
from .rubric import RubricError, remap, validate
from .rubric_presets import DEFAULT_PRESET, preset as get_preset


@dataclass
class ImportReport:
    format: str = ""
    rows_in_file: int = 0
    selected: int = 0
    created: int = 0
    unchanged: int = 0
    errors: list[RowProblem] = field(default_factory=list)
    warnings: list[RowProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        if not self.ok:
            return f"Nothing imported: {len(self.errors)} problem(s) found."
        return (
            f"Imported {self.created} new prompt(s); {self.unchanged} already in the study unchanged "
            f"({self.selected} selected of {self.rows_in_file} in the file)."
        )


def study_import_prompts(
    *,
    study: Study,
    data: bytes,
    filename: str,
    split: str | None = None,
    sample: int | None = None,
    seed: int = 0,
    redact: bool = False,
) -> ImportReport:
    """Import all prompts of a file or none of them.

    Re-importing the same file adds nothing; an id already in the study with a
    different conversation is an error, never a silent overwrite.
    """
    parsed = parse_prompt_file(
        data,
        filename,
        max_bytes=settings.PROMPT_IMPORT_MAX_BYTES,
        max_chars=settings.PROMPT_MAX_CHARS,
        redact=redact,
    )
    report = ImportReport(format=parsed.format, rows_in_file=len(parsed.prompts), warnings=parsed.warnings)
    report.errors.extend(parsed.errors)
    if report.errors:
        return report

    selected = parsed.prompts
    if split:
        selected = [p for p in selected if p.split == split]
    if sample is not None:
        if sample < 1:
            report.errors.append(RowProblem(0, "sample", "must be at least 1"))
            return report
        if sample > len(selected):
            report.errors.append(
                RowProblem(0, "sample", f"asks for {sample} prompts but only {len(selected)} match")
            )
            return report
        # Sorting first makes the sample depend on the seed and the ids, not on file order.
        ordered = sorted(selected, key=lambda p: p.external_id)
        selected = sorted(random.Random(seed).sample(ordered, sample), key=lambda p: p.row)
    if not selected:
        report.errors.append(RowProblem(0, "split", f"no prompt has split {split!r}"))
        return report
    report.selected = len(selected)

    with transaction.atomic():
        existing = {
            p.external_id: p
            for p in Prompt.objects.select_for_update().filter(
                study=study, external_id__in=[p.external_id for p in selected]
            )
        }
        new = []
        for prompt in selected:
            current = existing.get(prompt.external_id)
            if current is None:
                new.append(prompt)
            elif _same(current, prompt):
                report.unchanged += 1
            else:
                report.errors.append(
                    RowProblem(prompt.row, "id", f"{prompt.external_id!r} is already in the study with different content")
                )
        if new and study.status != Study.Status.DRAFT:
            report.errors.append(RowProblem(0, "file", design_frozen_message(f"adding {len(new)} prompt(s)")))
        if report.errors:
            report.unchanged = 0
            return report
        try:
            with transaction.atomic():
                Prompt.objects.bulk_create(_prompt_row(study, p) for p in new)
        except IntegrityError:
            # A concurrent import of the same ids won the race; ours writes nothing.
            report.errors.append(RowProblem(0, "file", "another import of the same ids ran at the same time; try again"))
            report.unchanged = 0
            return report
        report.created = len(new)
    return report


def _same(current: Prompt, incoming: ParsedPrompt) -> bool:
    return current.messages == incoming.messages and current.reference == incoming.reference


def _prompt_row(study: Study, prompt: ParsedPrompt) -> Prompt:
    return Prompt(
        study=study,
        external_id=prompt.external_id,
        messages=prompt.messages,
        topic=prompt.topic[:100],
        source=prompt.source[:100],
        split=prompt.split[:50],
        reference=prompt.reference,
    )


def design_frozen_message(change: str) -> str:
    return (f"The study's design is frozen since it opened for rating: {change} would change what its raters "
            "were asked. Clone the study to run a changed design.")


def check_design_open(study: Study, change: str) -> None:
    if study.status != Study.Status.DRAFT:
        raise ServiceError(design_frozen_message(change), status=409)


@transaction.atomic
def study_clone(*, study: Study, owner, title: str = "") -> Study:
    """A new draft study with the design of `study` (settings, arms, consent text, calibration items, the
    pairwise design and its gold pairs) and none of its data (prompts, responses, ratings, raters); a fresh design seed."""
    copy = Study.objects.create(owner=owner, title=title or f"{study.title} (copy)", description=study.description,
                                **{name: getattr(study, name) for name in Study.DESIGN_FIELDS})
    Criterion.objects.bulk_create(Criterion.from_spec(copy, i, spec) for i, spec in enumerate(study.rubric()))
    Arm.objects.bulk_create(
        Arm(study=copy, label=arm.label, base_model=arm.base_model, adapter=arm.adapter,
            system_prompt=arm.system_prompt, generation_params=arm.generation_params)
        for arm in study.arms.all()
    )
    consent = study.consent_versions.order_by("-version").first()
    if consent is not None:
        ConsentVersion.objects.create(study=copy, version=1, text=consent.text,
                                      withdrawal_policy=consent.withdrawal_policy)
    CalibrationItem.objects.bulk_create(
        CalibrationItem(study=copy, messages=item.messages, response_text=item.response_text,
                        references=item.references,
                        rationale=item.rationale, use_as_gold=item.use_as_gold, created_by=owner)
        for item in study.calibration_items.order_by("id")
    )
    phase = PairwisePhase.objects.filter(study=study).first()
    if phase is not None:  # the pairwise design too, as a draft with its own seed
        PairwisePhase.objects.create(study=copy, **{name: getattr(phase, name) for name in PairwisePhase.DESIGN_FIELDS})
    GoldPair.objects.bulk_create(
        GoldPair(study=copy, messages=g.messages, better_text=g.better_text, worse_text=g.worse_text,
                 rationale=g.rationale, created_by=owner)
        for g in study.gold_pairs.order_by("id")
    )
    return copy


@transaction.atomic
def study_create(*, owner, title: str, description: str = "", preset: str | None = None,
                 rubric: list[dict] | None = None, consent_text: str = "", withdrawal_policy: str = "",
                 **fields) -> Study:
    """A draft study with a rubric: `rubric` (criteria dicts) if given, else the preset's (default:
    EmpathEval's two scales). A preset also brings its recommended thresholds unless fields set them.
    With consent text, consent version 1 is published (the withdrawal policy then is required)."""
    if consent_text.strip() and not withdrawal_policy:
        raise ServiceError("Say what happens to a rater's ratings if they withdraw (withdrawal_policy).")
    try:
        chosen = get_preset(preset or DEFAULT_PRESET)
    except KeyError as exc:
        raise ServiceError(exc.args[0]) from None
    criteria = _checked_rubric(rubric if rubric is not None else chosen["criteria"])
    fields = {**chosen["settings"], **fields}
    study = Study(owner=owner, title=title, description=description,
                  rubric_preset="" if rubric is not None else (preset or DEFAULT_PRESET), **fields)
    study.full_clean()
    study.save()
    Criterion.objects.bulk_create(Criterion.from_spec(study, i, spec) for i, spec in enumerate(criteria))
    if consent_text.strip():
        ConsentVersion.objects.create(study=study, version=1, text=consent_text.strip(),
                                      withdrawal_policy=withdrawal_policy)
    return study


def _checked_rubric(criteria) -> list[dict]:
    try:
        return validate(criteria)
    except RubricError as exc:
        raise ServiceError(str(exc)) from None


@transaction.atomic
def study_set_rubric(*, study: Study, criteria: list[dict], actor=None, preset: str | None = None) -> list[dict]:
    """Replace a draft study's rubric (all criteria at once: order, keys and ranges may all change).
    With `preset`, the rubric is that preset's (and it becomes the study's source for the citation)."""
    study = Study.objects.select_for_update().get(pk=study.pk)
    check_design_open(study, "changing the rubric")
    if preset:
        try:
            criteria = get_preset(preset)["criteria"]
        except KeyError as exc:
            raise ServiceError(exc.args[0]) from None
        Study.objects.filter(pk=study.pk).update(rubric_preset=preset)
    checked = _checked_rubric(criteria)
    before = study.rubric()
    try:
        with transaction.atomic():
            study.criteria.all().delete()
    except RestrictedError:
        # Only a study put back to draft after rating (by an administrator) has scores to keep.
        raise ServiceError("This study has ratings on its current rubric; clone it to use another.",
                           status=409) from None
    Criterion.objects.bulk_create(Criterion.from_spec(study, i, spec) for i, spec in enumerate(checked))
    # References and any draft calibration answers keep a value only where it means the same thing
    # under the new rubric (same range; a choice's option found by its key), else they lose it.
    old_by_key, new_by_key = {c["key"]: c for c in before}, {c["key"]: c for c in checked}

    def moved(values: dict) -> dict:
        kept = {}
        for key, value in values.items():
            if key in new_by_key and key in old_by_key:
                mapped = remap(old_by_key[key], new_by_key[key], value)
                if mapped is not None:
                    kept[key] = mapped
        return kept

    for item in study.calibration_items.all():
        if moved(item.references) != item.references:
            item.references = moved(item.references)
            item.save(update_fields=["references"])
    for answer in CalibrationAnswer.objects.filter(attempt__study=study):
        if moved(answer.values) != answer.values:
            answer.values = moved(answer.values)
            answer.save(update_fields=["values"])
    if actor is not None:
        audit(study=study, actor=actor, action="study.rubric", obj=study, before={"rubric": before},
              after={"rubric": checked})
    return checked


def arm_create(
    *,
    study: Study,
    label: str,
    base_model: str = "bundled",
    adapter: str = "",
    system_prompt: str = "",
    generation_params: dict | None = None,
) -> Arm:
    check_design_open(study, f"adding the arm {label!r}")
    arm = Arm(
        study=study,
        label=label,
        base_model=base_model,
        adapter=adapter,
        system_prompt=system_prompt,
        generation_params=generation_params or {},
    )
    arm.full_clean(validate_constraints=False)
    arm.save()
    return arm


@dataclass
class DeletionReport:
    rows: dict[str, int]  # archive table -> rows deleted
    paths_removed: list[str]
    adapters_kept: list[str]  # adapters trained for the study that another study's arm still uses


def study_delete(*, study: Study, actor) -> DeletionReport:
    """Delete a study, every row of it in every table and the files trained for it; owner only.

    Refused while a job of the study is queued or running (a worker would write rows or files back); one
    whose worker stopped reporting (resumable) does not hold it up. An adapter trained for the study that
    another study's arm names survives with its training run and files (the run no longer names the
    study). Files are removed after the commit, and only inside EMPATHEVAL_ADAPTER_DIR. What remains is
    one site-level audit event (no study) naming who deleted which study.
    """
    if actor is None or actor.pk != study.owner_id:
        raise ServiceError("Only the study's owner can delete it.", status=403)
    jobs = [("generation", GenerationRun.objects.filter(study=study)),
            ("generation", GenerationChunk.objects.filter(run__study=study)),
            ("playground", PlaygroundRequest.objects.filter(study=study)),
            ("training", TrainingRun.objects.filter(study=study)),
            ("judge", JudgeRun.objects.filter(study=study)),
            ("judge", JudgeChunk.objects.filter(run__study=study))]
    with transaction.atomic():
        study = Study.objects.select_for_update().get(pk=study.pk)
        for kind, queryset in jobs:
            active = queryset.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING])
            if active.exclude(queryset.model._resumable()).exists():
                raise ServiceError(f"A {kind} job of this study is queued or running: wait for it to finish "
                                   "(or to fail) before deleting the study.", status=409)
        trained = list(Adapter.objects.filter(training_run__study=study).select_related("training_run"))
        elsewhere = set()
        for reference in Arm.objects.exclude(study=study).exclude(adapter="").values_list("adapter", flat=True):
            elsewhere |= {reference, resolve_adapter_path(reference)}
        kept = [a for a in trained if a.path in elsewhere]
        doomed = [a for a in trained if a not in kept]
        paths = [a.path for a in doomed] + [a.training_run.out_dir for a in doomed]
        paths += list(TrainingRun.objects.filter(study=study, adapter__isnull=True).values_list("out_dir", flat=True))
        TrainingRun.objects.filter(adapter__in=kept).update(study=None)
        results_forget(study)
        pairwise_results_forget(study)
        # Before the study: deleting it would only unlink its training runs (SET_NULL), not remove them.
        rows = {"adapters": Adapter.objects.filter(id__in=[a.id for a in doomed]).delete()[0],
                "training_runs": TrainingRun.objects.filter(study=study).delete()[0]}
        for table in reversed(TABLES):
            if table.name in ("adapters", "training_runs"):
                continue  # the registry's own rows: only those trained for this study go, below
            # Dependents first (TABLES lists each table after the ones it points to), so nothing
            # protected stands in the way and the study goes last.
            rows[table.name] = table.rows(study).delete()[0]
        audit(study=None, actor=actor, action="study.delete", obj=study,
              after={"study": study.id, "title": study.title, "rows": rows, "adapters_kept": [a.path for a in kept]})
        removed = [p for p in paths if p and _inside_adapter_dir(p)]
        transaction.on_commit(lambda: _remove_paths(removed))
    return DeletionReport(rows=rows, paths_removed=removed, adapters_kept=[a.path for a in kept])


def _inside_adapter_dir(path: str) -> bool:
    # Never remove anything outside the folder the site trains into: a registered adapter may live anywhere.
    root = Path(settings.EMPATHEVAL_ADAPTER_DIR).resolve()
    target = Path(path).resolve()
    return target != root and root in target.parents


def _remove_paths(paths: list[str]) -> None:
    for path in paths:
        target = Path(path)
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        elif target.exists():
            target.unlink(missing_ok=True)
