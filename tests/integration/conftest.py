"""Real services: PostgreSQL (the test database), Redis, and `celery worker` processes."""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
import redis
from django.conf import settings
from django.db import connection

from evalapp.celery import app as celery_app
from tests.modelserver.conftest import build_tiny_model, build_tiny_tokenizer, save_lora_adapter

ROOT = settings.BASE_DIR


@pytest.fixture(scope="session")
def integration_model_dirs(tmp_path_factory):
    tokenizer = build_tiny_tokenizer()
    base = tmp_path_factory.mktemp("itest-base")
    # No eos boost: rows run to max_new_tokens, so a run takes long enough to be killed midway.
    build_tiny_model(tokenizer, seed=3).save_pretrained(base)
    tokenizer.save_pretrained(base)
    adapter = save_lora_adapter(base, tmp_path_factory.mktemp("itest-lora"))
    return base, adapter


@pytest.fixture
def broker(settings):
    """Point this process's Celery producer at the real Redis (db 15), emptied first."""
    url = settings.TEST_REDIS_URL
    client = redis.Redis.from_url(url)
    client.flushdb()
    use_broker(url, settings)
    yield url
    celery_app.conf.task_always_eager = True
    client.flushdb()


def use_broker(url: str, settings) -> None:
    """Publish this process's tasks to the broker at `url`, as the web process of a site with Redis does."""
    if celery_app.conf.broker_url != url:
        # The producer pool is bound to the broker URL it was first built with: drop it.
        celery_app.conf.broker_url = url
        celery_app._pool = None
        celery_app.amqp._producer_pool = None
    celery_app.conf.task_always_eager = False
    settings.CELERY_TASK_ALWAYS_EAGER = False


class Worker:
    def __init__(self, broker_url: str, tmp_path, visibility_timeout: int = 4, lease: int = 3, queues: str = "gpu",
                 app: str = "evalapp", env: dict | None = None):
        self.app = app
        self.name = f"itest-{uuid.uuid4().hex[:8]}@%h"
        self.queues = queues
        db = connection.settings_dict
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "evalapp.settings.base",
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "REDIS_URL": broker_url,
            "CELERY_VISIBILITY_TIMEOUT": str(visibility_timeout),
            "CELERY_UNACKED_RESTORE_INTERVAL": "1",
            "CELERY_UNACKED_RESTORE_THROTTLE": "1",
            "GENERATION_LEASE_SECONDS": str(lease),
            "DEBUG": "false",
            "HF_HUB_OFFLINE": "1",
            # One thread each: two workers on a small machine would otherwise fight over every core.
            "OMP_NUM_THREADS": "1",
            **(env or {}),
        }
        self.log_path = tmp_path / f"worker-{uuid.uuid4().hex[:6]}.log"
        self.process = None

    def start(self):
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", self.app, "worker", "-Q", self.queues, "--pool", "solo",
             "--concurrency", "1", "-n", self.name, "--without-gossip", "--without-mingle", "--without-heartbeat",
             "-l", "info"],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        return self

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()

    def owns(self, hostname: str) -> bool:
        """Whether a worker field (``name@host``, %h expanded) is this worker's."""
        return hostname.startswith(self.name.split("@")[0] + "@")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]


@pytest.fixture
def worker_factory(broker, tmp_path):
    workers = []

    def make(**kwargs):
        worker = Worker(broker, tmp_path, **kwargs).start()
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop()


def wait_for(predicate, timeout: float, interval: float = 0.05, message=""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s: {message() if callable(message) else message}")
