"""Generation runs through the Celery task (eager here), with a tiny random model.

Long because one fixture (a study with tiny-model arms) serves generation, its retries, leases, resume and
the playground: they are one job's lifecycle, and splitting would mean importing the fixture across files.
"""

import subprocess
import sys
from datetime import timedelta

import pytest
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone

from evalapp.models import Response
from modelserver import services, tasks
from modelserver.models import GenerationRun, PlaygroundRequest, RunStatus
from modelserver.inference.seeds import request_seed
from modelserver.services import GenerationError, generation_run_create

from ..factories import ArmFactory, PromptFactory
from .workerlike import like_a_worker  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("like_a_worker")]

PROVENANCE_KEYS = {
    "seed",
    "seeding",
    "params",
    "base_sha256",
    "adapter_sha256",
    "chat_template_sha256",
    "versions",
    "device",
    "dtype",
    "quantization",
    "prompt_tokens",
    "output_tokens",
    "seconds",
    "generation_run",
    "finish_reason",
}


@pytest.fixture
def tiny_study(study, tiny_model_dir, tiny_adapter_dir):
    PromptFactory.create_batch(5, study=study)
    PromptFactory(
        study=study,
        external_id="multi",
        messages=[
            {"role": "user", "content": "I can't sleep."},
            {"role": "assistant", "content": "How long has it been?"},
            {"role": "user", "content": "Months."},
        ],
    )
    params = {"max_new_tokens": 12, "temperature": 0.8, "top_p": 0.95, "repetition_penalty": 1.1, "do_sample": True}
    ArmFactory(study=study, label="fine-tuned", base_model=str(tiny_model_dir), adapter=str(tiny_adapter_dir),
               generation_params=params)
    ArmFactory(study=study, label="baseline", base_model=str(tiny_model_dir), adapter="", generation_params=params)
    return study


def start(study, user, capture, **kwargs):
    with capture(execute=True):
        run = generation_run_create(study=study, user=user, **kwargs)
    run.refresh_from_db()
    return run


def test_run_generates_every_response_with_full_provenance(tiny_study, researcher, django_capture_on_commit_callbacks):
    run = start(tiny_study, researcher, django_capture_on_commit_callbacks, samples_per_prompt=2, batch_size=4)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.done == run.total == 6 * 2 * 2
    responses = Response.objects.filter(prompt__study=tiny_study)
    assert responses.count() == 24
    for response in responses:
        assert PROVENANCE_KEYS <= set(response.provenance), PROVENANCE_KEYS - set(response.provenance)
        assert response.provenance["seed"] == request_seed(run.seed, response.prompt.external_id, response.sample_index)
    finetuned = responses.filter(arm__label="fine-tuned").first()
    baseline = responses.filter(arm__label="baseline").first()
    assert finetuned.provenance["adapter_sha256"] and baseline.provenance["adapter_sha256"] is None
    assert finetuned.provenance["base_sha256"] == baseline.provenance["base_sha256"]


def test_both_arms_share_seeds_and_the_adapter_changes_text(tiny_study, researcher, django_capture_on_commit_callbacks):
    start(tiny_study, researcher, django_capture_on_commit_callbacks)
    pairs = {}
    for response in Response.objects.filter(prompt__study=tiny_study).select_related("arm"):
        pairs.setdefault(response.prompt_id, {})[response.arm.label] = response
    assert all(p["fine-tuned"].provenance["seed"] == p["baseline"].provenance["seed"] for p in pairs.values())
    assert any(p["fine-tuned"].text != p["baseline"].text for p in pairs.values())


def test_response_regenerates_from_its_provenance(tiny_study, researcher, django_capture_on_commit_callbacks):
    from modelserver.inference.generation import regenerate
    from modelserver.inference.loading import load_model

    start(tiny_study, researcher, django_capture_on_commit_callbacks, batch_size=3)
    responses = list(Response.objects.filter(prompt__study=tiny_study).select_related("arm", "prompt"))
    for response in responses[:3] + responses[-3:]:
        # A fresh load from the provenance's own references, not the worker's cached copy.
        provenance = response.provenance
        adapter = provenance["adapter"]
        loaded = load_model(provenance["base_ref"], {adapter: response.arm.adapter} if adapter else None)
        again = regenerate(loaded, provenance, response.prompt.messages)
        assert again.text == response.text


def test_both_arms_run_on_one_loaded_copy_of_the_base(tiny_study, researcher, django_capture_on_commit_callbacks):
    from modelserver.inference.cache import _MODEL_CACHE, clear_model_cache

    clear_model_cache()
    start(tiny_study, researcher, django_capture_on_commit_callbacks)
    assert len(_MODEL_CACHE) == 1


def test_rerun_generates_only_what_is_missing(tiny_study, researcher, django_capture_on_commit_callbacks):
    start(tiny_study, researcher, django_capture_on_commit_callbacks)
    kept = dict(Response.objects.values_list("id", "text")[:8])
    Response.objects.exclude(id__in=kept).delete()
    run = start(tiny_study, researcher, django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED and run.done == 12
    assert Response.objects.count() == 12
    assert dict(Response.objects.filter(id__in=kept).values_list("id", "text")) == kept


def test_failure_midway_leaves_whole_chunks_and_resume_completes(
    tiny_study, researcher, django_capture_on_commit_callbacks, monkeypatch, settings
):
    from modelserver.inference import generation

    settings.GENERATION_CHUNK_BATCHES = 1
    real_generate = generation.generate
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("device fell over")
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(generation, "generate", flaky)
    run = start(tiny_study, researcher, django_capture_on_commit_callbacks, batch_size=4)
    assert run.status == RunStatus.FAILED and "device fell over" in run.error
    assert Response.objects.count() == 4 == run.done  # the first chunk, whole; nothing of the second

    with django_capture_on_commit_callbacks(execute=True):
        services.generation_run_resume(run=run)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.done == run.total == 12
    per_key = Response.objects.values("prompt", "arm", "sample_index").annotate(n=Count("id"))
    assert {row["n"] for row in per_key} == {1}


def oom_then_real(monkeypatch, failures: int | None):
    """Make generation raise CUDA's out-of-memory error ``failures`` times (None: always), then work."""
    from modelserver.inference import generation
    from modelserver.inference.errors import TransientGenerationError

    real_generate = generation.generate
    calls = {"n": 0, "healthy": False}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if not calls["healthy"] and (failures is None or calls["n"] <= failures):
            raise TransientGenerationError(f"CUDA out of memory (call {calls['n']})")
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(generation, "generate", flaky)
    return calls


def queued_run(study, user):
    run = GenerationRun.objects.create(study=study, created_by=user, total=12)
    run.arms.set(study.arms.all())
    return run


def test_transient_error_is_retried_and_the_run_completes(tiny_study, researcher, monkeypatch):
    oom_then_real(monkeypatch, failures=1)
    run = queued_run(tiny_study, researcher)
    tasks.generate_responses.apply(args=(run.id,), throw=False)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.attempts == 2 and run.done == 12 and run.error == ""


def test_when_retries_run_out_the_run_fails_with_the_last_error_and_can_resume(tiny_study, researcher, monkeypatch):
    # Bug 1: it stayed QUEUED "Retrying: ..." for good, and no new run could start.
    calls = oom_then_real(monkeypatch, failures=None)
    run = queued_run(tiny_study, researcher)
    result = tasks.generate_responses.apply(args=(run.id,), throw=False)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.finished_at
    assert calls["n"] == run.attempts == tasks.generate_responses.max_retries + 1
    assert f"CUDA out of memory (call {calls['n']})" in run.error and "gave up after 4 tries" in run.error
    assert result.successful()  # the failure is the run's, recorded; the message is done

    calls["healthy"] = True  # the device is back
    resumed = services.generation_run_resume(run=run)
    assert resumed.status == RunStatus.QUEUED
    tasks.generate_responses.apply(args=(run.id,), throw=False)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.done == run.total


def test_a_message_on_its_last_retry_fails_the_run(tiny_study, researcher, monkeypatch):
    oom_then_real(monkeypatch, failures=None)
    run = queued_run(tiny_study, researcher)
    tasks.generate_responses.apply(args=(run.id,), retries=tasks.generate_responses.max_retries, throw=False)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.attempts == 1 and "CUDA out of memory" in run.error
    generation_run_create(study=tiny_study, user=researcher)  # not blocked


def test_claim_is_exclusive_until_the_lease_lapses(tiny_study, researcher, settings):
    run = GenerationRun.objects.create(study=tiny_study, created_by=researcher, total=12)
    assert GenerationRun.claim(run.id, "w1")
    assert not GenerationRun.claim(run.id, "w2")
    GenerationRun.objects.filter(id=run.id).update(
        heartbeat_at=timezone.now() - timedelta(seconds=settings.GENERATION_LEASE_SECONDS + 1)
    )
    assert GenerationRun.claim(run.id, "w2")
    assert not GenerationRun.succeed(run.id, "w1")  # the worker it was taken from cannot overwrite it
    run.refresh_from_db()
    assert run.worker == "w2" and run.attempts == 2 and run.status == RunStatus.RUNNING
    GenerationRun.objects.filter(id=run.id).update(status=RunStatus.SUCCEEDED)
    assert not GenerationRun.claim(run.id, "w3")


def test_redelivered_message_for_a_finished_run_is_a_no_op(tiny_study, researcher, monkeypatch):
    calls = oom_then_real(monkeypatch, failures=0)
    run = queued_run(tiny_study, researcher)
    GenerationRun.objects.filter(id=run.id).update(status=RunStatus.SUCCEEDED, done=12)
    tasks.generate_responses.apply(args=(run.id,), throw=False)
    run.refresh_from_db()
    assert calls["n"] == 0 and run.status == RunStatus.SUCCEEDED and run.attempts == 0


def test_missing_run_row_is_logged_and_skipped(caplog):
    tasks.generate_responses.apply(args=(987654,), throw=False)
    assert "is gone" in caplog.text


def test_one_active_run_per_study_and_clear_errors(study, researcher, tiny_study):
    GenerationRun.objects.create(study=tiny_study, created_by=researcher, total=1)
    with pytest.raises(GenerationError, match="already queued or running") as refused:
        generation_run_create(study=tiny_study, user=researcher)
    assert refused.value.status == 409
    empty = ArmFactory(label="x").study
    with pytest.raises(GenerationError, match="no prompts"):
        generation_run_create(study=empty, user=researcher)


def test_bad_adapter_fails_the_run_with_a_clear_error(tiny_study, researcher, django_capture_on_commit_callbacks, tmp_path):
    tiny_study.arms.filter(label="fine-tuned").update(adapter=str(tmp_path / "no-such-adapter"))
    run = start(tiny_study, researcher, django_capture_on_commit_callbacks)
    assert run.status == RunStatus.FAILED
    assert "no-such-adapter" in run.error and "does not exist" in run.error


def test_study_page_starts_a_run_and_shows_progress(client, tiny_study, researcher, django_capture_on_commit_callbacks):
    client.force_login(researcher)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("generation_start", args=[tiny_study.id]), {"samples_per_prompt": 1, "seed": 3, "batch_size": 8})
    assert response.status_code == 302
    fragment = client.get(reverse("generation_runs_fragment", args=[tiny_study.id])).content.decode()
    assert "12 of 12" in fragment and "Succeeded" in fragment and 'data-active="false"' in fragment
    page = client.get(reverse("study_detail", args=[tiny_study.id])).content.decode()
    assert "12 of 12" in page and "poll.js" in page


def test_failed_run_shows_its_error_and_a_resume_button(client, tiny_study, researcher):
    run = GenerationRun.objects.create(
        study=tiny_study, created_by=researcher, total=12, status=RunStatus.FAILED, error="ModelLoadError: gone"
    )
    client.force_login(researcher)
    fragment = client.get(reverse("generation_runs_fragment", args=[tiny_study.id])).content.decode()
    assert "ModelLoadError: gone" in fragment
    assert reverse("generation_resume", args=[tiny_study.id, run.id]) in fragment


@pytest.mark.parametrize("persona", ["rater", "adjudicator", "outsider"])
def test_generation_pages_are_for_researchers_only(client, personas, tiny_study, persona):
    client.force_login(personas[persona])
    run = GenerationRun.objects.create(study=tiny_study, created_by=personas["researcher"], total=1, status="failed")
    for method, url in [
        ("post", reverse("generation_start", args=[tiny_study.id])),
        ("get", reverse("generation_runs_fragment", args=[tiny_study.id])),
        ("post", reverse("generation_resume", args=[tiny_study.id, run.id])),
        ("post", reverse("arm_add", args=[tiny_study.id])),
        ("get", reverse("playground", args=[tiny_study.id])),
    ]:
        assert getattr(client, method)(url).status_code == 404, url
    assert not GenerationRun.objects.exclude(id=run.id).exists()


def test_playground_answers_with_every_arm(client, tiny_study, researcher, django_capture_on_commit_callbacks):
    client.force_login(researcher)
    conversation = "User: I feel alone.\n\nAssistant: I'm sorry. Tell me more?\n\nUser: Nobody calls me."
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("playground", args=[tiny_study.id]), {"conversation": conversation, "seed": 1})
    item = PlaygroundRequest.objects.get()
    assert response.status_code == 302
    assert item.status == RunStatus.SUCCEEDED, item.error
    assert [m["role"] for m in item.messages] == ["user", "assistant", "user"]
    assert [o["label"] for o in item.outputs] == ["fine-tuned", "baseline"]
    page = client.get(reverse("playground_item", args=[tiny_study.id, item.id])).content.decode()
    assert "fine-tuned" in page and "baseline" in page and item.outputs[0]["text"][:10] in page


def playground_request(study, user, **fields):
    messages = [{"role": "user", "content": "I feel alone."}]
    return PlaygroundRequest.objects.create(study=study, created_by=user, messages=messages, seed=1, **fields)


def test_playground_transient_error_is_retried_and_answers(tiny_study, researcher, monkeypatch):
    # Bug 2: the request was marked FAILED before the error was re-raised, so the retry found nothing to do.
    oom_then_real(monkeypatch, failures=1)
    item = playground_request(tiny_study, researcher)
    tasks.generate_playground.apply(args=(item.id,), throw=False)
    item.refresh_from_db()
    assert item.status == RunStatus.SUCCEEDED, item.error
    assert item.attempts == 2 and [o["label"] for o in item.outputs] == ["fine-tuned", "baseline"]


def test_playground_request_of_a_killed_worker_is_taken_over_after_its_lease(tiny_study, researcher, settings):
    # Bug 5: with no lease, the redelivered message found it RUNNING and left it so for good.
    lapsed = timezone.now() - timedelta(seconds=settings.GENERATION_LEASE_SECONDS + 1)
    item = playground_request(tiny_study, researcher, status=RunStatus.RUNNING, worker="killed@gpu", attempts=1,
                              heartbeat_at=lapsed)
    tasks.generate_playground.apply(args=(item.id,), throw=False)
    item.refresh_from_db()
    assert item.status == RunStatus.SUCCEEDED and item.attempts == 2 and item.worker != "killed@gpu"


def test_playground_rejects_a_conversation_ending_with_the_assistant(client, tiny_study, researcher):
    client.force_login(researcher)
    response = client.post(
        reverse("playground", args=[tiny_study.id]), {"conversation": "User: hi\n\nAssistant: hello", "seed": 0}
    )
    assert response.status_code == 200 and "must end with a user turn" in response.content.decode()
    assert not PlaygroundRequest.objects.exists()


def test_add_arm_checks_the_adapter_directory(client, study, researcher, tmp_path, tiny_adapter_dir):
    client.force_login(researcher)
    data = {"label": "ft", "base_model": "bundled", "adapter": str(tmp_path / "nope"), "system_prompt": "",
            "max_new_tokens": 64, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1}
    client.post(reverse("arm_add", args=[study.id]), data)
    assert not study.arms.exists()
    client.post(reverse("arm_add", args=[study.id]), {**data, "adapter": str(tiny_adapter_dir)})
    arm = study.arms.get()
    assert arm.generation_params == {"max_new_tokens": 64, "temperature": 0.7, "top_p": 0.9,
                                     "repetition_penalty": 1.1, "do_sample": True}


def test_web_process_never_imports_torch():
    code = (
        "import os, sys, django;"
        "os.environ['DJANGO_SETTINGS_MODULE']='evalapp.settings.test';"
        "django.setup();"
        "import evalapp.urls, evalapp.views.studies, evalapp.views.generation, modelserver.tasks, modelserver.services;"
        "from django.urls import get_resolver; get_resolver().url_patterns;"
        "bad=[m for m in ('torch','transformers','peft') if m in sys.modules];"
        "assert not bad, bad; print('clean')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "clean" in result.stdout


def test_resume_buttons_requeue_failed_jobs_only(client, tiny_study, researcher, django_capture_on_commit_callbacks):
    from modelserver.models import TrainingRun

    run = GenerationRun.objects.create(study=tiny_study, created_by=researcher, total=12, status=RunStatus.FAILED)
    training = TrainingRun.objects.create(study=tiny_study, created_by=researcher, name="t", config={},
                                          out_dir="x", status=RunStatus.SUCCEEDED)
    client.force_login(researcher)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        client.post(reverse("generation_resume", args=[tiny_study.id, run.id]))
        response = client.post(reverse("training_resume", args=[tiny_study.id, training.id]), follow=True)
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and len(callbacks) == 1  # queued after commit, once
    assert "Only a failed training" in response.content.decode()
    assert TrainingRun.objects.get(id=training.id).status == RunStatus.SUCCEEDED


def test_a_queued_run_whose_message_was_lost_can_be_resumed(tiny_study, researcher, settings,
                                                            django_capture_on_commit_callbacks):
    """A queued run that no worker has touched for a whole lease (the broker lost its message, or a retry's
    message never came back) would block the study's generation for good: it is resumable, and shows it."""
    run = queued_run(tiny_study, researcher)
    assert not run.is_resumable and not GenerationRun.requeue(run.id)  # just queued: its message is on its way
    long_ago = timezone.now() - timedelta(seconds=settings.GENERATION_LEASE_SECONDS + 1)
    GenerationRun.objects.filter(id=run.id).update(created_at=long_ago)
    run.refresh_from_db()
    assert run.is_resumable
    with django_capture_on_commit_callbacks(execute=True):
        services.generation_run_resume(run=run)  # queues a new message, which runs it (eager here)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.done == 12
    # A run given back for a retry is stale once a lease passes without its retry message.
    GenerationRun.objects.filter(id=run.id).update(status=RunStatus.QUEUED, heartbeat_at=long_ago)
    assert GenerationRun.objects.get(id=run.id).is_resumable
    GenerationRun.objects.filter(id=run.id).update(heartbeat_at=timezone.now())
    assert not GenerationRun.objects.get(id=run.id).is_resumable


def test_the_study_page_offers_resume_for_every_resumable_run(client, tiny_study, researcher, settings):
    lapsed = timezone.now() - timedelta(seconds=settings.GENERATION_LEASE_SECONDS + 1)
    GenerationRun.objects.create(study=tiny_study, created_by=researcher, total=12, status=RunStatus.RUNNING,
                                 heartbeat_at=lapsed, worker="gone")
    client.force_login(researcher)
    page = client.get(reverse("generation_runs_fragment", args=[tiny_study.id])).content.decode()
    assert "Resume" in page
