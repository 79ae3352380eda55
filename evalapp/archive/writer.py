"""Write a study's archive: a zip of one JSON-lines member per table and a manifest to check them by."""

import hashlib
import json
import zipfile
from datetime import date, datetime
from typing import BinaryIO

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from raters.services import is_researcher

from ..audit import audit
from ..models import Study
from . import manifest as mf
from .tables import TABLES, USER_FIELDS, USERS, fields, foreign_keys, payload_references, table_of

# Tables whose ids other rows point to: an export checks every reference stays inside the study.
_REFERENCED = {table_of(f.related_model) for t in TABLES for f in foreign_keys(t.model)} - {USERS}


def study_export(*, study: Study, target: BinaryIO, actor=None, via: str = "") -> dict:
    """Write the archive of `study` into `target` (a file: it can be large) and return its manifest.

    The rows are read in one transaction, on PostgreSQL at REPEATABLE READ, so a study still being rated
    is archived as it stood at one moment: no score without its rating. The export is audited.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql" and not connection.savepoint_ids:
            # Only the outermost transaction may set its isolation, before its first query.
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        study = Study.objects.get(pk=study.pk)
        manifest = _write(study, target)
        audit(study=study, actor=actor or study.owner, action=mf.EXPORT_ACTION, obj=study,
              after={"format_version": mf.FORMAT_VERSION, "rows": {n: t["rows"] for n, t in manifest["tables"].items()},
                     "via": via})
    return manifest


def _write(study: Study, target: BinaryIO) -> dict:
    manifest = {"format": mf.FORMAT, "format_version": mf.FORMAT_VERSION, "app_version": mf.app_version(),
                "site": mf.site_name(), "exported_at": timezone.now().isoformat(), "origin": mf.origin(study),
                "study": {"id": study.id, "title": study.title}, "tables": {}}
    exported: dict[str, set] = {name: set() for name in _REFERENCED}
    users: set[int] = set()
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for table in TABLES:
            columns = fields(table.model)
            keys = foreign_keys(table.model)
            ids = exported.get(table.name)

            def rows(table=table, columns=columns, keys=keys, ids=ids):
                for obj in table.rows(study).order_by("pk").iterator(chunk_size=2000):
                    row = {f.attname: _plain(f.value_from_object(obj)) for f in columns}
                    for f in keys:
                        value, target_table = row[f.attname], table_of(f.related_model)
                        if value is None:
                            continue
                        if target_table == USERS:
                            users.add(value)
                        elif value not in exported[target_table]:
                            if not f.null:
                                raise mf.ArchiveError(f"{table.name} {obj.pk}: its {f.name} {value} belongs to "
                                                      "another study; such a row cannot be archived with this one.")
                            row[f.attname] = None  # e.g. a training run for another study: the link stays behind
                    for target_table, value in payload_references(table.name, row):
                        if target_table == USERS and str(value).isdigit():
                            users.add(int(value))
                    if ids is not None:
                        ids.add(obj.pk)
                    yield row

            manifest["tables"][table.name] = _member(archive, table.name, [f.attname for f in columns], rows())
        manifest["tables"][USERS] = _member(archive, USERS, ["id", *USER_FIELDS, "researcher"], _user_rows(users))
        archive.writestr(mf.MANIFEST, json.dumps(manifest, indent=2))
    return manifest


def _user_rows(ids: set[int]):
    for user in get_user_model().objects.filter(id__in=ids).order_by("id"):
        yield {"id": user.id, **{name: _plain(getattr(user, name)) for name in USER_FIELDS},
               "researcher": is_researcher(user)}


def _member(archive: zipfile.ZipFile, table: str, columns: list[str], rows) -> dict:
    digest, count = hashlib.sha256(), 0
    with archive.open(mf.member(table), "w", force_zip64=True) as handle:
        for row in rows:
            data = (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
            digest.update(data)
            handle.write(data)
            count += 1
    return {"file": mf.member(table), "rows": count, "sha256": digest.hexdigest(), "fields": columns}


def _plain(value):
    # Full precision: DjangoJSONEncoder would cut timestamps to milliseconds.
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value
