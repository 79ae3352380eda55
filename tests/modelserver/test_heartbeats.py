"""Worker heartbeats, /healthz and the study page's word on a silent GPU queue."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from modelserver import heartbeats
from modelserver.models import GenerationChunk, GenerationRun, WorkerHeartbeat

from ..factories import ArmFactory, StudyFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def with_broker(settings):
    """The settings of a site with a broker (no task is sent: these tests only read heartbeats)."""
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.REDIS_URL = settings.TEST_REDIS_URL
    return settings


def test_healthz_without_a_broker_says_jobs_run_in_process(client):
    response = client.get(reverse("healthz"))
    body = response.json()
    assert response.status_code == 200 and body["status"] == "ok"
    assert body["database"] == {"ok": True} and body["redis"] == {"ok": True, "configured": False}
    assert "in-process" in body["workers"]


def test_healthz_with_no_worker_is_degraded_not_down(client, with_broker):
    response = client.get(reverse("healthz"))
    body = response.json()
    assert response.status_code == 200 and body["status"] == "degraded"
    assert body["redis"]["ok"] is True
    assert body["queues"]["gpu"] == {"alive_workers": 0, "seconds_since_seen": None, "workers": []}


def test_healthz_with_live_workers_is_ok_and_keeps_secrets(client, with_broker):
    heartbeats.record("gpu@box", ["gpu"], pid=10)
    heartbeats.record("default@box", ["celery"], pid=11)
    response = client.get(reverse("healthz"))
    body = response.json()
    assert body["status"] == "ok", body
    assert body["queues"]["gpu"]["alive_workers"] == 1
    assert body["queues"]["gpu"]["workers"][0]["hostname"] == "gpu@box"
    text = response.content.decode()
    assert with_broker.SECRET_KEY not in text and "postgres://" not in text and "redis://" not in text


def test_healthz_with_redis_stopped_is_503(client, with_broker):
    with_broker.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there: a stopped Redis, as a client sees it
    response = client.get(reverse("healthz"))
    body = response.json()
    assert response.status_code == 503 and body["status"] == "fail"
    assert body["redis"] == {"ok": False, "configured": True, "error": "ConnectionError"}


def test_a_worker_silent_for_two_beats_is_not_alive(with_broker):
    heartbeats.record("gpu@old", ["gpu"])
    assert heartbeats.silent_gpu_queue() is None
    WorkerHeartbeat.objects.update(seen_at=timezone.now() - timedelta(minutes=7))
    silence = heartbeats.silent_gpu_queue()
    assert silence["alive"] == 0 and silence["minutes_since_seen"] == 7


def test_no_notice_without_a_broker(settings):
    assert settings.CELERY_TASK_ALWAYS_EAGER
    assert heartbeats.silent_gpu_queue() is None


def test_study_page_says_no_gpu_worker_has_reported(client, researcher, study, with_broker):
    client.force_login(researcher)
    GenerationRun.objects.create(study=study, created_by=researcher, total=4)
    page = client.get(reverse("study_detail", args=[study.id])).content.decode()
    assert "No GPU worker has ever reported" in page
    heartbeats.record("gpu@box", ["gpu"])
    WorkerHeartbeat.objects.update(seen_at=timezone.now() - timedelta(minutes=12))
    fragment = client.get(reverse("generation_runs_fragment", args=[study.id])).content.decode()
    assert "No GPU worker has reported for 12 minutes" in fragment
    heartbeats.record("gpu@box", ["gpu"])
    assert "No GPU worker" not in client.get(reverse("generation_runs_fragment", args=[study.id])).content.decode()


def running_run(study, researcher, holders, queue="gpu"):
    """A run with one chunk held (live lease) by each of ``holders`` and one chunk still queued."""
    arm = ArmFactory(study=study, label=f"arm-{queue}")
    run = GenerationRun.objects.create(study=study, created_by=researcher, total=4, status="running",
                                       worker=holders[-1] if holders else "", heartbeat_at=timezone.now())
    for index, worker in enumerate([*holders, ""]):
        GenerationChunk.objects.create(run=run, arm=arm, index=index, keys=[[1, 0]], size=1, queue=queue,
                                       status="running" if worker else "queued", worker=worker,
                                       heartbeat_at=timezone.now() if worker else None)
    return run


def test_run_list_shows_the_workers_holding_a_runs_chunks(client, researcher, study, settings):
    client.force_login(researcher)
    run = running_run(study, researcher, ["gpu@node-7", "gpu@node-8"])
    fragment = client.get(reverse("generation_runs_fragment", args=[study.id])).content.decode()
    assert '<td class="run-worker">gpu@node-7, gpu@node-8</td>' in fragment
    # A worker whose lease lapsed holds nothing any more.
    lapsed = timezone.now() - timedelta(seconds=settings.GENERATION_LEASE_SECONDS + 1)
    GenerationChunk.objects.filter(run=run, worker="gpu@node-8").update(heartbeat_at=lapsed)
    fragment = client.get(reverse("generation_runs_fragment", args=[study.id])).content.decode()
    assert '<td class="run-worker">gpu@node-7</td>' in fragment


def test_a_run_from_before_chunks_shows_its_own_worker(client, researcher, study):
    client.force_login(researcher)
    GenerationRun.objects.create(study=study, created_by=researcher, total=4, status="running", worker="gpu@node-7",
                                 heartbeat_at=timezone.now())
    fragment = client.get(reverse("generation_runs_fragment", args=[study.id])).content.decode()
    assert '<td class="run-worker">gpu@node-7</td>' in fragment


def test_the_notice_names_a_silent_queue_that_the_studys_chunks_wait_on(client, researcher, study, with_broker):
    client.force_login(researcher)
    heartbeats.record("gpu@small", ["gpu"])
    running_run(study, researcher, [], queue="gpu-large")
    fragment = client.get(reverse("generation_runs_fragment", args=[study.id])).content.decode()
    assert "No GPU worker of the <code>gpu-large</code> queue has ever reported" in fragment
    heartbeats.record("gpu@big", ["gpu-large"])
    assert heartbeats.silent_gpu_queue(study=study) is None
    WorkerHeartbeat.objects.filter(hostname="gpu@big").update(seen_at=timezone.now() - timedelta(minutes=3))
    page = client.get(reverse("study_detail", args=[study.id])).content.decode()
    assert "<code>gpu-large</code> queue has reported for 3 minutes" in page
    # Another study, whose chunks do not wait on it, hears nothing of it.
    assert heartbeats.silent_gpu_queue(study=StudyFactory()) is None


def test_healthz_counts_the_workers_of_every_configured_queue(client, with_broker):
    with_broker.GENERATION_QUEUES = {"*70B*": "gpu-large"}
    heartbeats.record("gpu@small", ["gpu"])
    body = client.get(reverse("healthz")).json()
    # A configured queue is listed (and required) before any worker of it has ever reported.
    assert list(body["queues"]) == ["gpu", "gpu-large"]
    assert body["queues"]["gpu-large"]["alive_workers"] == 0 and body["status"] == "degraded"
    heartbeats.record("gpu@large", ["gpu-large"])
    assert client.get(reverse("healthz")).json()["status"] == "ok"
