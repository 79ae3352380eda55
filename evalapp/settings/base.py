"""Settings shared by every environment; the defaults are the demo's.

The demo needs no environment at all: SQLite under var/, no Redis (Celery runs
tasks eagerly in-process), the console e-mail backend.
"""

import socket
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF

from .env import env_bool, env_choice, env_int, env_judge_endpoints, env_list, env_optional, env_str, env_str_map

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("EMPATHEVAL_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", True)
# Only for local development and the demo; production.py refuses to start without one.
SECRET_KEY = env_str("SECRET_KEY", "insecure-demo-key-never-use-in-production")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "axes",
    "evalapp",
    "raters",
    "modelserver",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "evalapp.urls"
WSGI_APPLICATION = "evalapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL", "")
if not DATABASE_URL:
    # The demo's embedded database; its folder must exist before the first connection.
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASE_URL = f"sqlite:///{VAR_DIR / 'demo.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The demo's generation thread writes while pages read. WAL lets readers and a writer proceed at once;
    # IMMEDIATE takes the write lock when a transaction starts, so a transaction that reads first waits
    # for it (timeout) instead of failing with "database is locked" when it tries to write.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        timeout=30, transaction_mode="IMMEDIATE", init_command="PRAGMA journal_mode=WAL;")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The rating hot path's reads (raters.compiled) are prepared statements on PostgreSQL, planned once per
# connection: planning them took longer than running them. Turn off behind a pooler that hands a session's
# statements to other server connections (PgBouncer in transaction mode before 1.21).
PREPARED_STATEMENTS = env_bool("PREPARED_STATEMENTS", True)

# Login throttling (django-axes) in every environment, the demo too: a failed login counts against the
# pair (username, client address), so one user's guesser is stopped without locking a whole lab that shares
# one NAT address, and nobody can lock a rater out from elsewhere. A success clears the count.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "raters.views.lockout"
AXES_VERBOSE = False
# Behind the deployment's proxy the client's address is the proxy's unless this many proxies' entries of
# X-Forwarded-For are trusted (production.py sets it from TRUSTED_PROXY_COUNT).
AXES_IPWARE_PROXY_COUNT = None
AXES_IPWARE_META_PRECEDENCE_ORDER = ["REMOTE_ADDR"]

# An enforced Content-Security-Policy everywhere (the demo and the tests too, so a browser test sees any
# violation): scripts and styles come only from our static files, nothing inline, no frames, no plugins.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Serve straight from the apps' static folders until collectstatic has run (demo, tests).
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "study_list"
LOGOUT_REDIRECT_URL = "login"

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "empatheval@localhost")
# Where django.core.mail.backends.filebased.EmailBackend writes (a lab trying the site without SMTP).
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))

# Celery. Without REDIS_URL (the demo) tasks run eagerly in the web process,
# through exactly the same task code a worker would run.
REDIS_URL = env_optional("REDIS_URL")
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = REDIS_URL is None
# The demo's eager jobs record their errors on the job; a retry runs again in-process instead of escaping.
CELERY_TASK_EAGER_PROPAGATES = False
# In the demo's web pages, eager tasks run on a background thread so pages can poll their progress
# (modelserver/dispatch.py; the demo's preparation runs its jobs in its own thread instead).
EMPATHEVAL_EAGER_IN_THREAD = env_bool("EMPATHEVAL_EAGER_IN_THREAD", True)
# Generation and training hold a model in memory: they run on `gpu` workers only.
CELERY_TASK_ROUTES = {"modelserver.*": {"queue": "gpu"}}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Redis redelivers an unacknowledged message after this many seconds. It must be
# longer than GENERATION_LEASE_SECONDS, which must be longer than the longest chunk.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 7200),
    "unacked_restore_interval": env_int("CELERY_UNACKED_RESTORE_INTERVAL", 10),
    "unacked_restore_throttle": env_int("CELERY_UNACKED_RESTORE_THROTTLE", 10),
}
# Celery beat (run inside the `worker` service with -B, one beat for the whole site): time out idle pool
# participants this often, so their unfinished items go to others while no one looks (the panel and raters
# pages also do it for their study when viewed, which is all the demo without a broker has).
PANEL_RELEASE_IDLE_SECONDS = env_int("PANEL_RELEASE_IDLE_SECONDS", 300)
CELERY_BEAT_SCHEDULE = {
    "release-idle-participants": {"task": "raters.release_idle_participants",
                                  "schedule": float(PANEL_RELEASE_IDLE_SECONDS)},
}
# The lease of every job kind (generation, playground, training), named when only generation had one.
GENERATION_LEASE_SECONDS = env_int("GENERATION_LEASE_SECONDS", 1800)
# Where training runs write adapters and checkpoints.
EMPATHEVAL_ADAPTER_DIR = env_str("EMPATHEVAL_ADAPTER_DIR", str(VAR_DIR / "adapters"))
# A job's transient error (CUDA out of memory) is retried after this many seconds, doubling each try
# (with jitter), up to 3 retries; then the job fails and can be resumed.
JOB_RETRY_BACKOFF_SECONDS = env_int("JOB_RETRY_BACKOFF_SECONDS", 30)
# Every worker writes its heartbeat row this often (modelserver.heartbeats); two missed beats and it counts
# as silent on /healthz and the study page.
WORKER_HEARTBEAT_SECONDS = env_int("WORKER_HEARTBEAT_SECONDS", 30)
# Names this server in the study archives it writes (manage.py study_export). Informational: an
# archived study is recognised by its id and creation time on the server it began on, not by this name.
EMPATHEVAL_SITE_NAME = env_str("EMPATHEVAL_SITE_NAME", socket.gethostname())
# A run is split into chunks of this many batches when it is created; any gpu worker claims a chunk, and
# writes it in one transaction (modelserver.models.GenerationChunk).
GENERATION_CHUNK_BATCHES = env_int("GENERATION_CHUNK_BATCHES", 2)
# Which queue generates an arm's responses, by its base model reference (shell-style patterns, first match
# wins), e.g. {"*70B*": "gpu-large"} for a worker started with `-Q gpu-large` on a bigger card. Anything
# unmatched goes to the `gpu` queue (CELERY_TASK_ROUTES).
GENERATION_QUEUES = env_str_map("GENERATION_QUEUES", {})
# LLM judges (modelserver.judge_models): the OpenAI-compatible endpoints an HTTP judge may name (see
# env_judge_endpoints; a researcher picks one by name, never types a URL), and the local model references
# a local judge may use besides "bundled" and the study's own base models (e.g. a local directory).
JUDGE_ENDPOINTS = env_judge_endpoints("JUDGE_ENDPOINTS")
JUDGE_LOCAL_MODELS = env_list("JUDGE_LOCAL_MODELS", [])

# Results are cached (keyed by the study's latest rating and decision); shared through Redis when there is one.
CACHES = {
    # Short socket timeouts: a Redis host that stopped answering must not hold the results page for
    # long (evalapp.results computes without the cache then).
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2}}
    if REDIS_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}

# Prompt import limits, stated to the user in the form and the command's help.
PROMPT_IMPORT_MAX_BYTES = env_int("PROMPT_IMPORT_MAX_BYTES", 20 * 1024 * 1024)
PROMPT_MAX_CHARS = env_int("PROMPT_MAX_CHARS", 8000)
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "evalapp.apis.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "EmpathEval API",
    "DESCRIPTION": "Studies, prompts, generation runs, blind rating, adjudication and results.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the package's own files: no CDN at run time.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # Studies and jobs (generation and judge runs) both have a `status`: named here, or drf-spectacular
    # makes up a hashed enum name and warns (which `check --deploy` must not).
    "ENUM_NAME_OVERRIDES": {"StudyStatusEnum": "evalapp.models.StudyStatus",
                            "JobStatusEnum": "modelserver.leases.RunStatus"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # LOG_FORMAT=json (the production default) writes one JSON object a line for a log collector.
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "pythonjsonlogger.json.JsonFormatter",
                 "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(process)d",
                 "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"}},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": env_choice("LOG_FORMAT", ["text", "json"], "text")}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # django-axes logs every login at INFO, with the names masked: only its warnings are worth a line.
    "loggers": {"axes": {"level": "WARNING"}},
}
