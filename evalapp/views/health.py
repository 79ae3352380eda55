"""/healthz: for the compose healthchecks and a load balancer. JSON, no secrets, no login.

503 when this process can't serve (the database or, where there is one, the broker does not answer);
200 otherwise, with "degraded" when the gpu queue has no live worker: the site still serves pages and
ratings then, and a web container must not be restarted for a GPU machine that is down.
"""

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from modelserver.heartbeats import queue_status
from modelserver.models import WorkerHeartbeat

# The queue whose silence degrades the site: generation and training wait on it. Every other queue a
# worker reports is listed too.
REQUIRED_QUEUE = "gpu"


def _required_queues() -> set[str]:
    # A big model's queue (GENERATION_QUEUES) with no live worker strands its runs as surely as gpu does.
    return {REQUIRED_QUEUE, *settings.GENERATION_QUEUES.values()}


def _database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True}
    except Exception as exc:  # any failure to answer is the answer
        return {"ok": False, "error": type(exc).__name__}


def _redis() -> dict:
    if not settings.REDIS_URL:
        return {"ok": True, "configured": False}
    import redis

    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        return {"ok": True, "configured": True}
    except Exception as exc:
        return {"ok": False, "configured": True, "error": type(exc).__name__}


def _queues() -> dict:
    out = {}
    seen = {queue for queues in WorkerHeartbeat.objects.values_list("queues", flat=True) for queue in queues}
    for queue in sorted(seen | _required_queues()):
        status = queue_status(queue)
        out[queue] = {
            "alive_workers": status["alive"],
            "seconds_since_seen": None if status["seconds_since_seen"] is None else round(status["seconds_since_seen"]),
            # Host names only: they are the compose service's container ids, nothing secret.
            "workers": [{"hostname": w["hostname"], "alive": w["alive"], "seconds_since_seen": w["seconds_since_seen"]}
                        for w in status["workers"]],
        }
    return out


@never_cache
@require_GET
def healthz(request):
    database = _database()
    broker = _redis()
    body = {"database": database, "redis": broker}
    if settings.CELERY_TASK_ALWAYS_EAGER:
        body["workers"] = "in-process (no broker: jobs run in the web process)"
        degraded = False
    elif database["ok"]:
        body["queues"] = _queues()
        degraded = any(body["queues"][queue]["alive_workers"] == 0 for queue in _required_queues())
    else:
        degraded = True
    ok = database["ok"] and broker["ok"]
    body["status"] = "fail" if not ok else "degraded" if degraded else "ok"
    return JsonResponse(body, status=200 if ok else 503)
