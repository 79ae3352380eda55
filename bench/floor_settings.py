"""What gunicorn runs under in bench/load.py: the base settings (DATABASE_URL, DEBUG=false from the
environment) with the floor's trivial view added to the site's URLs. Nothing else differs from the site."""

from evalapp.settings.base import *  # noqa: F403

ROOT_URLCONF = "bench.floor"
