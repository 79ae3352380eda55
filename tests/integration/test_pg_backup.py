"""deploy/backup.sh and deploy/restore.sh against the real server: a dump of the test database, restored
into a fresh database, holds the same rows, table by table, and the same sequence positions."""

import os
import subprocess
import uuid

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from evalapp.archive import study_export
from evalapp.audit import audit
from evalapp.models import AuditEvent
from raters import services as rs
from tests.factories import ArmFactory, MembershipFactory, PromptFactory, RatingFactory, ResponseFactory, StudyFactory

# transaction=True: the rows must be committed for pg_dump, another connection, to see them.
pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
DEPLOY = settings.BASE_DIR / "deploy"


def url(name: str) -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name}"


def server_args() -> list[str]:
    db = connection.settings_dict
    return ["-h", db["HOST"] or "127.0.0.1", "-p", str(db["PORT"] or 5432), "-U", db["USER"]]


@pytest.fixture
def empty_database():
    name = f"{connection.settings_dict['NAME']}_restore_{uuid.uuid4().hex[:8]}"
    subprocess.run(["createdb", *server_args(), name], check=True, timeout=60)
    yield name
    subprocess.run(["dropdb", *server_args(), "--if-exists", name], check=True, timeout=60)


def contents(cursor) -> dict:
    """Per table in the public schema: its row count and a digest of its rows; per sequence, its position."""
    cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
    out = {}
    for (table,) in cursor.fetchall():
        cursor.execute(f'SELECT count(*), md5(coalesce(string_agg(t::text, E\'\\n\' ORDER BY t::text), \'\')) '
                       f'FROM "{table}" t')
        out[table] = tuple(cursor.fetchone())
    cursor.execute("SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public'")
    out["sequences"] = sorted(cursor.fetchall())
    return out


def a_study_in_the_database():
    study = StudyFactory(title="Backed-up study")
    version = rs.consent_publish(study=study, text="Consent text.", withdrawal_policy="exclude")
    arm = ArmFactory(study=study, label="fine-tuned", generation_params={"temperature": 0.7})
    for prompt in PromptFactory.create_batch(3, study=study):
        response = ResponseFactory(prompt=prompt, arm=arm, provenance={"seed": 1, "adapter_sha256": "b" * 64})
        for _ in range(2):
            rater = MembershipFactory(study=study).user
            rs.consent_accept(study=study, user=rater, version=version)
            RatingFactory(response=response, rater=rater, empathy=4)
    audit(study=study, actor=study.owner, action="study.note", obj=study, after={"note": "before the backup"})
    return study


def test_a_restored_dump_holds_every_row(tmp_path, empty_database):
    a_study_in_the_database()
    dump = tmp_path / "site.dump"
    env = {**os.environ, "DATABASE_URL": url(connection.settings_dict["NAME"])}
    backup = subprocess.run(["bash", str(DEPLOY / "backup.sh"), str(dump)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert backup.returncode == 0, backup.stderr
    assert backup.stdout.strip() == str(dump) and oct(dump.stat().st_mode & 0o777) == "0o600"

    restore = subprocess.run(["bash", str(DEPLOY / "restore.sh"), str(dump), url(empty_database)],
                             capture_output=True, text=True, timeout=300)
    assert restore.returncode == 0, restore.stderr

    with connection.cursor() as cursor:
        original = contents(cursor)
    with psycopg.connect(url(empty_database)) as restored, restored.cursor() as cursor:
        copy = contents(cursor)
    assert copy == original
    assert original["evalapp_score"][0] == 12 and original["raters_consent"][0] == 6

    again = subprocess.run(["bash", str(DEPLOY / "restore.sh"), str(dump), url(empty_database)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "restore into an empty one" in again.stderr


def test_a_failed_backup_leaves_no_file(tmp_path):
    env = {**os.environ, "DATABASE_URL": url(f"no_such_database_{uuid.uuid4().hex[:8]}")}
    failed = subprocess.run(["bash", str(DEPLOY / "backup.sh"), str(tmp_path / "site.dump")], env=env,
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode != 0 and "no_such_database" in failed.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_study_export_reads_its_study_at_one_moment(tmp_path):
    # Outside the test's transaction (the path a command takes) the export opens its own, at REPEATABLE READ,
    # before its first query: every table is read from one snapshot while raters keep rating.
    study = a_study_in_the_database()
    statements = []

    def record(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record), open(tmp_path / "study.zip", "wb") as target:
        manifest = study_export(study=study, target=target)
    assert statements[0] == "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"
    assert manifest["tables"]["scores"]["rows"] == 12
    assert AuditEvent.objects.filter(study=study, action="study.export").exists()
