"""The production settings: `check --deploy` is silent with the documented environment, and a missing
or malformed variable stops the start with its name (each run in a fresh process, as a server starts)."""

import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings

COMPLETE = {
    "DJANGO_SETTINGS_MODULE": "evalapp.settings.production",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "eval.lab.example",
    "DATABASE_URL": "postgres://empatheval:pw@db.lab.example:5432/empatheval",
    "REDIS_URL": "redis://redis.lab.example:6379/0",
}


def manage(*args, **env):
    # A server's environment, not the test process's: the browser tests set DJANGO_ALLOW_ASYNC_UNSAFE
    # for Playwright, which `check --deploy` rightly refuses.
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY",
                                                              "ALLOWED_HOSTS", "DJANGO_SETTINGS_MODULE",
                                                              "DJANGO_ALLOW_ASYNC_UNSAFE")}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=settings.BASE_DIR, env={**base, **env},
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_is_silent_with_the_documented_environment():
    result = manage("check", "--deploy", **COMPLETE)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


def test_hsts_and_proxy_header_are_configurable():
    code = ("from django.conf import settings as s; print(s.SECURE_HSTS_SECONDS, s.SECURE_SSL_REDIRECT, "
            "getattr(s, 'SECURE_PROXY_SSL_HEADER', None), s.X_FRAME_OPTIONS, s.SESSION_COOKIE_SECURE)")
    def last_line(**env):  # the shell may print its auto-import note first
        return manage("shell", "-c", code, **env).stdout.strip().splitlines()[-1]

    assert last_line(**COMPLETE).split() == ["31536000", "True", "None", "DENY", "True"]
    proxied = last_line(**COMPLETE, SECURE_PROXY_SSL="true", SECURE_HSTS_SECONDS="0")
    assert proxied.startswith("0 True ('HTTP_X_FORWARDED_PROTO', 'https')")


@pytest.mark.parametrize(("change", "named"), [
    ({"SECRET_KEY": ""}, "SECRET_KEY"),
    ({"DATABASE_URL": ""}, "DATABASE_URL"),
    ({"REDIS_URL": ""}, "REDIS_URL"),
    ({"SECURE_SSL_REDIRECT": "maybe"}, "SECURE_SSL_REDIRECT"),
    ({"SECURE_HSTS_SECONDS": "a year"}, "SECURE_HSTS_SECONDS"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ({"LOGIN_FAILURE_LIMIT": "five"}, "LOGIN_FAILURE_LIMIT"),
    ({"TRUSTED_PROXY_COUNT": "one"}, "TRUSTED_PROXY_COUNT"),
])
def test_a_missing_or_malformed_variable_is_named(change, named):
    result = manage("check", **{**COMPLETE, **change})
    assert result.returncode != 0 and named in result.stderr, result.stderr[-1500:]


def python(code: str, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE")}
    return subprocess.run([sys.executable, "-c", code], cwd=settings.BASE_DIR, env={**base, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module", ["evalapp.wsgi", "evalapp.celery"])
def test_the_server_and_the_worker_refuse_to_guess_their_settings(module):
    result = python(f"import {module}")
    assert result.returncode != 0 and "Set DJANGO_SETTINGS_MODULE" in result.stderr, result.stderr[-1500:]
    told = python(f"import {module}", DJANGO_SETTINGS_MODULE="evalapp.settings.base")
    assert told.returncode == 0, told.stderr[-1500:]


def test_production_logs_are_json_lines():
    import json

    result = python("import django, logging; django.setup(); logging.getLogger('evalapp.test').warning('run %d queued', 7)",
                    **COMPLETE)
    assert result.returncode == 0, result.stderr[-1500:]
    record = json.loads(result.stderr.strip().splitlines()[-1])
    assert record["message"] == "run 7 queued" and record["level"] == "WARNING" and record["logger"] == "evalapp.test"
    assert "time" in record


def test_behind_a_trusted_proxy_the_client_address_comes_from_x_forwarded_for():
    code = ("from django.conf import settings as s; print(s.AXES_IPWARE_PROXY_COUNT, "
            "','.join(s.AXES_IPWARE_META_PRECEDENCE_ORDER))")
    bare = manage("shell", "-c", code, **COMPLETE).stdout.strip().splitlines()[-1]
    proxied = manage("shell", "-c", code, **COMPLETE, TRUSTED_PROXY_COUNT="1").stdout.strip().splitlines()[-1]
    assert bare == "None REMOTE_ADDR" and proxied == "1 HTTP_X_FORWARDED_FOR,REMOTE_ADDR"


@pytest.mark.parametrize("value, problem", [
    ("not json", "JSON object"),
    ('["http://a"]', "endpoint names to objects"),
    ('{"v": {"url": "http://gpu1:8000"}}', "needs a url and a model"),
    ('{"v": {"url": "file:///etc/passwd", "model": "m"}}', r"http\(s\) URL"),
    ('{"v": {"url": "http://gpu1:8000", "model": "m", "headers": {}}}', "unknown fields"),
    ('{"v": {"url": "http://gpu1:8000", "model": "m", "logprobs": "yes"}}', "logprobs has the wrong type"),
    ('{"v": {"url": "http://gpu1:8000", "model": "m", "timeout": true}}', "timeout has the wrong type"),
])
def test_judge_endpoints_are_checked_when_the_settings_load(monkeypatch, value, problem):
    from django.core.exceptions import ImproperlyConfigured

    from evalapp.settings.env import env_judge_endpoints

    monkeypatch.setenv("JUDGE_ENDPOINTS", value)
    with pytest.raises(ImproperlyConfigured, match=problem):
        env_judge_endpoints("JUDGE_ENDPOINTS")
    monkeypatch.setenv("JUDGE_ENDPOINTS", '{"vllm": {"url": "http://gpu1:8000", "model": "m", "timeout": 30}}')
    assert env_judge_endpoints("JUDGE_ENDPOINTS") == {"vllm": {"url": "http://gpu1:8000", "model": "m", "timeout": 30}}
