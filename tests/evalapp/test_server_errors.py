"""Which server errors answer 503 (the database is out of reach) and which stay a 500 (a bug)."""

import json

import psycopg
import pytest
from django.db import InterfaceError, OperationalError
from django.test import RequestFactory

from evalapp.views.errors import server_error


def answer(exc, path="/studies/1/rate/", **headers):
    request = RequestFactory().get(path, headers=headers)
    try:
        raise exc
    except Exception:
        return server_error(request)


def wrapped(cause):
    # As django.db.utils.DatabaseErrorWrapper raises it: Django's class, the driver's error as the cause.
    try:
        raise OperationalError(str(cause)) from cause
    except OperationalError as exc:
        return exc


@pytest.mark.parametrize("cause", [
    psycopg.OperationalError("connection refused"),  # no SQLSTATE: the client could not connect
    psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
])
def test_a_lost_connection_is_503_with_retry_after(cause):
    response = answer(wrapped(cause), HTTP_X_REQUESTED_WITH="fetch")
    assert response.status_code == 503 and response["Retry-After"]
    assert "sending it again is safe" in response.content.decode()
    api = answer(wrapped(cause), path="/api/studies/1/")
    assert api.status_code == 503 and "unavailable" in json.loads(api.content)["detail"]
    assert answer(InterfaceError("connection already closed")).status_code == 503


@pytest.mark.parametrize("cause", [
    psycopg.errors.DeadlockDetected("deadlock detected"),
    psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
])
def test_a_deadlock_or_timeout_is_a_bug_and_stays_500(cause):
    assert answer(wrapped(cause)).status_code == 500


def test_other_errors_stay_500():
    assert answer(ValueError("boom")).status_code == 500
