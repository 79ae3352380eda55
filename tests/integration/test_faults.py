"""Faults with real processes: Redis stopped, PostgreSQL restarted under a real gunicorn, one rating
posted twice at once from two connections, a real worker that runs out of retries.

The GPU worker killed mid-run (it completes once another worker starts, no duplicates) is
test_celery_generation.py's test_killed_worker_midway_then_a_new_one_finishes_without_duplicates and
test_two_workers_share_a_study_and_one_finishes_when_the_other_is_killed, not repeated here.

The Redis and PostgreSQL that get stopped are private ones started by the test (private_services.py).
"""

import json
import os
import subprocess
import sys
import threading
import time

import psycopg
import pytest
import requests
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

from bench.load import _CSRF, _ITEM, Site, build_site, gunicorn, run_load
from evalapp.models import Rating, Score, Study
from modelserver.models import GenerationChunk, GenerationRun, RunStatus
from modelserver.services import generation_run_create, generation_run_resume
from raters.models import RatingRevision
from raters.services.ratings import _statement_name
from raters.selectors import next_item

from ..factories import ArmFactory, PromptFactory
from .conftest import ROOT, Worker, use_broker, wait_for
from .private_services import PrivatePostgres, PrivateRedis

pytestmark = pytest.mark.integration

ANSWERS = {"score-empathy": "7", "score-fluency": "4", "seconds": "3"}


def rater_client(site, index=0) -> Client:
    client = Client()
    client.cookies[django_settings.SESSION_COOKIE_NAME] = site.sessions[index]
    return client


def submit(client, site, public_id):
    return client.post(reverse("rate_submit", args=[site.study_id, public_id]), ANSWERS,
                       headers={"X-Requested-With": "fetch"})


def generation_study(study, model_dirs):
    base, _ = model_dirs
    PromptFactory.create_batch(2, study=study)
    ArmFactory(study=study, label="baseline", base_model=str(base),
               generation_params={"max_new_tokens": 4, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.0})
    return study


# ----------------------------------------------------------------------------- two connections, one rating


@pytest.mark.django_db(transaction=True)
def test_one_rating_posted_twice_at_once_from_two_connections_is_one_row():
    """Both requests find no rating and both insert: a table lock held here lets each one's reads through
    and stops both at the INSERT (a first rating's one statement), so they race on the unique constraint
    every time; the loser's ON CONFLICT finds the winner's row and compares with it."""
    site = build_site(n_raters=3, n_responses=6, tag="twice")
    rater = site.rater_ids[0]
    study = Study.objects.get(id=site.study_id)
    public_id = next_item(study=study, rater=get_user_model().objects.get(id=rater)).assignment.response.public_id
    barrier = threading.Barrier(2)
    answers = []

    def post():
        client = rater_client(site)
        barrier.wait()
        try:
            answers.append(submit(client, site, public_id).status_code)
        except Exception as exc:  # seen by the assertion below, not lost in the thread
            answers.append(repr(exc))
        finally:
            connection.close()  # this thread's own connection

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE evalapp_rating IN SHARE MODE")
        threads = [threading.Thread(target=post) for _ in range(2)]
        for thread in threads:
            thread.start()
        wait_for(lambda: _inserts_waiting() == 2 or len(answers) == 2, 20, message=_waiting)
    for thread in threads:
        thread.join(timeout=30)
    assert answers == [200, 200]
    ratings = Rating.objects.filter(response__public_id=public_id, rater_id=rater)
    assert ratings.count() == 1
    assert Score.objects.filter(rating__in=ratings).count() == site.n_criteria  # scores written once
    assert not RatingRevision.objects.exists()  # the second is "unchanged", not a revision


def _waiting():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT wait_event_type, state, left(query, 80) FROM pg_stat_activity "
                       "WHERE datname = current_database()")
        return cursor.fetchall()


def _inserts_waiting() -> int:
    with connection.cursor() as cursor:
        # pg_stat_activity is read once per transaction unless the snapshot is dropped (this one holds the lock).
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        # A first rating is one prepared statement (raters.services.ratings._one_statement_sql), sent as
        # its PREPARE (a new connection) or its EXECUTE.
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND datname = current_database() AND (query LIKE %s OR query LIKE %s)",
                       [f"%EXECUTE {_statement_name()}(%", '%INSERT INTO "evalapp_rating"%'])
        return cursor.fetchone()[0]


# ----------------------------------------------------------------------------- Redis stopped


@pytest.fixture
def private_redis(tmp_path, settings):
    server = PrivateRedis(tmp_path).start()
    settings.REDIS_URL = server.url(0)
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": server.url(1), "OPTIONS": {"socket_connect_timeout": 2,
                                                                          "socket_timeout": 2}}}
    use_broker(server.url(0), settings)
    yield server
    server.stop()
    from evalapp.celery import app as celery_app
    celery_app.conf.task_always_eager = True


@pytest.mark.django_db(transaction=True)
def test_redis_stopped_rating_and_results_work_generation_refuses_cleanly_then_proceeds(
    private_redis, study, researcher, integration_model_dirs, tmp_path
):
    site = build_site(n_raters=3, n_responses=6, tag="redis")
    generation_study(study, integration_model_dirs)
    worker = Worker(private_redis.url(0), tmp_path).start()
    try:
        owner = Client()
        owner.force_login(researcher.__class__.objects.get(id=site.owner_id))
        api = Client()
        api.force_login(researcher)
        start = lambda: api.post(reverse("api_generation_runs", args=[study.id]), {"batch_size": 2},  # noqa: E731
                                 content_type="application/json")
        assert owner.get(reverse("results", args=[site.study_id])).status_code == 200  # cached in Redis

        private_redis.stop()
        rater = rater_client(site)
        page = rater.get(reverse("rate", args=[site.study_id])).content.decode()
        assert submit(rater, site, _ITEM.search(page).group(2)).status_code == 200
        assert Rating.objects.filter(rater_id=site.rater_ids[0]).count() == 1
        assert owner.get(reverse("results", args=[site.study_id])).status_code == 200
        refused = start()
        assert refused.status_code == 503, refused.content
        assert "queue is unavailable" in refused.json()["detail"]
        assert not GenerationRun.objects.filter(study=study).exists()  # nothing half-done
        assert not GenerationChunk.objects.filter(run__study=study).exists()

        private_redis.start()  # empty: it kept nothing
        started = start()
        assert started.status_code == 201, started.content
        run_id = started.json()["id"]
        state = wait_for(lambda: GenerationRun.objects.filter(id=run_id, status=RunStatus.SUCCEEDED).first(), 120,
                         interval=0.2, message=worker.output)
        assert state.done == state.total == 2
    finally:
        worker.stop()


# ----------------------------------------------------------------------------- PostgreSQL restarted


@pytest.fixture
def private_postgres():
    server = PrivatePostgres().start()
    server.create_database("site", ROOT)
    yield server
    server.close()


PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "evalapp.settings.production",  # CONN_MAX_AGE 60 with CONN_HEALTH_CHECKS
    "REDIS_URL": "redis://127.0.0.1:1/0",  # rating needs none; production requires one
    "ALLOWED_HOSTS": "127.0.0.1", "SECURE_SSL_REDIRECT": "false", "SESSION_COOKIE_SECURE": "false",
    "CSRF_COOKIE_SECURE": "false", "SECURE_HSTS_SECONDS": "0", "LOG_FORMAT": "text",
}


def test_postgres_restarted_during_rating_fails_cleanly_then_recovers_without_a_restart(private_postgres, tmp_path):
    url = private_postgres.url("site")
    built = subprocess.run(
        [sys.executable, "-c", "import dataclasses, json; from bench.load import build_site; "
                               "print(json.dumps(dataclasses.asdict(build_site(n_raters=6, n_responses=600))))"],
        cwd=ROOT, env={**os.environ, "DATABASE_URL": url}, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    site = Site(**json.loads(built.stdout.strip().splitlines()[-1]))
    log = tmp_path / "gunicorn.log"
    with gunicorn(workers=2, env={**PRODUCTION, "DATABASE_URL": url}, log_path=log) as server:
        during = {}
        rating = threading.Thread(target=lambda: during.update(
            load=run_load(base_url=server.base_url, site=site, seconds=8, floor=False)))
        rating.start()
        time.sleep(2)
        private_postgres.stop("fast")
        down = requests.get(f"{server.base_url}/studies/{site.study_id}/rate/", timeout=30,
                            cookies={"sessionid": site.sessions[0]})
        time.sleep(1)
        private_postgres.start()
        rating.join()
        after = requests.get(f"{server.base_url}/studies/{site.study_id}/rate/", timeout=30,
                             cookies={"sessionid": site.sessions[0]})
        assert server.poll() is None  # the same web process throughout
    output = log.read_text(errors="replace")
    assert down.status_code == 503 and down.headers["Retry-After"], (down.status_code, output[-3000:])
    assert "database is unavailable" in down.text
    assert after.status_code == 200 and _ITEM.search(after.text) and _CSRF.search(after.text)
    load = during["load"]
    statuses = {status for _, _, status in load.requests}
    assert statuses <= {200, 503}, (statuses, load.errors[:5], output[-3000:])  # no 500, no dropped connection
    assert 200 in statuses and load.acknowledged
    assert output.count("Booting worker") == 2  # the two it started with: none restarted
    # What was acknowledged is stored, once, with its scores. A submit answered 503 may have committed
    # before the connection dropped (the next item is read after the commit), so it may be stored too,
    # once; nothing else may be.
    with psycopg.connect(url) as conn:
        stored = conn.execute("SELECT r.rater_id, p.public_id FROM evalapp_rating r "
                              "JOIN evalapp_response p ON p.id = r.response_id").fetchall()
        unscored = conn.execute("SELECT count(*) FROM evalapp_rating r WHERE (SELECT count(*) FROM evalapp_score s "
                                "WHERE s.rating_id = r.id) <> %s", [site.n_criteria]).fetchone()[0]
    acknowledged = {(site.rater_ids[i], public_id) for i, public_id in load.acknowledged}
    unconfirmed = {(site.rater_ids[i], public_id) for i, public_id in load.unconfirmed}
    assert len(acknowledged) == len(load.acknowledged) and len(set(stored)) == len(stored)
    assert acknowledged <= set(stored) and set(stored) - acknowledged <= unconfirmed
    assert unscored == 0


# ----------------------------------------------------------------------------- out of retries


@pytest.mark.django_db(transaction=True)
def test_a_worker_out_of_retries_fails_the_run_and_resume_finishes_it(
    broker, study, researcher, integration_model_dirs, tmp_path
):
    generation_study(study, integration_model_dirs)
    fast_retries = {"JOB_RETRY_BACKOFF_SECONDS": "1"}
    oom = Worker(broker, tmp_path, app="tests.integration.oom_worker", env=fast_retries).start()
    try:
        run = generation_run_create(study=study, user=researcher, batch_size=2)
        failed = wait_for(lambda: GenerationRun.objects.filter(id=run.id, status=RunStatus.FAILED).first(), 120,
                          interval=0.2, message=oom.output)
    finally:
        oom.stop()
    [chunk] = GenerationChunk.objects.filter(run=run)
    assert chunk.status == RunStatus.FAILED and chunk.attempts == 4  # the first try and 3 retries
    assert "out of memory" in failed.error and "gave up after 4 tries" in failed.error
    assert failed.is_resumable and failed.done == 0

    healthy = Worker(broker, tmp_path).start()
    try:
        generation_run_resume(run=failed)
        done = wait_for(lambda: GenerationRun.objects.filter(id=run.id, status=RunStatus.SUCCEEDED).first(), 120,
                        interval=0.2, message=healthy.output)
    finally:
        healthy.stop()
    assert done.done == done.total == 2 and done.error == ""
