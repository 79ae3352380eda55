"""Generation through real `celery worker` processes, Redis and PostgreSQL: one worker, two sharing a
study's chunks, a killed one, and two queues (a big model's chunks on the worker of the bigger card)."""

import shutil
from datetime import timedelta

import pytest
from django.db.models import Count
from django.utils import timezone

from evalapp.models import Response
from modelserver.heartbeats import queue_status
from modelserver.models import GenerationChunk, GenerationRun, RunStatus
from modelserver.services import generation_run_create

from ..factories import ArmFactory, PromptFactory
from .conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def one_batch_chunks(settings):
    # The chunks are cut here, where the run is created: one batch each, so a run has many.
    settings.GENERATION_CHUNK_BATCHES = 1


def make_study(study, model_dirs, n_prompts, max_new_tokens):
    base, adapter = model_dirs
    PromptFactory.create_batch(n_prompts, study=study)
    params = {"max_new_tokens": max_new_tokens, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.0}
    ArmFactory(study=study, label="fine-tuned", base_model=str(base), adapter=str(adapter), generation_params=params)
    ArmFactory(study=study, label="baseline", base_model=str(base), generation_params=params)
    return study


def run_state(run_id):
    return GenerationRun.objects.values("status", "done", "total", "error", "worker", "attempts").get(id=run_id)


def finished(run_id):
    state = run_state(run_id)
    return state if state["status"] in (RunStatus.SUCCEEDED, RunStatus.FAILED) else None


def chunks(run_id, **filters):
    return list(GenerationChunk.objects.filter(run_id=run_id, **filters).order_by("index")
                .values("id", "status", "worker", "attempts", "queue", "arm__label"))


def just_claimed_by(run_id, worker):
    """A chunk this worker claimed moments ago: killed now, it dies in the middle of that chunk."""
    recently = timezone.now() - timedelta(seconds=0.05)
    return [c for c in chunks(run_id, status="running", started_at__gte=recently) if worker.owns(c["worker"])]


def assert_one_response_per_key(study, expected):
    per_key = Response.objects.filter(prompt__study=study).values("prompt", "arm", "sample_index").annotate(n=Count("id"))
    assert len(per_key) == expected
    assert {row["n"] for row in per_key} == {1}


def response_workers(study) -> dict[str, int]:
    rows = Response.objects.filter(prompt__study=study).values("provenance__worker").annotate(n=Count("id"))
    return {row["provenance__worker"]: row["n"] for row in rows}


def test_worker_generates_a_study(study, researcher, integration_model_dirs, worker_factory):
    make_study(study, integration_model_dirs, n_prompts=4, max_new_tokens=8)
    worker = worker_factory()
    run = generation_run_create(study=study, user=researcher, samples_per_prompt=2, batch_size=4)
    state = wait_for(lambda: finished(run.id), 120, interval=0.2, message=worker.output)
    assert state["status"] == RunStatus.SUCCEEDED, (state, worker.output())
    assert state["done"] == state["total"] == 16
    assert worker.owns(state["worker"])
    assert [(c["status"], c["attempts"], worker.owns(c["worker"])) for c in chunks(run.id)] == [("succeeded", 1, True)] * 4
    assert_one_response_per_key(study, 16)


def test_killed_worker_midway_then_a_new_one_finishes_without_duplicates(
    study, researcher, integration_model_dirs, worker_factory
):
    make_study(study, integration_model_dirs, n_prompts=16, max_new_tokens=64)
    first = worker_factory()
    run = generation_run_create(study=study, user=researcher, batch_size=2)
    total = run.total
    wait_for(lambda: 0 < run_state(run.id)["done"] < total // 2 and just_claimed_by(run.id, first), 120,
             interval=0.01, message=first.output)
    first.kill()
    killed_at = run_state(run.id)
    held = chunks(run.id, status="running")
    assert killed_at["status"] == RunStatus.RUNNING and 0 < killed_at["done"] < total, killed_at
    assert len(held) == 1 and first.owns(held[0]["worker"]), held

    second = worker_factory()
    state = wait_for(lambda: finished(run.id), 240, interval=0.2,
                     message=lambda: second.output() + str(run_state(run.id)))
    assert state["status"] == RunStatus.SUCCEEDED, (state, second.output())
    assert state["done"] == total and state["attempts"] == 2
    # The killed worker's chunk was taken over (its message came back) and generated once more, by the second.
    [taken_over] = [c for c in chunks(run.id) if c["id"] == held[0]["id"]]
    assert taken_over["attempts"] == 2 and second.owns(taken_over["worker"])
    assert {c["status"] for c in chunks(run.id)} == {"succeeded"}
    assert_one_response_per_key(study, total)


def test_two_workers_share_a_study_and_one_finishes_when_the_other_is_killed(
    study, researcher, integration_model_dirs, worker_factory
):
    make_study(study, integration_model_dirs, n_prompts=16, max_new_tokens=64)
    a, b = worker_factory(), worker_factory()
    wait_for(lambda: queue_status("gpu")["alive"] == 2, 60, interval=0.2, message=lambda: a.output() + b.output())
    run = generation_run_create(study=study, user=researcher, batch_size=2)
    total, n_chunks = run.total, run.chunks.count()
    assert n_chunks == 16

    def both_busy():
        done = chunks(run.id, status="succeeded")
        return (any(a.owns(c["worker"]) for c in done) and any(b.owns(c["worker"]) for c in done)
                and len(done) <= n_chunks - 4 and just_claimed_by(run.id, a))

    wait_for(both_busy, 120, interval=0.01, message=lambda: a.output() + b.output() + str(chunks(run.id)))
    a.kill()
    held_by_a = [c for c in chunks(run.id, status="running") if a.owns(c["worker"])]
    done_by_a = {c["id"] for c in chunks(run.id, status="succeeded") if a.owns(c["worker"])}
    assert len(held_by_a) == 1, held_by_a

    state = wait_for(lambda: finished(run.id), 240, interval=0.2, message=lambda: b.output() + str(chunks(run.id)))
    assert state["status"] == RunStatus.SUCCEEDED and state["done"] == total, (state, b.output())
    final = chunks(run.id)
    assert {c["status"] for c in final} == {"succeeded"}
    # Every chunk a had not finished was done by b, a's chunk in progress on a second try.
    assert all(b.owns(c["worker"]) for c in final if c["id"] not in done_by_a)
    assert [c["attempts"] for c in final if c["id"] == held_by_a[0]["id"]] == [2]
    writers = response_workers(study)
    assert len(writers) == 2 and sum(writers.values()) == total, writers  # both wrote responses
    assert_one_response_per_key(study, total)


@pytest.fixture
def big_model_dir(integration_model_dirs, tmp_path):
    # The same tiny weights under a name that GENERATION_QUEUES sends to the bigger card.
    return shutil.copytree(integration_model_dirs[0], tmp_path / "tiny-70B")


def test_a_big_models_chunks_go_to_the_worker_of_its_queue(
    study, researcher, integration_model_dirs, big_model_dir, worker_factory, settings
):
    settings.GENERATION_QUEUES = {"*-70B": "gpu-large"}
    base, _ = integration_model_dirs
    PromptFactory.create_batch(4, study=study)
    params = {"max_new_tokens": 8, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.0}
    ArmFactory(study=study, label="small", base_model=str(base), generation_params=params)
    ArmFactory(study=study, label="big", base_model=str(big_model_dir), generation_params=params)
    small, large = worker_factory(queues="gpu"), worker_factory(queues="gpu-large")
    run = generation_run_create(study=study, user=researcher, batch_size=2)
    state = wait_for(lambda: finished(run.id), 120, interval=0.2, message=lambda: small.output() + large.output())
    assert state["status"] == RunStatus.SUCCEEDED, (state, small.output(), large.output())
    final = chunks(run.id)
    assert [(c["arm__label"], c["queue"]) for c in final] == [("small", "gpu")] * 2 + [("big", "gpu-large")] * 2
    assert all((large if c["queue"] == "gpu-large" else small).owns(c["worker"]) for c in final), final
    for label, worker in (("small", small), ("big", large)):
        writers = Response.objects.filter(arm__label=label, prompt__study=study).values_list("provenance__worker",
                                                                                             flat=True)
        assert len(writers) == 4 and all(worker.owns(w) for w in writers), (label, list(writers))
