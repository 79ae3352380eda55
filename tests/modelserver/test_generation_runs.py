"""Generation runs through the Celery task (eager here), with a tiny random model.

Long because one fixture (a study with tiny-model arms) serves generation, its chunks, retries, leases, resume
and the playground: they are one job's lifecycle, and splitting would mean importing the fixture across files.
Several workers sharing one run are simulated here by claiming its chunks under different names; the real
thing (two `celery worker` processes) is in tests/integration/test_celery_generation.py.
"""

import subprocess
import sys
from datetime import timedelta

import pytest
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone

from evalapp.models import Response
from modelserver import dispatch, services, tasks
from modelserver.models import GenerationChunk, GenerationRun, PlaygroundRequest, RunStatus
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
    "generation_chunk",
    "finish_reason",
    "worker",
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
    # 12 keys per arm in chunks of GENERATION_CHUNK_BATCHES (2) x batch_size (4): 8 + 4, per arm.
    chunks = list(run.chunks.order_by("index"))
    assert [(c.arm.label, c.size, c.status) for c in chunks] == [
        ("fine-tuned", 8, "succeeded"), ("fine-tuned", 4, "succeeded"),
        ("baseline", 8, "succeeded"), ("baseline", 4, "succeeded")]
    assert sorted(responses.values_list("provenance__generation_chunk", flat=True)) == [0] * 8 + [1] * 4 + [2] * 8 + [3] * 4
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
    assert sum(run.chunks.values_list("size", flat=True)) == 4  # chunks hold only what was missing
    again = start(tiny_study, researcher, django_capture_on_commit_callbacks)
    assert again.status == RunStatus.SUCCEEDED and again.done == 12 and not again.chunks.exists()


def test_a_run_is_split_into_chunks_each_queued_on_its_models_queue(tiny_study, researcher, settings, monkeypatch,
                                                                    django_capture_on_commit_callbacks):
    """One message per chunk, after commit, on the queue GENERATION_QUEUES gives the arm's base model."""
    settings.GENERATION_QUEUES = {"*/no-such-70B*": "gpu-xl", "bundled": "gpu-large"}
    ArmFactory(study=tiny_study, label="big", base_model="bundled")
    sent = []
    settings.CELERY_TASK_ALWAYS_EAGER = False  # as with a broker
    monkeypatch.setattr(tasks.generate_chunk, "apply_async", lambda args, queue: sent.append((args[0], queue)))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run = generation_run_create(study=tiny_study, user=researcher, batch_size=2)
    assert run.status == RunStatus.QUEUED and run.done == 0 and run.total == 18 and not sent
    chunks = list(run.chunks.order_by("index"))
    assert [c.size for c in chunks] == [4, 2] * 3 and {c.status for c in chunks} == {RunStatus.QUEUED}
    assert [c.queue for c in chunks] == ["gpu"] * 4 + ["gpu-large"] * 2
    keys = [(c.arm_id, *key) for c in chunks for key in c.keys]
    assert sorted(keys) == sorted((arm.id, prompt.id, 0) for arm in tiny_study.arms.all()
                                  for prompt in tiny_study.prompts.all())  # every response once
    callbacks[0]()
    assert sent == [(c.id, c.queue) for c in chunks]
    assert dispatch.queue_for_model("/models/no-such-70B-Instruct") == "gpu-xl"
    assert dispatch.queue_for_models(["/small", "bundled"]) == "gpu-large"


def test_the_split_does_not_change_the_texts(tiny_study, researcher, django_capture_on_commit_callbacks, settings):
    """Each request's seed makes its text, not the chunk it lands in (CPU fp32)."""
    start(tiny_study, researcher, django_capture_on_commit_callbacks, batch_size=2)
    texts = lambda: {(p, a): t for p, a, t in Response.objects.values_list("prompt_id", "arm_id", "text")}  # noqa: E731
    whole = texts()
    Response.objects.all().delete()
    settings.GENERATION_CHUNK_BATCHES = 1
    run = start(tiny_study, researcher, django_capture_on_commit_callbacks, batch_size=2)
    assert run.chunks.count() == 6 and len(whole) == 12
    assert texts() == whole


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
    assert run.status == RunStatus.FAILED and "device fell over" in run.error and run.error.startswith("Chunk 2 of 4")
    assert Response.objects.count() == 4 == run.done  # the first chunk, whole; nothing of the second
    chunks = list(run.chunks.order_by("index").values_list("status", "attempts", "error"))
    assert chunks[0] == ("succeeded", 1, "") and chunks[1][:2] == ("failed", 1)
    # The run stopped there: the chunks not started are not run (they would repeat the error).
    assert chunks[2:] == [("failed", 0, "Not started: chunk 2 of 4 failed.")] * 2 and calls["n"] == 2

    with django_capture_on_commit_callbacks(execute=True):
        services.generation_run_resume(run=run)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.done == run.total == 12 and run.error == ""
    # Resume queued the three chunks that had not succeeded, and only those.
    assert list(run.chunks.order_by("index").values_list("attempts", flat=True)) == [1, 2, 1, 1]
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


def queued_run(study, user, **kwargs):
    """A run as a worker finds it: split into chunks, its messages not delivered yet (``deliver``)."""
    run = generation_run_create(study=study, user=user, **kwargs)  # on_commit never fires in these tests
    assert run.status == RunStatus.QUEUED and run.chunks.count() == (2 if not kwargs else 6)  # per arm: 6 keys
    return run


def deliver(run, **options):
    """Each chunk's message, in order, as a worker receives it; the results."""
    ids = list(run.chunks.order_by("index").values_list("id", flat=True))
    return [tasks.generate_chunk.apply(args=(chunk_id,), throw=False, **options) for chunk_id in ids]


def chunk_rows(run):
    return list(run.chunks.order_by("index").values_list("status", "attempts"))


def test_transient_error_is_retried_and_the_run_completes(tiny_study, researcher, monkeypatch):
    oom_then_real(monkeypatch, failures=1)
    run = queued_run(tiny_study, researcher)
    deliver(run)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.attempts == 2 and run.done == 12 and run.error == ""
    assert chunk_rows(run) == [("succeeded", 2), ("succeeded", 1)]  # the first chunk was tried again


def test_when_retries_run_out_the_run_fails_with_the_last_error_and_can_resume(tiny_study, researcher, monkeypatch):
    # Bug 1: it stayed QUEUED "Retrying: ..." for good, and no new run could start.
    calls = oom_then_real(monkeypatch, failures=None)
    run = queued_run(tiny_study, researcher)
    results = deliver(run)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.finished_at
    assert calls["n"] == run.attempts == tasks.generate_chunk.max_retries + 1
    assert f"CUDA out of memory (call {calls['n']})" in run.error and "gave up after 4 tries" in run.error
    assert all(result.successful() for result in results)  # the failure is the run's, recorded; the message is done
    assert chunk_rows(run) == [("failed", 4), ("failed", 0)]  # the second chunk's message found it cancelled

    calls["healthy"] = True  # the device is back
    resumed = services.generation_run_resume(run=run)
    assert resumed.status == RunStatus.QUEUED and chunk_rows(run) == [("queued", 4), ("queued", 0)]
    deliver(run)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.done == run.total


def test_a_message_on_its_last_retry_fails_the_run(tiny_study, researcher, monkeypatch):
    oom_then_real(monkeypatch, failures=None)
    run = queued_run(tiny_study, researcher)
    deliver(run, retries=tasks.generate_chunk.max_retries)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.attempts == 1 and "CUDA out of memory" in run.error
    generation_run_create(study=tiny_study, user=researcher)  # not blocked


def test_claim_is_exclusive_until_the_lease_lapses(tiny_study, researcher, settings):
    run = queued_run(tiny_study, researcher)
    chunk = run.chunks.first()
    assert GenerationChunk.claim(chunk.id, "w1")
    assert not GenerationChunk.claim(chunk.id, "w2")
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.worker == "w1" and run.started_at
    GenerationChunk.objects.filter(id=chunk.id).update(
        heartbeat_at=timezone.now() - timedelta(seconds=settings.GENERATION_LEASE_SECONDS + 1)
    )
    assert GenerationChunk.claim(chunk.id, "w2")
    assert not GenerationChunk.succeed(chunk.id, "w1")  # the worker it was taken from cannot overwrite it
    chunk.refresh_from_db()
    run.refresh_from_db()
    assert chunk.worker == "w2" and chunk.attempts == 2 and chunk.status == RunStatus.RUNNING
    assert run.worker == "w2" and run.attempts == 2 and run.status == RunStatus.RUNNING
    assert GenerationChunk.succeed(chunk.id, "w2")
    assert not GenerationChunk.claim(chunk.id, "w3")


def test_two_workers_share_a_run_and_it_ends_with_its_last_chunk(client, tiny_study, researcher):
    run = queued_run(tiny_study, researcher, batch_size=1)  # 3 chunks per arm
    first, second, third, *rest = run.chunks.order_by("index").values_list("id", flat=True)
    assert GenerationChunk.claim(first, "gpu@a") and GenerationChunk.claim(second, "gpu@b")
    client.force_login(researcher)
    fragment = client.get(reverse("generation_runs_fragment", args=[tiny_study.id])).content.decode()
    assert '<td class="run-worker">gpu@a, gpu@b</td>' in fragment and "Running" in fragment
    assert GenerationChunk.succeed(first, "gpu@a")
    assert GenerationRun.objects.get(id=run.id).status == RunStatus.RUNNING  # five chunks to go
    for chunk_id in [third, *rest]:
        assert GenerationChunk.claim(chunk_id, "gpu@a") and GenerationChunk.succeed(chunk_id, "gpu@a")
    assert GenerationRun.objects.get(id=run.id).status == RunStatus.RUNNING  # gpu@b still holds one
    assert GenerationChunk.succeed(second, "gpu@b")
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.finished_at
    fragment = client.get(reverse("generation_runs_fragment", args=[tiny_study.id])).content.decode()
    assert '<td class="run-worker"><span class="muted">gpu@a, gpu@b</span></td>' in fragment


def test_a_chunk_failing_while_another_runs_fails_the_run_when_that_one_ends(tiny_study, researcher):
    run = queued_run(tiny_study, researcher, batch_size=1)
    first, second, *queued = run.chunks.order_by("index").values_list("id", flat=True)
    assert GenerationChunk.claim(first, "gpu@a") and GenerationChunk.claim(second, "gpu@b")
    assert GenerationChunk.fail(first, "gpu@a", "RuntimeError: boom")
    run.refresh_from_db()
    # Still running (gpu@b's chunk is in progress: a new run now would race it), the error already shown.
    assert run.status == RunStatus.RUNNING and run.error == "Chunk 1 of 6: RuntimeError: boom"
    assert set(GenerationChunk.objects.filter(id__in=queued).values_list("status", flat=True)) == {"failed"}
    assert not GenerationChunk.claim(queued[0], "gpu@a")  # cancelled: its message finds nothing to do
    assert GenerationChunk.succeed(second, "gpu@b")
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "boom" in run.error and run.is_resumable
    assert [c for c, _ in GenerationRun.requeue_chunks(run.id)] == [first, *queued]  # not the one that succeeded


def test_redelivered_message_for_a_finished_chunk_is_a_no_op(tiny_study, researcher, monkeypatch):
    run = queued_run(tiny_study, researcher)
    deliver(run)
    calls = oom_then_real(monkeypatch, failures=0)
    deliver(run)
    run.refresh_from_db()
    assert calls["n"] == 0 and run.status == RunStatus.SUCCEEDED and chunk_rows(run) == [("succeeded", 1)] * 2


def test_a_chunk_whose_rows_were_written_before_its_worker_died_is_not_generated_again(
        tiny_study, researcher, monkeypatch, settings):
    run = queued_run(tiny_study, researcher)
    deliver(run)
    chunk = run.chunks.first()
    lapsed = timezone.now() - timedelta(seconds=settings.GENERATION_LEASE_SECONDS + 1)
    # Its rows are committed, then the worker died before marking it done.
    GenerationChunk.objects.filter(id=chunk.id).update(status=RunStatus.RUNNING, heartbeat_at=lapsed)
    GenerationRun.objects.filter(id=run.id).update(status=RunStatus.RUNNING, heartbeat_at=lapsed)
    calls = oom_then_real(monkeypatch, failures=0)
    tasks.generate_chunk.apply(args=(chunk.id,), throw=False)
    run.refresh_from_db()
    assert calls["n"] == 0 and run.status == RunStatus.SUCCEEDED and chunk_rows(run)[0] == ("succeeded", 2)


def test_a_message_for_a_chunk_a_live_worker_holds_comes_back_on_its_own_queue(tiny_study, researcher, settings):
    """Not on the route's gpu queue: a big model's chunk must stay with the bigger card's workers."""
    run = queued_run(tiny_study, researcher)
    chunk = run.chunks.first()
    assert GenerationChunk.claim(chunk.id, "gpu-large@other")
    sent = []

    class Request:
        hostname, is_eager, retries = "gpu-large@me", False, 0
        delivery_info = {"exchange": "", "routing_key": "gpu-large"}  # as Redis delivers it

    class Task:
        request, max_retries = Request(), 3

        def apply_async(self, **options):
            sent.append(options)

    tasks.run_leased_job(Task(), GenerationChunk, chunk.id, services.generation_chunk_execute)
    [again] = sent
    assert again["args"] == (chunk.id,) and again["queue"] == "gpu-large"
    assert settings.GENERATION_LEASE_SECONDS - 5 < again["countdown"] <= settings.GENERATION_LEASE_SECONDS + 1


def test_missing_chunk_row_is_logged_and_skipped(caplog):
    tasks.generate_chunk.apply(args=(987654,), throw=False)
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
    run.arms.set(tiny_study.arms.all())
    training = TrainingRun.objects.create(study=tiny_study, created_by=researcher, name="t", config={},
                                          out_dir="x", status=RunStatus.SUCCEEDED)
    client.force_login(researcher)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        client.post(reverse("generation_resume", args=[tiny_study.id, run.id]))
        response = client.post(reverse("training_resume", args=[tiny_study.id, training.id]), follow=True)
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and len(callbacks) == 1  # queued after commit, once
    # A run from before chunks (none of its own) is split when it is resumed.
    assert run.chunks.count() == 2 and run.done == 0
    assert "Only a failed training" in response.content.decode()
    assert TrainingRun.objects.get(id=training.id).status == RunStatus.SUCCEEDED


def test_a_queued_run_whose_message_was_lost_can_be_resumed(tiny_study, researcher, settings,
                                                            django_capture_on_commit_callbacks):
    """A queued run that no worker has touched for a whole lease (the broker lost its message, or a retry's
    message never came back) would block the study's generation for good: it is resumable, and shows it."""
    run = queued_run(tiny_study, researcher)
    assert not run.is_resumable and GenerationRun.requeue_chunks(run.id) is None  # its messages are on their way
    long_ago = timezone.now() - timedelta(seconds=settings.GENERATION_LEASE_SECONDS + 1)
    GenerationRun.objects.filter(id=run.id).update(created_at=long_ago)
    run.refresh_from_db()
    assert run.is_resumable
    with django_capture_on_commit_callbacks(execute=True):
        services.generation_run_resume(run=run)  # queues a new message per chunk, which runs it (eager here)
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
