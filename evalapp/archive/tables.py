"""Which rows belong to a study, table by table, in the order an import writes them.

Every concrete field of a table's model travels (read off the model, so a new column is archived with
no change here). Foreign keys are remapped on import by following each field to the table of its model;
the few JSON payloads that name rows by id are listed in `remap_payload`. The users a study involves are
their own table (USERS), with no password. tests/evalapp/test_study_archive.py fails when a model with a
foreign-key path to Study is missing from TABLES.
"""

import hashlib
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db.models import Model, Q, QuerySet

from modelserver.models import (
    Adapter,
    GenerationChunk,
    GenerationRun,
    Judge,
    JudgeAnswer,
    JudgeChunk,
    JudgeRun,
    PlaygroundRequest,
    TrainingRun,
)
from modelserver.services import resolve_adapter_path
from raters.models import (
    Assignment,
    CalibrationAnswer,
    CalibrationAttempt,
    CalibrationItem,
    Consent,
    ConsentVersion,
    DistressReport,
    GoldAnswer,
    GoldPair,
    Invitation,
    PairAssignment,
    PairGoldAnswer,
    PanelLink,
    PanelParticipant,
    RatingRevision,
    StudyMembership,
    WelfareBreak,
    WelfareNoticeSeen,
    WelfareSettings,
)
from raters.panel_models import new_slug as new_panel_slug

from ..models import (
    Adjudication,
    Arm,
    AuditEvent,
    Criterion,
    PairAdjudication,
    PairJudgment,
    PairVerdict,
    PairwisePhase,
    Prompt,
    ResultsComputation,
    Rating,
    Response,
    ResponsePair,
    SafetyDecision,
    SafetyReview,
    Score,
    Study,
    new_public_id,
)

USERS = "users"
# What travels of an account: never its password, staff or superuser flags. `researcher` is the
# site role that may create studies (raters.services.researchers), granted to accounts an import creates.
USER_FIELDS = ("username", "email", "first_name", "last_name", "is_active", "date_joined")


def _new_token_sha256() -> str:
    # A copy's invitations must not answer the original's links: a hash no token has.
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


@dataclass(frozen=True)
class Table:
    name: str
    model: type[Model]
    rows: Callable[[Study], QuerySet]
    # Values unique across the whole database that a copy beside its original (--as-new) draws anew.
    fresh: tuple[tuple[str, Callable[[], object]], ...] = ()
    # An existing row with these values is the archived row itself (its unique constraint): reused, not copied.
    reuse: tuple[str, ...] = ()


def _adapters(study: Study) -> QuerySet:
    """Registered adapters the study's arms name, or trained for it: metadata and hashes, never weights."""
    references = set()
    for reference in study.arms.exclude(adapter="").values_list("adapter", flat=True):
        references |= {reference, resolve_adapter_path(reference)}
    return Adapter.objects.filter(Q(path__in=references) | Q(training_run__study=study))


def _training_runs(study: Study) -> QuerySet:
    return TrainingRun.objects.filter(Q(study=study) | Q(adapter__in=_adapters(study)))


GenerationRunArm = GenerationRun.arms.through

TABLES: tuple[Table, ...] = (
    Table("study", Study, lambda s: Study.objects.filter(pk=s.pk)),
    Table("criteria", Criterion, lambda s: Criterion.objects.filter(study=s)),
    Table("prompts", Prompt, lambda s: Prompt.objects.filter(study=s)),
    Table("arms", Arm, lambda s: Arm.objects.filter(study=s)),
    Table("consent_versions", ConsentVersion, lambda s: ConsentVersion.objects.filter(study=s)),
    Table("calibration_items", CalibrationItem, lambda s: CalibrationItem.objects.filter(study=s),
          fresh=(("public_id", new_public_id),)),
    Table("training_runs", TrainingRun, _training_runs),
    Table("adapters", Adapter, _adapters, reuse=("created_by_id", "adapter_sha256")),
    Table("generation_runs", GenerationRun, lambda s: GenerationRun.objects.filter(study=s)),
    Table("generation_run_arms", GenerationRunArm, lambda s: GenerationRunArm.objects.filter(generationrun__study=s)),
    Table("generation_chunks", GenerationChunk, lambda s: GenerationChunk.objects.filter(run__study=s)),
    Table("playground_requests", PlaygroundRequest, lambda s: PlaygroundRequest.objects.filter(study=s)),
    Table("memberships", StudyMembership, lambda s: StudyMembership.objects.filter(study=s)),
    Table("invitations", Invitation, lambda s: Invitation.objects.filter(study=s),
          fresh=(("token_sha256", _new_token_sha256),)),
    Table("consents", Consent, lambda s: Consent.objects.filter(study=s)),
    Table("panel_links", PanelLink, lambda s: PanelLink.objects.filter(study=s), fresh=(("slug", new_panel_slug),)),
    Table("panel_participants", PanelParticipant, lambda s: PanelParticipant.objects.filter(study=s)),
    Table("calibration_attempts", CalibrationAttempt, lambda s: CalibrationAttempt.objects.filter(study=s)),
    Table("calibration_answers", CalibrationAnswer, lambda s: CalibrationAnswer.objects.filter(attempt__study=s)),
    Table("responses", Response, lambda s: Response.objects.filter(prompt__study=s),
          fresh=(("public_id", new_public_id),)),
    Table("assignments", Assignment, lambda s: Assignment.objects.filter(study=s)),
    Table("gold_answers", GoldAnswer, lambda s: GoldAnswer.objects.filter(assignment__study=s)),
    Table("ratings", Rating, lambda s: Rating.objects.filter(response__prompt__study=s)),
    Table("scores", Score, lambda s: Score.objects.filter(rating__response__prompt__study=s)),
    Table("rating_revisions", RatingRevision,
          lambda s: RatingRevision.objects.filter(rating__response__prompt__study=s)),
    Table("adjudications", Adjudication, lambda s: Adjudication.objects.filter(response__prompt__study=s)),
    Table("safety_reviews", SafetyReview, lambda s: SafetyReview.objects.filter(response__prompt__study=s)),
    Table("safety_decisions", SafetyDecision, lambda s: SafetyDecision.objects.filter(response__prompt__study=s)),
    Table("pairwise_phases", PairwisePhase, lambda s: PairwisePhase.objects.filter(study=s)),
    Table("gold_pairs", GoldPair, lambda s: GoldPair.objects.filter(study=s), fresh=(("public_id", new_public_id),)),
    Table("response_pairs", ResponsePair, lambda s: ResponsePair.objects.filter(study=s),
          fresh=(("public_id", new_public_id),)),
    Table("pair_assignments", PairAssignment, lambda s: PairAssignment.objects.filter(study=s)),
    Table("pair_gold_answers", PairGoldAnswer, lambda s: PairGoldAnswer.objects.filter(assignment__study=s)),
    Table("pair_judgments", PairJudgment, lambda s: PairJudgment.objects.filter(pair__study=s)),
    Table("pair_verdicts", PairVerdict, lambda s: PairVerdict.objects.filter(judgment__pair__study=s)),
    Table("pair_adjudications", PairAdjudication, lambda s: PairAdjudication.objects.filter(pair__study=s)),
    Table("welfare_settings", WelfareSettings, lambda s: WelfareSettings.objects.filter(study=s)),
    Table("welfare_notices_seen", WelfareNoticeSeen, lambda s: WelfareNoticeSeen.objects.filter(study=s)),
    Table("distress_reports", DistressReport, lambda s: DistressReport.objects.filter(study=s)),
    Table("welfare_breaks", WelfareBreak, lambda s: WelfareBreak.objects.filter(study=s)),
    Table("judges", Judge, lambda s: Judge.objects.filter(study=s)),
    Table("judge_runs", JudgeRun, lambda s: JudgeRun.objects.filter(study=s)),
    Table("judge_chunks", JudgeChunk, lambda s: JudgeChunk.objects.filter(run__study=s)),
    Table("judge_answers", JudgeAnswer, lambda s: JudgeAnswer.objects.filter(judge__study=s)),
    Table("audit_events", AuditEvent, lambda s: AuditEvent.objects.filter(study=s)),
)
# Rows computed from a study's data and recomputed from it on demand: not archived (an import's new ids give
# them another fingerprint, so a copy would never be read), deleted with the study (results_forget).
DERIVED: tuple[type[Model], ...] = (ResultsComputation,)
JOB_TABLES = ("training_runs", "generation_runs", "generation_chunks", "playground_requests", "judge_runs",
              "judge_chunks")


def table_of(model: type[Model]) -> str:
    """The archive table a foreign key to `model` points into."""
    if model is get_user_model():
        return USERS
    return _BY_MODEL[model]


def fields(model: type[Model]) -> list:
    """The columns an archive holds of a model: every concrete field, the primary key first."""
    return list(model._meta.concrete_fields)


def foreign_keys(model: type[Model]) -> list:
    return [f for f in model._meta.concrete_fields if f.is_relation]


_BY_MODEL = {t.model: t.name for t in TABLES}
# An audit event names its object by class name and id (evalapp.audit).
_BY_CLASS_NAME = {t.model.__name__: t.name for t in TABLES}
# Top-level keys of audit payloads that hold ids (the services that write them: evalapp.adjudication,
# evalapp.pair_adjudication, raters.services, modelserver.truncation); "response" and "pair" hold public
# ids, which a copy beside its original draws anew.
_AUDIT_KEYS = {"user": USERS, "rater": USERS, "assigned_to": USERS, "arm": "arms", "generation_run": "generation_runs",
               "response": "responses.public_id", "pair": "response_pairs.public_id"}


def audit_object_table(object_type: str) -> str | None:
    if object_type == get_user_model().__name__:
        return USERS
    return _BY_CLASS_NAME.get(object_type)


def payload_references(table: str, row: dict) -> Iterator[tuple[str, object]]:
    """(table, id) of each row a JSON payload of `row` names: an export includes the users among them."""
    if table == "audit_events":
        target = audit_object_table(row["object_type"])
        if target is not None:
            yield target, row["object_id"]
        for payload in (row["before"], row["after"]):
            if isinstance(payload, dict):
                for key, target in _AUDIT_KEYS.items():
                    if payload.get(key) is not None:
                        yield target, payload[key]


def remap_payload(table: str, row: dict, maps: dict[str, dict]) -> None:
    """Point the ids inside `row`'s JSON payloads at the imported rows. An id the archive does not hold
    (a row deleted before the export) is kept as it was: it named nothing here either."""

    def moved(target: str, value):
        mapping = maps.get(target, {})
        if target.endswith(".public_id"):
            return mapping.get(value, value)
        try:
            new = mapping.get(int(value))
        except (TypeError, ValueError):
            return value
        if new is None:
            return value
        return str(new) if isinstance(value, str) else new

    if table == "responses" and isinstance(row["provenance"], dict) and "generation_run" in row["provenance"]:
        row["provenance"] = {**row["provenance"],
                             "generation_run": moved("generation_runs", row["provenance"]["generation_run"])}
    elif table == "generation_chunks" and isinstance(row["keys"], list):
        # [[prompt id, sample index], ...]: the prompts are new rows here.
        row["keys"] = [[moved("prompts", key[0]), *key[1:]] if isinstance(key, list) and key else key
                       for key in row["keys"]]
    elif table == "judge_chunks" and isinstance(row["keys"], list):
        # [[response or pair id, sample index], ...], by the chunk's mode.
        target = "response_pairs" if row.get("mode") == "pairs" else "responses"
        row["keys"] = [[moved(target, key[0]), *key[1:]] if isinstance(key, list) and key else key
                       for key in row["keys"]]
    elif table == "judge_answers" and isinstance(row["provenance"], dict) and "judge_run" in row["provenance"]:
        row["provenance"] = {**row["provenance"], "judge_run": moved("judge_runs", row["provenance"]["judge_run"])}
    elif table == "playground_requests" and isinstance(row["outputs"], list):
        row["outputs"] = [{**o, "arm_id": moved("arms", o["arm_id"])} if isinstance(o, dict) and "arm_id" in o else o
                          for o in row["outputs"]]
    elif table == "audit_events":
        target = audit_object_table(row["object_type"])
        if target is not None:
            row["object_id"] = str(moved(target, row["object_id"]))
        for name in ("before", "after"):
            payload = row[name]
            if isinstance(payload, dict) and any(payload.get(key) is not None for key in _AUDIT_KEYS):
                row[name] = {key: moved(_AUDIT_KEYS[key], value) if key in _AUDIT_KEYS and value is not None else value
                             for key, value in payload.items()}
