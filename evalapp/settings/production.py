"""Production: secrets, hosts, database and broker must come from the environment."""

import dj_database_url

from .base import *  # noqa: F403
from .env import env_bool, env_choice, env_int, env_list, env_str

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")  # no default: refuse to start without one
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [])
# A container's host name is a random id: name the server in its study archives by the site's host instead.
EMPATHEVAL_SITE_NAME = env_str("EMPATHEVAL_SITE_NAME", ALLOWED_HOSTS[0] if ALLOWED_HOSTS else EMPATHEVAL_SITE_NAME)  # noqa: F405
DATABASES = {"default": dj_database_url.parse(env_str("DATABASE_URL"), conn_max_age=60, conn_health_checks=True)}
# A production site must never run generation inside a web request.
REDIS_URL = env_str("REDIS_URL")
CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_ALWAYS_EAGER = False
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
SECURE_CONTENT_TYPE_NOSNIFF = True

# Behind a TLS-terminating proxy (the deployment's nginx/caddy/load balancer): trust its
# X-Forwarded-Proto only when told to, since any client can send that header to a bare server.
if env_bool("SECURE_PROXY_SSL", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
# The container healthcheck asks over plain http from inside (deploy/healthcheck.py).
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
# HSTS on by default for a year; a site still trying TLS out sets SECURE_HSTS_SECONDS=0 first,
# since browsers remember the header (Django's warning: enabling it carelessly is hard to undo).
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
# includeSubDomains covers only names under the site's own host (eval.lab.example's subdomains, not
# lab.example's); preload only marks the header, a site must still be submitted to the preload list.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Raters log in from shared machines: a session ends after SESSION_COOKIE_AGE seconds (default 8 h)
# and when the browser closes.
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 8 * 3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True

# One JSON object a line by default, for the log collector of a server (LOG_FORMAT=text to read them by eye).
LOGGING["handlers"]["console"]["formatter"] = env_choice("LOG_FORMAT", ["json", "text"], "json")  # noqa: F405

# How many proxies in front of the site add themselves to X-Forwarded-For (1 for the documented TLS proxy).
# Login throttling counts failures per client address; with 0 it reads REMOTE_ADDR only, since a client can
# write any X-Forwarded-For it likes to a bare server.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
if TRUSTED_PROXY_COUNT > 0:
    AXES_IPWARE_PROXY_COUNT = TRUSTED_PROXY_COUNT
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]
