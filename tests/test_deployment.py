"""The compose files, the Dockerfile and .env.example, checked without a Docker engine.

Where the compose plugin exists `docker compose config` is the judge; here it does not, so the files are
interpolated the way compose interpolates them (${VAR}, ${VAR:-default}, ${VAR:?error}, $$), validated
against the Compose Specification's own JSON schema (tests/data/compose-spec.json, from
github.com/compose-spec/compose-spec, Apache-2.0), and every service, healthcheck, dependency, volume and
variable checked against what the settings read.
"""

import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
SCHEMA = yaml.safe_load((ROOT / "tests/data/compose-spec.json").read_text())
APP_SERVICES = ("migrate", "web", "worker", "worker-gpu")
SECRETS = ("SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD")
_VAR = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


class Missing(Exception):
    pass


def interpolate(text: str, env: dict) -> str:
    """Compose's interpolation, enough of it for these files; a required variable unset raises Missing."""

    def one(match):
        if match.group(0) == "$$":
            return "$"
        if match.group("plain"):
            return env.get(match.group("plain"), "")
        expr = match.group("braced")
        found = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?)([-?])(.*))?", expr, re.S)
        assert found, f"unsupported interpolation ${{{expr}}}"
        name, colon, op, arg = found.groups()
        value = env.get(name)
        unset = value is None or (colon == ":" and value == "")
        if op == "-":
            return interpolate(arg, env) if unset else value
        if op == "?":
            if unset:
                raise Missing(f"{name}: {arg}")
            return value
        return value or ""

    return _VAR.sub(one, text)


def env_example() -> dict:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def complete_env() -> dict:
    env = env_example()
    # As .env.example says to make them (a short SECRET_KEY is a check --deploy warning).
    env.update({name: secrets.token_urlsafe(50) for name in SECRETS})
    env.update(ALLOWED_HOSTS="eval.lab.example", MAIN_HOST="10.0.0.5", DATA_DIR="/mnt/empatheval-data")
    return env


def load(name: str, env: dict) -> dict:
    text = interpolate((ROOT / name).read_text(), env)
    return yaml.safe_load(text)


def compose_config(name: str, env: dict) -> dict:
    """`docker compose config` where the plugin exists; else the interpolated YAML."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        result = subprocess.run(["docker", "compose", "-f", name, "config", "--format", "json", "--no-interpolate"],
                                cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    return load(name, env)


def command_text(service: dict) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else command


@pytest.fixture(scope="module")
def compose():
    return compose_config("docker-compose.yml", complete_env())


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.gpu-node.yml"])
def test_compose_files_follow_the_compose_specification(name):
    config = compose_config(name, complete_env())
    # The schema types an interpolated port or count as a string; compose casts them the same way.
    jsonschema.Draft7Validator(SCHEMA).validate(config)


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.gpu-node.yml"])
@pytest.mark.parametrize("secret", SECRETS)
def test_a_missing_secret_stops_compose_with_its_name(name, secret):
    env = complete_env()
    env[secret] = ""
    with pytest.raises(Missing, match=secret):
        load(name, env)


def test_every_service_is_there_with_healthchecks_and_the_right_order(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "web", "worker", "worker-gpu"}
    postgres, redis = services["postgres"], services["redis"]
    assert postgres["image"] == "postgres:16" and "pgdata:/var/lib/postgresql/data" in postgres["volumes"]
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert redis["image"] == "redis:7"
    assert "--maxmemory-policy noeviction" in command_text(redis) and "--appendonly yes" in command_text(redis)
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])

    migrate = services["migrate"]
    assert "migrate --noinput" in command_text(migrate) and "collectstatic" in command_text(migrate)
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                     "redis": {"condition": "service_healthy"}}
    for name in ("web", "worker", "worker-gpu"):
        assert services[name]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}, name
        assert "migrate" not in command_text(services[name]), f"{name} must not migrate: replicas would race"
        assert services[name]["healthcheck"]["test"], name

    web = services["web"]
    assert command_text(web).startswith("gunicorn evalapp.wsgi:application")
    assert web["healthcheck"]["test"] == ["CMD", "python", "deploy/healthcheck.py"]
    assert web["ports"] == ["127.0.0.1:8000:8000"], "the web port is for the proxy on the host only"
    assert "-Q celery" in command_text(services["worker"])

    gpu = services["worker-gpu"]
    assert "-Q gpu" in command_text(gpu) and "--concurrency 1" in command_text(gpu)
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "models:/models" in gpu["volumes"] and "data:/data" in gpu["volumes"]
    for name in ("postgres", "redis"):
        assert all(port.startswith("127.0.0.1:") for port in services[name]["ports"]), name


def test_every_named_volume_is_declared_and_used(compose):
    declared = set(compose["volumes"])
    used = {volume.split(":")[0] for service in compose["services"].values() for volume in service.get("volumes", [])
            if not volume.startswith((".", "/"))}
    assert used == declared


def settings_variables() -> set[str]:
    """Every environment variable the product reads: the settings' env_* calls and the model library's."""
    names = set()
    for path in [*(ROOT / "evalapp/settings").glob("*.py"), *(ROOT / "modelserver").rglob("*.py")]:
        text = path.read_text()
        names |= set(re.findall(r'env_(?:str|int|bool|list|optional|choice|str_map)\(\s*"([A-Z0-9_]+)"', text))
        names |= set(re.findall(r'os\.environ(?:\.get)?[\[(]\s*"([A-Z0-9_]+)"', text))
        names |= set(re.findall(r'^[A-Z_]+_ENV = "([A-Z0-9_]+)"', text, re.M))
    return names


def test_every_variable_given_to_the_app_is_one_the_settings_read(compose):
    read = settings_variables() | {"DJANGO_SETTINGS_MODULE", "HF_HOME"}
    for name in APP_SERVICES:
        given = set(compose["services"][name].get("environment", {}))
        assert given <= read, f"{name} sets variables nothing reads: {sorted(given - read)}"
        assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS"} <= given, name
        assert compose["services"][name]["environment"]["DJANGO_SETTINGS_MODULE"] == "evalapp.settings.production"


def test_env_example_documents_every_variable_and_defaults_no_secret():
    documented = env_example()
    for name in ("docker-compose.yml", "docker-compose.gpu-node.yml"):
        text = (ROOT / name).read_text()
        used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
        assert used <= set(documented), f"{name} uses variables .env.example does not document: {used - set(documented)}"
        for secret in SECRETS:
            assert re.search(r"\$\{" + secret + r":\?", text), f"{name}: {secret} must be required, never defaulted"
            assert not re.search(r"\$\{" + secret + r":?-", text), f"{name}: {secret} has a default"
    assert all(documented[name] == "" for name in (*SECRETS, "EMAIL_HOST_PASSWORD", "ALLOWED_HOSTS"))


def test_check_deploy_is_silent_with_the_environment_compose_gives_the_web(compose):
    env = {k: str(v) for k, v in compose["services"]["web"]["environment"].items()}
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS",
                                                              "DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE")}
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env={**base, **env},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "no issues" in result.stdout, result.stdout + result.stderr


def test_gpu_node_runs_only_a_gpu_worker_against_the_main_server():
    config = compose_config("docker-compose.gpu-node.yml", complete_env())
    assert set(config["services"]) == {"worker-gpu"}
    worker = config["services"]["worker-gpu"]
    assert "@10.0.0.5:5432/" in worker["environment"]["DATABASE_URL"]
    assert "@10.0.0.5:6379/" in worker["environment"]["REDIS_URL"]
    assert "/mnt/empatheval-data:/data" in worker["volumes"]
    assert set(worker["environment"]) <= settings_variables() | {"DJANGO_SETTINGS_MODULE"}
    env = complete_env()
    env["MAIN_HOST"] = ""
    with pytest.raises(Missing, match="MAIN_HOST"):
        load("docker-compose.gpu-node.yml", env)


def test_the_image_is_multi_stage_non_root_cpu_by_default():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+ AS (\w+)", text, re.M)
    assert stages == ["build", "runtime"]
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", text, re.M)
    runtime = text.split("AS runtime", 1)[1]
    user = re.findall(r"^USER (\S+)", runtime, re.M)
    assert user and user[-1] not in ("root", "0")
    assert "DJANGO_SETTINGS_MODULE=evalapp.settings.production" in runtime
    for path in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (ROOT / path).exists(), f"the Dockerfile copies {path}, which is not in the repository"


def test_the_build_context_leaves_out_secrets_and_local_state():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".env", ".git", ".venv", "var"} <= ignored
    # Whatever the Dockerfile copies must not be ignored.
    text = (ROOT / "Dockerfile").read_text()
    for path in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for name in path.split():
            assert name not in ignored, f"the Dockerfile copies {name}, which .dockerignore leaves out"


def test_every_service_reads_the_whole_env_file():
    # The README's configuration table promises that any variable in .env reaches the containers.
    for name in ("docker-compose.yml", "docker-compose.gpu-node.yml"):
        for service, spec in load(name, complete_env())["services"].items():
            if "build" in spec:
                assert spec.get("env_file") in (".env", [".env"]) or any(
                    e == ".env" or isinstance(e, dict) and e.get("path") == ".env" for e in spec.get("env_file", [])
                ), f"{name}: {service} does not read .env"
