"""A researcher deletes a study: every row of it in every table and every file trained for it go; another
study, the accounts and an adapter another study still uses stay; a site-level audit event says who."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.db.models import ForeignKey, OneToOneField
from django.urls import reverse
from django.utils import timezone


from evalapp import results
from evalapp.errors import ServiceError
from evalapp.models import AuditEvent, Study
from evalapp.results import N_BOOT, study_results
from evalapp.services import arm_create, study_delete
from modelserver.models import Adapter, GenerationRun, RunStatus, TrainingRun
from raters.models import Role

from ..factories import MembershipFactory, PromptFactory, RatingFactory, ResponseFactory, UserFactory
from .test_study_archive import full_study, models_under_study, snapshot  # noqa: F401  (full_study: a fixture)

pytestmark = pytest.mark.django_db
User = get_user_model()


def paths_to_study(model, seen=()) -> list[str]:
    """Every lookup from `model` to Study along foreign keys ("response__prompt__study")."""
    if model is Study:
        return ["id"]
    out = []
    for f in model._meta.concrete_fields:
        if isinstance(f, ForeignKey | OneToOneField) and f.related_model not in seen and f.related_model is not User:
            for rest in paths_to_study(f.related_model, (*seen, model)):
                out.append(f.name if rest == "id" else f"{f.name}__{rest}")
    return out


def rows_of(study_id: int) -> dict[str, set]:
    """The primary keys of every row, in every table, with a foreign-key path to the study."""
    out = {}
    for model in models_under_study() - {Study}:
        pks = set()
        for path in paths_to_study(model):
            pks |= set(model.objects.filter(**{path: study_id}).values_list("pk", flat=True))
        out[model._meta.label] = pks
    out["evalapp.Study"] = set(Study.objects.filter(id=study_id).values_list("pk", flat=True))
    return out


@pytest.fixture
def adapter_dir(settings, tmp_path):
    settings.EMPATHEVAL_ADAPTER_DIR = str(tmp_path / "adapters")
    return tmp_path / "adapters"


def trained(study, owner, root: Path, name: str, with_adapter: bool = True):
    """A training run of `study` with its folder (checkpoints, weights) and, when it finished, its adapter."""
    out = root / f"training-run-{name}"
    (out / "checkpoint-10").mkdir(parents=True)
    (out / "adapter_model.safetensors").write_bytes(b"weights")
    run = TrainingRun.objects.create(created_by=owner, study=study, name=name, config={}, out_dir=str(out),
                                     status=RunStatus.SUCCEEDED if with_adapter else RunStatus.FAILED)
    if with_adapter:
        Adapter.objects.create(name=name, created_by=owner, training_run=run, path=str(out), base_ref="bundled",
                               base_sha256="c" * 64, adapter_sha256=name.ljust(64, "0"))
    return out


@pytest.fixture
def two_studies(full_study, researcher, outsider, adapter_dir):  # noqa: F811
    own = trained(full_study, researcher, adapter_dir, "own")
    failed = trained(full_study, researcher, adapter_dir, "failed", with_adapter=False)
    shared = trained(full_study, researcher, adapter_dir, "shared")
    other = Study.objects.get(owner=outsider)
    arm = arm_create(study=other, label="borrowed", adapter=str(shared))
    rater = MembershipFactory(study=other, user=UserFactory(username="olga"), role=Role.RATER).user
    RatingFactory(response=ResponseFactory(prompt=PromptFactory(study=other), arm=arm), rater=rater)
    AuditEvent.objects.create(study=other, actor=outsider, action="study.rubric", object_type="Study",
                              object_id=str(other.id))
    return full_study, other, {"own": own, "failed": failed, "shared": shared}


def test_deleting_a_study_leaves_nothing_of_it_and_touches_nothing_else(two_studies, researcher,
                                                                        django_capture_on_commit_callbacks):
    study, other, folders = two_studies
    study_id, title = study.id, study.title
    before, counts = rows_of(study_id), {m._meta.label: m.objects.count() for m in apps.get_models(include_auto_created=True)}
    assert sum(map(len, before.values())) > 60 and all(before[label] for label in (
        "evalapp.Score", "raters.GoldAnswer", "raters.Invitation", "modelserver.GenerationChunk", "evalapp.AuditEvent",
        # The pairwise phase's rows: its judgments and adjudications hold their users with PROTECT.
        "evalapp.PairwisePhase", "evalapp.ResponsePair", "evalapp.PairJudgment", "evalapp.PairVerdict",
        "evalapp.PairAdjudication", "raters.GoldPair", "raters.PairAssignment", "raters.PairGoldAnswer"))
    other_before, users = snapshot(other), set(User.objects.values_list("id", flat=True))
    shared = Adapter.objects.get(name="shared")
    study_results(study, n_boot=N_BOOT)  # its numbers, computed and stored (the task runs eagerly in tests)
    computed = set(results.ResultsComputation.objects.filter(study=study).values_list("pk", flat=True))
    assert computed and before["evalapp.ResultsComputation"] == set()  # before was taken without them
    before["evalapp.ResultsComputation"] = computed
    counts["evalapp.ResultsComputation"] += len(computed)

    with django_capture_on_commit_callbacks(execute=True):
        report = study_delete(study=study, actor=researcher)

    after = rows_of(study_id)
    assert {label: pks for label, pks in after.items() if pks} == {}
    assert not results.ResultsComputation.objects.filter(pk__in=computed).exists()
    # Every row that was the study's is gone, but the shared adapter (and its run, no longer the study's).
    survivors = {label: {pk for pk in pks if apps.get_model(label).objects.filter(pk=pk).exists()}
                 for label, pks in before.items()}
    assert {label: pks for label, pks in survivors.items() if pks} == {
        "modelserver.Adapter": {shared.id}, "modelserver.TrainingRun": {shared.training_run_id}}
    assert TrainingRun.objects.get(id=shared.training_run_id).study_id is None
    # Nothing else went: the counts fell by exactly the study's rows; one audit event came.
    for model in apps.get_models(include_auto_created=True):
        label = model._meta.label
        gone = len(before.get(label, set()) - survivors.get(label, set()))
        assert model.objects.count() == counts[label] - gone + (label == "evalapp.AuditEvent"), label
    # The other study is as it was, row for row; its borrowed adapter's run only stopped naming the deleted study.
    other_after = snapshot(other)
    for name in ("adapters", "training_runs"):
        assert len(other_after.pop(name)) == len(other_before.pop(name)) == 1
    assert other_after == other_before and set(User.objects.values_list("id", flat=True)) == users
    # Its files are gone; the shared adapter's are not; nothing outside the adapter folder was touched.
    assert not folders["own"].exists() and not folders["failed"].exists()
    assert (folders["shared"] / "adapter_model.safetensors").read_bytes() == b"weights"
    assert sorted(report.paths_removed) == sorted([str(folders["own"])] * 2 + [str(folders["failed"])])
    assert report.adapters_kept == [str(folders["shared"])]
    event = AuditEvent.objects.get(action="study.delete")
    assert event.study_id is None and event.actor == researcher and event.object_id == str(study_id)
    assert event.after["title"] == title and event.after["rows"]["ratings"] > 0
    assert event.after["rows"]["pair_judgments"] > 0 and event.after["rows"]["pair_adjudications"] == 1


def test_only_the_owner_deletes_and_not_while_a_job_runs(two_studies, researcher):
    study, _, _ = two_studies
    carol = User.objects.get(username="carol")  # a co-researcher of the study
    with pytest.raises(ServiceError, match="owner") as refused:
        study_delete(study=study, actor=carol)
    assert refused.value.status == 403
    run = GenerationRun.objects.create(study=study, created_by=researcher, status=RunStatus.RUNNING, total=1,
                                       heartbeat_at=timezone.now())
    with pytest.raises(ServiceError, match="generation job") as refused:
        study_delete(study=study, actor=researcher)
    assert refused.value.status == 409 and Study.objects.filter(id=study.id).exists()
    # A job whose worker stopped reporting holds nothing up: it can only be resumed, and no one will.
    GenerationRun.objects.filter(id=run.id).update(heartbeat_at=timezone.now() - timedelta(days=1))
    study_delete(study=study, actor=researcher)
    assert not Study.objects.filter(id=study.id).exists()


def test_the_delete_page_asks_for_the_title_and_only_the_owner_sees_it(client, two_studies, researcher):
    study, _, _ = two_studies
    url = reverse("study_delete", args=[study.id])
    client.force_login(User.objects.get(username="carol"))
    assert client.get(url).status_code == 403 and client.post(url, {"title": study.title}).status_code == 403
    assert "delete-link" not in client.get(reverse("study_detail", args=[study.id])).content.decode()
    client.force_login(researcher)
    assert "delete-link" in client.get(reverse("study_detail", args=[study.id])).content.decode()
    page = client.get(url)
    assert page.status_code == 200 and "Type the study's title" in page.content.decode()
    wrong = client.post(url, {"title": "Not it"}, follow=True)
    assert "exactly as shown" in wrong.content.decode() and Study.objects.filter(id=study.id).exists()
    done = client.post(url, {"title": study.title})
    assert done.status_code == 302 and done["Location"] == reverse("study_list")
    assert not Study.objects.filter(id=study.id).exists()
    assert client.get(url).status_code == 404
