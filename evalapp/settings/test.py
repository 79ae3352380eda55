"""Tests run against the real PostgreSQL (DATABASE_URL overrides)."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")

from .base import *  # noqa: E402,F403
from .env import env_str  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEBUG = False
WHITENOISE_AUTOREFRESH = True  # no collectstatic in tests
# Eager tasks run inline in tests so their effects are visible inside the test's transaction.
CELERY_TASK_ALWAYS_EAGER = True
# Errors escape delay() in tests; the lifecycle tests run tasks as a worker does (tests/modelserver/conftest.py).
CELERY_TASK_EAGER_PROPAGATES = True
EMPATHEVAL_EAGER_IN_THREAD = False
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
TEST_REDIS_URL = env_str("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
