"""The redelivery rule as a real `celery worker -Q gpu` applies it, for training runs and playground requests."""

import json

import pytest
from django.utils import timezone

from modelserver import tasks
from modelserver.models import PlaygroundRequest, RunStatus, TrainingRun
from modelserver.services import playground_request_create

from ..factories import ArmFactory, PromptFactory
from .conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def finished(model, job_id):
    row = model.objects.values("status", "error", "worker", "attempts").get(id=job_id)
    return row if row["status"] in (RunStatus.SUCCEEDED, RunStatus.FAILED) else None


def test_training_message_held_by_a_live_worker_comes_back_after_the_lease(
    study, researcher, integration_model_dirs, worker_factory, tmp_path, settings
):
    # Bug 6: the message was dropped while another worker held the run; had that worker died, the run
    # stayed RUNNING for good. Now it looks again once the lease could have lapsed and takes over.
    base, _ = integration_model_dirs
    data = tmp_path / "chats.jsonl"
    data.write_text("\n".join(json.dumps({"id": f"c{i}", "messages": [
        {"role": "user", "content": f"I feel sad about thing {i}."},
        {"role": "assistant", "content": f"That sounds hard. Tell me about {i}."}]}) for i in range(16)))
    config = {"base": str(base), "data": str(data), "max_steps": 1, "batch_size": 2, "max_length": 64,
              "eval_every": 0, "perplexity_max_examples": 2, "device": "cpu"}
    run = TrainingRun.objects.create(created_by=researcher, name="held", config=config, out_dir=str(tmp_path / "out"),
                                     status=RunStatus.RUNNING, worker="vanished@gpu", attempts=1,
                                     heartbeat_at=timezone.now())
    worker = worker_factory(lease=5)
    # The other worker's lease starts once this one is ready: on a loaded machine a worker can take a
    # minute to start, and would then find the lease long lapsed and never wait (CI failed so once).
    wait_for(lambda: "ready." in worker.output(), 180, interval=0.2, message=worker.output)
    TrainingRun.objects.filter(id=run.id).update(heartbeat_at=timezone.now())
    tasks.train_adapter.delay(run.id)  # the redelivered message
    state = wait_for(lambda: finished(TrainingRun, run.id), 180, interval=0.2, message=worker.output)
    assert state["status"] == RunStatus.SUCCEEDED, (state, worker.output())
    assert state["worker"].startswith("itest-") and state["attempts"] == 2
    assert "held by a live worker" in worker.output(), worker.output()[-3000:]


def test_worker_answers_a_playground_request(study, researcher, integration_model_dirs, worker_factory):
    base, adapter = integration_model_dirs
    PromptFactory(study=study)
    params = {"max_new_tokens": 6, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.0}
    ArmFactory(study=study, label="fine-tuned", base_model=str(base), adapter=str(adapter), generation_params=params)
    ArmFactory(study=study, label="baseline", base_model=str(base), generation_params=params)
    worker = worker_factory()
    item = playground_request_create(study=study, user=researcher, messages=[{"role": "user", "content": "Hi."}])
    state = wait_for(lambda: finished(PlaygroundRequest, item.id), 120, interval=0.2, message=worker.output)
    assert state["status"] == RunStatus.SUCCEEDED, (state, worker.output())
    assert state["worker"].startswith("itest-")


def test_a_real_worker_reports_its_queue_and_leaves_cleanly(worker_factory, settings):
    from modelserver.heartbeats import queue_status

    worker = worker_factory()
    row = wait_for(lambda: queue_status("gpu")["alive"], 60, interval=0.2, message=worker.output)
    assert row == 1
    [seen] = queue_status("gpu")["workers"]
    assert seen["hostname"].startswith("itest-") and seen["alive"]
    worker.stop()
    # A clean stop takes the row away: it is not counted as a silent worker.
    wait_for(lambda: not queue_status("gpu")["workers"], 20, interval=0.2, message=worker.output)


def test_the_default_queue_worker_sends_an_invitation_after_commit(study, researcher, broker, tmp_path):
    from raters.models import Role
    from raters.services import invitation_create

    from .conftest import Worker

    outbox = tmp_path / "mail"
    worker = Worker(broker, tmp_path, queues="celery")
    worker.env |= {"EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend", "EMAIL_FILE_PATH": str(outbox)}
    worker.start()
    try:
        invitation_create(study=study, created_by=researcher, role=Role.RATER, email="student@uni.example",
                          accept_url=lambda token: f"https://site.example/invite/{token}")
        [message] = wait_for(lambda: list(outbox.glob("*.log")), 60, interval=0.2, message=worker.output)
        text = message.read_text()
        assert "student@uni.example" in text and "https://site.example/invite/" in text
        assert "evalapp.send_email" in worker.output()
    finally:
        worker.stop()


def test_mail_is_sent_in_the_request_when_the_broker_does_not_answer(study, researcher, settings, mailoutbox):
    from evalapp.celery import app as celery_app
    from raters.models import Role
    from raters.services import invitation_create

    settings.CELERY_TASK_ALWAYS_EAGER = False
    url = celery_app.conf.broker_url
    celery_app.conf.task_always_eager = False
    celery_app.conf.broker_url = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    try:
        invitation_create(study=study, created_by=researcher, role=Role.RATER, email="student@uni.example",
                          accept_url=lambda token: f"https://site.example/invite/{token}")
    finally:
        celery_app.conf.broker_url = url
        celery_app.conf.task_always_eager = True
        celery_app._pool = None
        celery_app.amqp._producer_pool = None
    [message] = mailoutbox
    assert message.to == ["student@uni.example"]
