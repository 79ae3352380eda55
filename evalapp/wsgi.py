"""The WSGI entry point (gunicorn). Like evalapp.celery it refuses to guess the settings: a server started
without DJANGO_SETTINGS_MODULE would otherwise run the demo's (an insecure key, DEBUG on)."""

import os

from django.core.wsgi import get_wsgi_application

if not os.environ.get("DJANGO_SETTINGS_MODULE"):
    raise RuntimeError(
        "Set DJANGO_SETTINGS_MODULE: evalapp.settings.production on a server, or evalapp.settings.base to run "
        "the demo's settings on purpose (manage.py sets that one itself).")

application = get_wsgi_application()
