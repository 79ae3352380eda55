"""Worker heartbeats, /healthz and the study page's word on a silent GPU queue."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from modelserver import heartbeats
from modelserver.models import GenerationRun, WorkerHeartbeat

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


def test_run_list_shows_the_worker_holding_a_run(client, researcher, study):
    client.force_login(researcher)
    GenerationRun.objects.create(study=study, created_by=researcher, total=4, status="running", worker="gpu@node-7",
                                 heartbeat_at=timezone.now())
    fragment = client.get(reverse("generation_runs_fragment", args=[study.id])).content.decode()
    assert '<td class="run-worker">gpu@node-7</td>' in fragment
