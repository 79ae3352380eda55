"""Generation through a real `celery worker -Q gpu` process, Redis and PostgreSQL."""

import pytest
from django.db.models import Count

from evalapp.models import Response
from modelserver.models import GenerationRun, RunStatus
from modelserver.services import generation_run_create

from ..factories import ArmFactory, PromptFactory
from .conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def make_study(study, model_dirs, n_prompts, max_new_tokens):
    base, adapter = model_dirs
    PromptFactory.create_batch(n_prompts, study=study)
    params = {"max_new_tokens": max_new_tokens, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.0}
    ArmFactory(study=study, label="fine-tuned", base_model=str(base), adapter=str(adapter), generation_params=params)
    ArmFactory(study=study, label="baseline", base_model=str(base), generation_params=params)
    return study


def run_state(run_id):
    return GenerationRun.objects.values("status", "done", "total", "error", "worker", "attempts").get(id=run_id)


def assert_one_response_per_key(study, expected):
    per_key = Response.objects.filter(prompt__study=study).values("prompt", "arm", "sample_index").annotate(n=Count("id"))
    assert len(per_key) == expected
    assert {row["n"] for row in per_key} == {1}


def test_worker_generates_a_study(study, researcher, integration_model_dirs, worker_factory):
    make_study(study, integration_model_dirs, n_prompts=4, max_new_tokens=8)
    worker = worker_factory()
    run = generation_run_create(study=study, user=researcher, samples_per_prompt=2, batch_size=4)
    state = wait_for(lambda: run_state(run.id)["status"] in ("succeeded", "failed") and run_state(run.id), 120,
                     interval=0.2, message=worker.output)
    assert state["status"] == RunStatus.SUCCEEDED, (state, worker.output())
    assert state["done"] == state["total"] == 16
    assert state["worker"].startswith("itest-")
    assert_one_response_per_key(study, 16)


def test_killed_worker_midway_then_a_new_one_finishes_without_duplicates(
    study, researcher, integration_model_dirs, worker_factory
):
    make_study(study, integration_model_dirs, n_prompts=16, max_new_tokens=64)
    first = worker_factory()
    run = generation_run_create(study=study, user=researcher, batch_size=2)
    total = run.total
    wait_for(lambda: 0 < run_state(run.id)["done"] < total // 2, 120, interval=0.02, message=first.output)
    first.kill()
    killed_at = run_state(run.id)
    assert killed_at["status"] == RunStatus.RUNNING and 0 < killed_at["done"] < total, killed_at

    second = worker_factory()
    state = wait_for(lambda: run_state(run.id)["status"] in ("succeeded", "failed") and run_state(run.id), 240,
                     interval=0.2, message=lambda: second.output() + str(run_state(run.id)))
    assert state["status"] == RunStatus.SUCCEEDED, (state, second.output())
    assert state["done"] == total and state["attempts"] == 2
    assert state["worker"] != killed_at["worker"] or "itest-" in state["worker"]
    assert_one_response_per_key(study, total)
