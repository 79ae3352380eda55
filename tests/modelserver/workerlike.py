"""Run Celery tasks as a worker does, without a worker."""

import pytest


@pytest.fixture
def like_a_worker():
    """Celery's apply() without propagation runs a task as a worker does: a retry re-runs it with
    request.retries + 1 (without the countdown) until max_retries, then the task fails. The test
    settings propagate, which would let the second try's Retry escape instead."""
    from celery import current_app

    propagates = current_app.conf.task_eager_propagates
    current_app.conf.task_eager_propagates = False
    yield
    current_app.conf.task_eager_propagates = propagates
