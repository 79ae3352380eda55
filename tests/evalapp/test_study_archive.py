"""Moving a study: export, import elsewhere (or beside it), and the copy equals the original row for row.

Long because one fixture (`full_study`) walks a study through every table the archive holds, and the
tests that compare its copy row for row read best beside it."""

import hashlib
import io
import json
import zipfile

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from evalapp import adjudication as adj
from evalapp import pair_adjudication as pair_adj
from evalapp.archive import tables as archive_tables
from evalapp.archive.tables import DERIVED, TABLES, USERS, foreign_keys, table_of
from evalapp.models import Arm, AuditEvent, Prompt, Response, ResponsePair, Study
from evalapp.services import arm_create
from modelserver.models import (
    Adapter,
    GenerationChunk,
    GenerationRun,
    Judge,
    JudgeAnswer,
    JudgeChunk,
    JudgeRun,
    PlaygroundRequest,
    RunStatus,
    TrainingRun,
)
from raters import services as rs
from raters.models import (CalibrationAnswer, CalibrationItem, Consent, DistressReport, GoldAnswer, PairAssignment,
                           PairGoldAnswer, Role, WelfareBreak)
from raters.selectors import next_item
from raters.services import Submission

from ..factories import MembershipFactory, PromptFactory, ResponseFactory, UserFactory

pytestmark = pytest.mark.django_db
User = get_user_model()
ADAPTER = "/srv/empatheval/adapters/counselchat-lora"


def models_under_study() -> set:
    """Every model with a foreign-key path to Study (through tables of many-to-many fields included)."""
    reach = {Study}
    models = apps.get_models(include_auto_created=True)
    grown = True
    while grown:
        grown = False
        for model in models:
            keys = [f for f in model._meta.concrete_fields if f.is_relation]
            if model not in reach and any(f.related_model in reach for f in keys):
                reach.add(model)
                grown = True
    return reach


def test_every_model_under_a_study_is_archived():
    missing = sorted(m._meta.label for m in models_under_study() - {t.model for t in TABLES} - set(DERIVED))
    assert missing == [], f"add these to evalapp/archive/tables.py TABLES (a study's archive must hold them): {missing}"


def test_the_path_finder_follows_foreign_keys_through_other_tables():
    found = models_under_study()
    # Two and three steps away, and a many-to-many table: the check above sees more than direct keys.
    assert {GoldAnswer, Adapter, GenerationRun.arms.through} <= found
    assert User not in found and CalibrationItem in found


def test_every_foreign_key_points_to_a_table_written_before_it():
    order = {t.name: i for i, t in enumerate(TABLES)}
    for table in TABLES:
        for f in foreign_keys(table.model):
            target = table_of(f.related_model)
            assert target == USERS or order[target] < order[table.name], f"{table.name}.{f.name} -> {target}"


@pytest.fixture
def full_study(study, researcher, adjudicator, outsider):
    """A study that has been through everything: consent, calibration, gold items, ratings with a revision,
    an adjudication, a safety decision, a withdrawal, a co-researcher, runs and an adapter, invitations;
    and a pairwise phase with a gold pair, judgments with a revision and a pair adjudication."""
    researcher.email, researcher.first_name, researcher.last_name = "alice@lab.example", "Alice", "Liddell"
    researcher.save()
    adjudicator.email = "dana@clinic.example"
    adjudicator.save()
    rs.researcher_add(user=researcher)
    study.ratings_per_response, study.gold_rate = 2, 0.5
    study.save()
    training = TrainingRun.objects.create(created_by=researcher, study=study, name="lora", config={"steps": 50},
                                          out_dir="/srv/runs/1", status=RunStatus.SUCCEEDED)
    Adapter.objects.create(name="counselchat", created_by=researcher, training_run=training, path=ADAPTER,
                           base_ref="bundled", base_sha256="a" * 64, adapter_sha256="b" * 64,
                           manifest={"question_ids": {"train": ["t1"]}}, loss_curve=[{"step": 1, "val_loss": 2.5}])
    arms = [arm_create(study=study, label="fine-tuned", adapter=ADAPTER, generation_params={"temperature": 0.7}),
            arm_create(study=study, label="baseline")]
    run = GenerationRun.objects.create(study=study, created_by=researcher, status=RunStatus.SUCCEEDED, total=6, done=6)
    run.arms.set(arms)
    for prompt in PromptFactory.create_batch(3, study=study):
        for n, arm in enumerate(arms):
            ResponseFactory(prompt=prompt, arm=arm, text=f"{arm.label} answers {prompt.external_id}",
                            provenance={"generation_run": run.id, "seed": n, "adapter_sha256": None if n else "b" * 64})
    for index, arm in enumerate(arms):
        GenerationChunk.objects.create(run=run, arm=arm, index=index, status=RunStatus.SUCCEEDED, worker="gpu-1",
                                       keys=[[p.id, 0] for p in study.prompts.order_by("id")], size=3)
    PlaygroundRequest.objects.create(study=study, created_by=researcher, messages=[{"role": "user", "content": "Hi"}],
                                     status=RunStatus.SUCCEEDED,
                                     outputs=[{"arm_id": arm.id, "label": arm.label, "text": "Hello"} for arm in arms])
    version = rs.consent_publish(study=study, text="Your ratings are research data.", withdrawal_policy="exclude")
    item = CalibrationItem.objects.create(study=study, messages=[{"role": "user", "content": "I'm sad."}],
                                          response_text="That sounds hard.", references={"empathy": 8, "fluency": 9},
                                          rationale="Warm.", created_by=researcher)
    CalibrationItem.objects.create(study=study, messages=[{"role": "user", "content": "I'm lost."}],
                                   response_text="Hm.", references={"empathy": 2, "fluency": 5}, rationale="Cold.",
                                   use_as_gold=True, created_by=researcher)
    rs.invitation_create(study=study, created_by=researcher, role=Role.RATER, email="new@uni.example")
    carol = UserFactory(username="carol", email="carol@lab.example")
    rs.coresearcher_add(study=study, actor=researcher, email="carol@lab.example")
    raters = []
    for name in ("bob-rater", "erin", "frank", "gina"):
        user = MembershipFactory(study=study, user=UserFactory(username=name, email=f"{name}@uni.example"),
                                 role=Role.RATER).user
        rs.consent_accept(study=study, user=user, version=version)
        attempt = rs.calibration_attempt_start(study=study, rater=user)
        rs.calibration_answer(attempt=attempt, item=item, answers={"empathy": 7, "fluency": 9})
        raters.append(user)
    rs.consent_withdraw(study=study, user=raters.pop())  # gina: withdrawn before rating, audited
    rs.study_open_for_rating(study=study)
    study.refresh_from_db()
    for rater, empathy in zip(raters, (2, 9, 5), strict=True):
        first = True
        while (slot := next_item(study=study, rater=rater).assignment) is not None:
            item_id = slot.gold_item.public_id if slot.gold_item_id else slot.response.public_id
            unsafe = first and rater.username == "bob-rater" and not slot.gold_item_id
            rs.rating_submit(study=study, rater=rater, item_public_id=item_id, submission=Submission(
                {"empathy": empathy, "fluency": 7}, unsafe=unsafe, unsafe_category="harmful_advice" if unsafe else "",
                comment="blunt" if unsafe else "", seconds_on_item=12.5))
            first = first and bool(slot.gold_item_id)
    rated = raters[0].ratings.filter(unsafe=False).select_related("response").first().response
    rs.rating_submit(study=study, rater=raters[0], item_public_id=rated.public_id,
                     submission=Submission({"empathy": 3, "fluency": 6}))  # a revision, audited
    flagged = Response.objects.get(ratings__unsafe=True)
    adj.safety_review_submit(study=study, response=flagged, adjudicator=adjudicator, classification="minor",
                             note="Advice too direct.", exclude=True, exclusion_reason="Unsafe advice")
    split = adj.disagreement_queue(study=study)[0]
    adj.adjudication_resolve(study=study, response=split.response, scale="empathy", adjudicator=adjudicator,
                             final_score=5, rationale="Between the two.")
    assert GoldAnswer.objects.filter(assignment__study=study).exists() and carol.memberships.exists()
    _pairwise_phase(study, researcher, adjudicator, raters)
    return study


def _pairwise_phase(study, researcher, adjudicator, raters):
    """The second phase on the same responses: every pair split three ways (first, second, tie), so the
    pairs need adjudication; each rater answers their gold pair right; one judgment is revised."""
    rs.gold_pair_add(study=study, user=researcher, messages=[{"role": "user", "content": "I failed my exam."}],
                     better_text="That must hurt; you worked for it.", worse_text="Study harder.",
                     rationale="The second dismisses the feeling.")
    rs.pair_phase_save(study=study, criteria=[{"key": "empathy", "question": "More empathetic?"},
                                              {"key": "fluency", "question": "More fluent?"}],
                       judgments_per_pair=3, gold_rate=0.5, reason="optional")
    rs.pair_phase_open(study=study)

    def shown(assignment, verdict):  # what a rater presses to mean `verdict`, given the sides they saw
        if verdict == "tie":
            return "same"
        return "a" if (verdict == "first") == assignment.first_on_left else "b"

    for rater, verdict in zip(raters, ("first", "second", "tie"), strict=True):
        for slot in PairAssignment.objects.filter(study=study, rater=rater).order_by("position"):
            wanted = "first" if slot.gold_pair_id else verdict
            item_id = slot.gold_pair.public_id if slot.gold_pair_id else slot.pair.public_id
            rs.pair_judgment_submit(study=study, rater=rater, item_public_id=item_id, submission=rs.PairSubmission(
                {key: shown(slot, wanted) for key in ("empathy", "fluency")}, seconds_on_item=8.0))
    revised = PairAssignment.objects.filter(study=study, rater=raters[0], pair__isnull=False).first()
    assert rs.pair_judgment_submit(study=study, rater=raters[0], item_public_id=revised.pair.public_id,
                                   submission=rs.PairSubmission({key: shown(revised, "first")
                                                                 for key in ("empathy", "fluency")},
                                                                reason="Warmer opening.")) == "revised"
    split = pair_adj.pair_queue(study=study)[0]
    pair_adj.pair_adjudication_resolve(study=study, pair=split.pair, key=split.keys[0], adjudicator=adjudicator,
                                       verdict="tie", rationale="Both kind, neither better.")
    assert PairGoldAnswer.objects.filter(assignment__study=study).exists()
    assert all(answer.correct for answer in PairGoldAnswer.objects.filter(assignment__study=study))
    # A judge that judged one response and one pair (an items run and a pairs run, one chunk each).
    judge = Judge.objects.create(study=study, name="bundled judge", kind="local", model="bundled",
                                 templates={"criterion": {"name": "c", "version": 1, "sha256": "c" * 64}},
                                 created_by=researcher)
    response, pair = Response.objects.filter(prompt__study=study).first(), ResponsePair.objects.filter(study=study).first()
    for mode, target in (("items", response), ("pairs", pair)):
        judge_run = JudgeRun.objects.create(study=study, judge=judge, mode=mode, created_by=researcher,
                                            status=RunStatus.SUCCEEDED, total=1, done=1)
        JudgeChunk.objects.create(run=judge_run, mode=mode, index=0, status=RunStatus.SUCCEEDED, worker="gpu-1",
                                  keys=[[target.id, 0]], size=1)
        JudgeAnswer.objects.create(judge=judge, run=judge_run, criterion="empathy", method="local-probabilities",
                                   provenance={"judge_run": judge_run.id, "seed": 0},
                                   **({"response": target, "value": 7.0, "distribution": [0.1, 0.9]} if mode == "items"
                                      else {"pair": target, "order": "AB", "letter": "A", "preferred": "first"}))
    # A participant pool's link and one participant who entered by it (a pseudonymous account of its own).
    link = rs.panel_link_save(study=study, actor=researcher, values={
        "preset": "prolific", "code_completed": "C0MPLETE", "code_screened_out": "SCREEN",
        "redirect_completed": "https://app.prolific.com/submissions/complete?cc={code}"})
    rs.panel_enter(link=link, query={"PROLIFIC_PID": "5f0c" + "a" * 20, "STUDY_ID": "s1", "SESSION_ID": "x1"})
    # Welfare: the settings changed while open (audited), the notice a rater saw, distress on a response and a
    # pair, a break taken.
    rs.welfare_save(study=study, actor=researcher, cap_per_day=40,
                    crisis_links=[{"label": "Campus counselling", "url": "tel:+15550100"}])
    rs.notice_record(study=study, user=raters[1], consent_version=1)
    DistressReport.objects.create(study=study, rater=raters[1], response=response, topic="Bereavement and loss")
    DistressReport.objects.create(study=study, rater=raters[2], pair=pair)
    WelfareBreak.objects.create(study=study, rater=raters[0])


class Canon:
    """Rows with primary keys dropped and every foreign key (and id in a JSON payload) replaced by the
    canonical form of the row it names, an account by its username: equal for a faithful copy."""

    AUDIT_KEYS = {"user": User, "rater": User, "assigned_to": User, "arm": Arm, "generation_run": GenerationRun}

    def __init__(self, drop=()):
        self.drop, self.memo, self.users = set(drop), {}, set()
        self.named: set = set()  # every (model, id) a row names, directly or through the rows it names
        self.by_class = {t.model.__name__: t.model for t in TABLES} | {User.__name__: User}

    def ref(self, model, pk):
        if pk is None or not model.objects.filter(pk=pk).exists():
            return ("missing", pk)
        if model is User:
            self.users.add(pk)
            return ("user", User.objects.get(pk=pk).username)
        if (model, pk) not in self.memo:
            named, self.named = self.named, set()
            self.memo[model, pk] = (self.row(model.objects.get(pk=pk)), self.named | {(model, pk)})
            self.named = named
        self.named |= self.memo[model, pk][1]
        return self.memo[model, pk][0]

    def row(self, obj) -> tuple:
        out = [type(obj).__name__]
        for f in type(obj)._meta.concrete_fields:
            if f.primary_key or f.attname in self.drop:
                continue
            value = f.value_from_object(obj)
            value = self.ref(f.related_model, value) if f.is_relation else self.payload(obj, f.attname, value)
            out.append((f.attname, json.dumps(value, sort_keys=True, default=repr)))
        return tuple(out)

    def payload(self, obj, name, value):
        if isinstance(obj, Response) and name == "provenance" and "generation_run" in value:
            return {**value, "generation_run": self.ref(GenerationRun, value["generation_run"])}
        if isinstance(obj, GenerationChunk) and name == "keys":
            return [[self.ref(Prompt, key[0]), *key[1:]] for key in value]
        if isinstance(obj, JudgeChunk) and name == "keys":
            return [[self.ref(ResponsePair if obj.mode == "pairs" else Response, key[0]), *key[1:]] for key in value]
        if isinstance(obj, JudgeAnswer) and name == "provenance" and "judge_run" in value:
            return {**value, "judge_run": self.ref(JudgeRun, value["judge_run"])}
        if isinstance(obj, PlaygroundRequest) and name == "outputs":
            return [{**o, "arm_id": self.ref(Arm, o["arm_id"])} for o in value]
        if isinstance(obj, AuditEvent) and name == "object_id" and obj.object_type in self.by_class:
            return self.ref(self.by_class[obj.object_type], int(value))
        if isinstance(obj, AuditEvent) and name in ("before", "after") and isinstance(value, dict):
            out = {k: self.ref(self.AUDIT_KEYS[k], v) if k in self.AUDIT_KEYS else v for k, v in value.items()}
            for key, model in (("response", Response), ("pair", ResponsePair)):
                if key in value:
                    found = model.objects.filter(public_id=value[key]).first()
                    out[key] = self.row(found) if found else value[key]
            return out
        return value


def snapshot(study: Study, drop=(), skip_actions=("study.import",), seen=None) -> dict:
    """Every row of the study's archive tables in canonical form; `seen` collects the (model, id) named."""
    canon = Canon(drop)
    out = {}
    for table in TABLES:
        rows = table.rows(study)
        if table.model is AuditEvent:
            rows = rows.exclude(action__in=skip_actions)
        canon.named = set()
        out[table.name] = sorted(repr(canon.row(obj)) for obj in rows)
        # A copy beside its original shares the adapter (one per owner and hash), and so its training run.
        if seen is not None and table.name not in ("adapters", "training_runs"):
            seen.update(canon.named)
    out[USERS] = sorted((u.username, u.email, u.first_name, u.last_name, u.is_active, u.date_joined.isoformat(),
                         rs.is_researcher(u)) for u in User.objects.filter(id__in=canon.users))
    return out


def row_counts() -> dict:
    return {m._meta.label: m.objects.count() for m in apps.get_models(include_auto_created=True)}


def export(study, path) -> str:
    out = io.StringIO()
    call_command("study_export", study.id, str(path), stdout=out)
    return out.getvalue()


def import_(path, *args) -> tuple[Study, str]:
    out = io.StringIO()
    call_command("study_import", str(path), *args, stdout=out)
    return Study.objects.get(id=int(out.getvalue().split()[-1])), out.getvalue()


def delete_everything(study, keep=("dana-adjudicator",)):
    """What another server lacks: the study, its adapter and training run, and its accounts but `keep`."""
    involved = set(snapshot(study)[USERS])
    # Consents and calibration answers protect their version and item: they go first.
    Consent.objects.filter(study=study).delete()
    CalibrationAnswer.objects.filter(attempt__study=study).delete()
    study.delete()
    Adapter.objects.filter(path=ADAPTER).delete()
    TrainingRun.objects.filter(name="lora").delete()
    User.objects.filter(username__in={u[0] for u in involved} - set(keep)).delete()


def rewrite(path, target, change):
    """A copy of the archive with `change(name, data) -> data` applied to each member."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as copy:
        for name in source.namelist():
            copy.writestr(name, change(name, source.read(name)))
    return target


def test_a_moved_study_arrives_row_for_row(full_study, tmp_path):
    before = snapshot(full_study)
    assert all(before[t.name] for t in TABLES), [t.name for t in TABLES if not before[t.name]]
    printed = export(full_study, tmp_path / "study.zip")
    assert f"study {full_study.id}" in printed and "ratings 12, scores 24" in printed
    assert AuditEvent.objects.filter(study=full_study, action="study.export").count() == 1
    old_id = full_study.id
    delete_everything(full_study)

    copy, printed = import_(tmp_path / "study.zip")
    assert copy.id != old_id and "Accounts created without a password: alice-researcher" in printed
    assert snapshot(copy) == before
    assert not User.objects.get(username="bob-rater").has_usable_password()
    assert "dana-adjudicator=dana-adjudicator" in printed  # an account already here is matched, not copied
    event = AuditEvent.objects.get(study=copy, action="study.import")
    assert event.after["source"]["study_id"] == old_id and event.after["as_new"] is False


def test_a_copy_beside_its_original_has_new_public_ids_and_the_same_rows(full_study, tmp_path):
    generated = ("public_id", "token_sha256", "slug")
    original, copied = set(), set()
    before = snapshot(full_study, drop=generated, seen=original)
    export(full_study, tmp_path / "study.zip")
    users = User.objects.count()
    copy, _ = import_(tmp_path / "study.zip", "--as-new")
    after = snapshot(copy, drop=generated, seen=copied)
    # Rows name rows by content here, so the copy must also name none of the original's rows (ids in
    # foreign keys and audit payloads alike) outside the adapter it shares.
    assert original & copied == set() and TrainingRun.objects.filter(study=copy).count() == 1
    # The adapter is shared, not copied (one per owner and hash), so it still names the original's training run.
    assert set(after.pop("training_runs")) == set(before.pop("training_runs"))
    assert after == before and User.objects.count() == users
    assert not set(copy.prompts.values_list("responses__public_id", flat=True)) & set(
        full_study.prompts.values_list("responses__public_id", flat=True))


def test_a_second_import_of_one_study_is_refused_wherever_it_went(full_study, tmp_path):
    export(full_study, tmp_path / "study.zip")
    with pytest.raises(CommandError, match=f"already here as study {full_study.id}.*--as-new"):
        import_(tmp_path / "study.zip")
    delete_everything(full_study)
    moved, _ = import_(tmp_path / "study.zip")
    with pytest.raises(CommandError, match=f"already here as study {moved.id}"):
        import_(tmp_path / "study.zip")
    # The moved study keeps its origin: an archive of it is still the same study.
    export(moved, tmp_path / "again.zip")
    with zipfile.ZipFile(tmp_path / "again.zip") as again, zipfile.ZipFile(tmp_path / "study.zip") as first:
        assert json.loads(again.read("manifest.json"))["origin"] == json.loads(first.read("manifest.json"))["origin"]
    with pytest.raises(CommandError, match=f"already here as study {moved.id}"):
        import_(tmp_path / "again.zip")


def test_a_damaged_member_is_refused_before_anything_is_written(full_study, tmp_path):
    export(full_study, tmp_path / "study.zip")
    damaged = rewrite(tmp_path / "study.zip", tmp_path / "damaged.zip",
                      lambda name, data: data.replace(b'"value":9', b'"value":8', 1) if "scores" in name else data)
    counts = row_counts()
    with pytest.raises(CommandError, match="Checksum mismatch: tables/scores.jsonl"):
        import_(damaged, "--as-new")
    assert row_counts() == counts


def test_rows_that_break_a_constraint_leave_no_row_behind(full_study, tmp_path):
    export(full_study, tmp_path / "study.zip")
    with zipfile.ZipFile(tmp_path / "study.zip") as archive:
        # A score past its criterion's maximum, with the manifest's checksum made to agree.
        scores = archive.read("tables/scores.jsonl").replace(b'"value":9', b'"value":99', 1)
        manifest = json.loads(archive.read("manifest.json"))
    manifest["tables"]["scores"]["sha256"] = hashlib.sha256(scores).hexdigest()
    members = {"tables/scores.jsonl": scores, "manifest.json": json.dumps(manifest).encode()}

    def out_of_range(name, data):
        return members.get(name, data)

    broken = rewrite(tmp_path / "study.zip", tmp_path / "broken.zip", out_of_range)
    delete_everything(full_study)  # so the import would create accounts, a study, an adapter before the scores
    counts = row_counts()
    with pytest.raises(CommandError, match="do not fit this database; nothing was imported"):
        import_(broken)
    assert row_counts() == counts


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: {**m, "format_version": 2}, "format version 2; this server .* reads version 1"),
    (lambda m: {**m, "format": "something-else"}, "Not a study archive"),
    (lambda m: {**m, "tables": {**m["tables"], "scores": {**m["tables"]["scores"], "fields": ["id", "colour"]}}},
     "scores columns .* differ from this server's"),
])
def test_another_format_or_schema_is_refused(full_study, tmp_path, change, message):
    export(full_study, tmp_path / "study.zip")
    other = rewrite(tmp_path / "study.zip", tmp_path / "other.zip", lambda name, data: json.dumps(
        change(json.loads(data))).encode() if name == "manifest.json" else data)
    counts = row_counts()
    with pytest.raises(CommandError, match=message):
        import_(other, "--as-new")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(CommandError, match="Not a readable zip file"):
        import_(tmp_path / "junk.zip")
    assert row_counts() == counts


def test_accounts_are_matched_by_email_and_a_clash_is_refused(full_study, tmp_path):
    export(full_study, tmp_path / "study.zip")
    delete_everything(full_study)
    robert = UserFactory(username="robert", email="BOB-RATER@uni.example")  # bob, under another name here
    UserFactory(username="erin", email="erin@elsewhere.example")  # someone else called erin
    counts = row_counts()
    with pytest.raises(CommandError, match=r"clash .*erin \(the archive's e-mail erin@uni.example, here erin@else"):
        import_(tmp_path / "study.zip")
    assert row_counts() == counts
    User.objects.filter(username="erin").update(email="")  # no address to disagree with: the same account
    dry = io.StringIO()
    call_command("study_import", str(tmp_path / "study.zip"), "--dry-run", stdout=dry)
    assert "Dry run, nothing written" in dry.getvalue() and "bob-rater=robert" in dry.getvalue()
    assert "created without a password: alice-researcher" in dry.getvalue() and row_counts() == counts
    copy, printed = import_(tmp_path / "study.zip")
    assert "bob-rater=robert" in printed and "erin=erin" in printed
    assert copy.memberships.filter(user=robert, role=Role.RATER).exists()


def test_a_job_that_was_running_can_only_be_resumed_on_the_new_server(full_study, tmp_path):
    GenerationRun.objects.filter(study=full_study).update(status=RunStatus.RUNNING, worker="gpu-1")
    export(full_study, tmp_path / "study.zip")
    copy, _ = import_(tmp_path / "study.zip", "--as-new")
    run = GenerationRun.objects.get(study=copy)
    assert run.status == RunStatus.FAILED and "resume it here" in run.error and run.is_resumable
    assert GenerationRun.objects.get(study=full_study).status == RunStatus.RUNNING


def test_the_commands_name_what_they_cannot_do(tmp_path, study):
    with pytest.raises(CommandError, match="No study with id 0"):
        call_command("study_export", 0, str(tmp_path / "x.zip"))
    with pytest.raises(CommandError, match="No file"):
        call_command("study_import", str(tmp_path / "missing.zip"))
    with pytest.raises(CommandError, match="No account named 'nobody'"):
        call_command("study_export", study.id, str(tmp_path / "x.zip"), "--actor", "nobody")
    assert not list(tmp_path.iterdir())  # a failed export leaves no file


def test_user_payloads_are_listed_for_the_export():
    row = {"object_type": "StudyMembership", "object_id": "4", "before": None, "after": {"user": 7, "note": "x"}}
    assert set(archive_tables.payload_references("audit_events", row)) == {("memberships", "4"), (USERS, 7)}
