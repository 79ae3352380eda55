"""The Celery app. A worker needs DJANGO_SETTINGS_MODULE: without it, it would run the demo's settings
(an insecure key, SQLite, no broker) against whatever database it happened to find, so it refuses."""

import os

from celery import Celery

from modelserver.heartbeats import HeartbeatStep

if not os.environ.get("DJANGO_SETTINGS_MODULE"):
    raise RuntimeError(
        "Set DJANGO_SETTINGS_MODULE: evalapp.settings.production on a server, or evalapp.settings.base to run "
        "the demo's settings on purpose (manage.py sets that one itself).")

app = Celery("empatheval")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.steps["worker"].add(HeartbeatStep)
app.autodiscover_tasks()
