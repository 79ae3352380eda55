"""What a request answers when it fails on the server: 503 while the database cannot be reached.

Django calls ``server_error`` (``handler500`` in evalapp.urls, DEBUG off) for any exception that escaped a
view or a middleware, inside the ``except`` that caught it. A dropped or restarting PostgreSQL
(OperationalError: refused, terminated, closed; InterfaceError: a connection already closed) is not a bug of
this request: it answers 503 with Retry-After, in the form the caller reads (text for the rating page's
fetch, JSON for the API), and the next request connects again (CONN_HEALTH_CHECKS), without a restart.
Anything else stays Django's plain 500. Nothing here touches the database.
"""

import logging
import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.template import loader
from django.views.defaults import server_error as plain_server_error

logger = logging.getLogger(__name__)

# Not "nothing was saved": a rating can commit and the connection drop while the next item is read.
# Sending the same rating again is safe (one rating per rater and response).
UNAVAILABLE = ("The database is unavailable for a moment; what you just sent may or may not have been saved. "
               "Try again shortly: sending it again is safe.")
# SQLSTATEs of a lost or refused connection (class 08) and of a server shutting down (57P01-57P03).
_CONNECTION_STATES = ("08", "57P01", "57P02", "57P03")


def _connection_lost(exc) -> bool:
    """A connection problem, not a deadlock, timeout or other error of this request's own queries."""
    if isinstance(exc, InterfaceError):
        return True
    state = getattr(exc.__cause__, "sqlstate", None)
    return state is None or state.startswith(_CONNECTION_STATES)
RETRY_AFTER_SECONDS = "5"


def server_error(request):
    exc = sys.exc_info()[1]
    if not isinstance(exc, OperationalError | InterfaceError) or not _connection_lost(exc):
        return plain_server_error(request)
    logger.error("Database unavailable during %s %s: %s", request.method, request.path, exc)
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": UNAVAILABLE}, status=503)
    elif request.headers.get("X-Requested-With") == "fetch":
        response = HttpResponse(UNAVAILABLE, status=503, content_type="text/plain; charset=utf-8")
    else:
        # No request context: its processors would ask the database for the user.
        response = HttpResponse(loader.render_to_string("503.html", {"message": UNAVAILABLE}), status=503)
    response["Retry-After"] = RETRY_AFTER_SECONDS
    return response
