"""A judge run through real `celery worker` processes, Redis and PostgreSQL: the worker killed (SIGKILL) in
the middle of a chunk, another started, and the run completes with every (response, question, sample)
answered exactly once."""

from datetime import timedelta

import pytest
from django.db.models import Count
from django.utils import timezone

from modelserver.judge_services import judge_create, judge_questions, judge_run_create
from modelserver.models import JudgeAnswer, JudgeChunk, JudgeRun, RunStatus

from ..factories import ArmFactory, PromptFactory, ResponseFactory
from .conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Long enough that a chunk of two responses takes a good fraction of a second on one thread even with the
# tiny model (three questions, each its own forward pass): the kill lands inside one.
REPLY = "It sounds like you are going through a difficult time, and talking to a counselor can help. " * 8


@pytest.fixture(autouse=True)
def one_batch_chunks(settings):
    # The chunks are cut here, where the run is created: one batch each, so the run has many.
    settings.GENERATION_CHUNK_BATCHES = 1


def run_state(run_id):
    return JudgeRun.objects.values("status", "done", "total", "error", "worker", "attempts").get(id=run_id)


def finished(run_id):
    state = run_state(run_id)
    return state if state["status"] in (RunStatus.SUCCEEDED, RunStatus.FAILED) else None


def chunks(run_id, **filters):
    return list(JudgeChunk.objects.filter(run_id=run_id, **filters).order_by("index")
                .values("id", "status", "worker", "attempts", "keys"))


def just_claimed_by(run_id, worker):
    """A chunk this worker claimed moments ago: killed now, it dies before writing that chunk's answers."""
    recently = timezone.now() - timedelta(seconds=0.05)
    return [c for c in chunks(run_id, status="running", started_at__gte=recently) if worker.owns(c["worker"])]


def test_judge_worker_killed_mid_chunk_then_another_finishes_with_each_answer_once(
    study, researcher, integration_model_dirs, worker_factory, settings
):
    base, _ = integration_model_dirs
    settings.JUDGE_LOCAL_MODELS = [str(base)]
    env = {"JUDGE_LOCAL_MODELS": str(base)}  # the workers' settings, read from their environment
    arms = [ArmFactory(study=study, label=label, base_model=str(base)) for label in ("fine-tuned", "baseline")]
    for prompt in PromptFactory.create_batch(8, study=study):
        for arm in arms:
            ResponseFactory(prompt=prompt, arm=arm, text=f"{arm.label}: {REPLY}")
    judge = judge_create(study=study, user=researcher, name="tiny", kind="local", model=str(base), batch_size=2)
    questions = [q["key"] for q in judge_questions(judge, "items")]
    assert len(questions) == 3  # the default rubric's two criteria and the unsafe question

    first = worker_factory(env=env)
    run = judge_run_create(judge=judge, user=researcher)
    total = run.total
    assert total == 16 and run.chunks.count() == 8
    wait_for(lambda: 0 < run_state(run.id)["done"] < total // 2 and just_claimed_by(run.id, first), 60,
             interval=0.01, message=lambda: first.output() + str(run_state(run.id)))
    first.kill()
    killed_at = run_state(run.id)
    held = chunks(run.id, status="running")
    assert killed_at["status"] == RunStatus.RUNNING and 0 < killed_at["done"] < total, killed_at
    assert len(held) == 1 and first.owns(held[0]["worker"]), held
    held_ids = {response_id for response_id, _sample in held[0]["keys"]}
    # Killed before its one write: none of that chunk's answers exist.
    assert not JudgeAnswer.objects.filter(judge=judge, response_id__in=held_ids).exists()
    answered_by_first = JudgeAnswer.objects.filter(judge=judge).count()

    second = worker_factory(env=env)
    state = wait_for(lambda: finished(run.id), 60, interval=0.2,
                     message=lambda: second.output() + str(run_state(run.id)))
    assert state["status"] == RunStatus.SUCCEEDED, (state, second.output())
    assert state["done"] == total and state["attempts"] == 2
    # The killed worker's chunk came back (its message redelivered) and was judged once more, by the second.
    [taken_over] = [c for c in chunks(run.id) if c["id"] == held[0]["id"]]
    assert taken_over["status"] == "succeeded" and taken_over["attempts"] == 2 and second.owns(taken_over["worker"])
    assert {c["status"] for c in chunks(run.id)} == {"succeeded"}

    # Every (response, question, sample) answered exactly once, each by a real read of the model.
    responses = set(study.prompts.values_list("responses__id", flat=True))
    per_key = (JudgeAnswer.objects.filter(judge=judge).values("response_id", "criterion", "sample")
               .annotate(n=Count("id")))
    assert {(r["response_id"], r["criterion"], r["sample"]) for r in per_key} == {
        (response, question, 0) for response in responses for question in questions}
    assert {r["n"] for r in per_key} == {1}
    answers = JudgeAnswer.objects.filter(judge=judge)
    assert answers.count() == 16 * 3 and not answers.filter(value__isnull=True).exists()
    # The first worker's answers stayed as written; the rest, the held chunk's among them, are the second's.
    workers = {w for w in answers.values_list("provenance__worker", flat=True)}
    assert len(workers) == 2 and answers.filter(provenance__worker=state["worker"]).count() == 48 - answered_by_first
    assert all(second.owns(w) for w in answers.filter(response_id__in=held_ids).values_list("provenance__worker",
                                                                                             flat=True))
