"""Read a study's archive into this database: every member checked first, then all rows or none."""

import contextlib
import hashlib
import json
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction

from raters.services import researcher_add

from ..audit import audit
from ..models import AuditEvent, Study
from . import manifest as mf
from .tables import JOB_TABLES, TABLES, USER_FIELDS, USERS, fields, remap_payload, table_of

BATCH = 1000
# Bounds on what an archive may make this server read, checked from the zip's directory before anything is
# decompressed (zipfile stops each member at its declared size and checks its CRC, so the declared sizes bound
# the real work): a zip bomb is refused, not unpacked. Far above any study measured (a million ratings with
# their scores is under 1 GB of JSON lines).
MAX_UNCOMPRESSED_BYTES = 32 * 1024**3
# Deflate reaches about 1000:1 on a run of one byte; JSON lines of real rows compress some 5-20:1.
MAX_RATIO = 200
RATIO_FROM_BYTES = 10 * 1024**2
MAX_MANIFEST_BYTES = 1024**2
MAX_LINE_BYTES = 64 * 1024**2
# Any fixed number: every import takes this lock, so two imports of one archive cannot both pass the check.
_IMPORT_LOCK = 0x5354_5544_5941_5243


@dataclass
class ImportResult:
    study: Study
    rows: dict[str, int]
    users_created: list[str] = field(default_factory=list)
    users_matched: list[str] = field(default_factory=list)


class _DryRun(Exception):
    def __init__(self, result: ImportResult):
        self.result = result


def study_import(*, source: BinaryIO | str | Path, as_new: bool = False, actor=None, via: str = "",
                 dry_run: bool = False) -> ImportResult:
    """Import an archive written by study_export, with new primary keys, in one transaction.

    Refused (ArchiveError, nothing written) for another format version, a member whose checksum or row
    count differs from the manifest, columns this server's models lack or add, accounts that clash, or
    a study already here (the original, or an earlier import of it) unless `as_new`: a copy beside it,
    whose public ids and invitation hashes are drawn anew. With `dry_run` the whole import runs and is
    rolled back: the result says which accounts it would match and create.
    """
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise mf.ArchiveError(f"Not a readable zip file: {exc}.") from None
    with archive:
        _check_container(archive)
        try:
            manifest = mf.check(json.loads(archive.read(mf.MANIFEST)))
        except KeyError:
            raise mf.ArchiveError(f"Not a study archive: it has no {mf.MANIFEST}.") from None
        except ValueError as exc:
            raise mf.ArchiveError(f"The archive's {mf.MANIFEST} is not JSON: {exc}.") from None
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise mf.ArchiveError(f"The archive's {mf.MANIFEST} is damaged: {exc}.") from None
        _check_members(archive, manifest)
        try:
            with transaction.atomic():
                result = _import(archive, manifest, as_new=as_new, actor=actor, via=via)
                if dry_run:
                    raise _DryRun(result)
                return result
        except _DryRun as rolled_back:
            return rolled_back.result
        except (DatabaseError, ValidationError, ValueError, TypeError, KeyError, zipfile.BadZipFile, zlib.error,
                EOFError) as exc:
            # The rows passed their checksums, so the archive was written so (or by hand): nothing is kept.
            raise mf.ArchiveError(f"The archive's rows do not fit this database; nothing was imported: {exc}") from None


def _check_container(archive: zipfile.ZipFile) -> None:
    """Only the members a study archive has, each of a size this server will read."""
    expected = {mf.MANIFEST, mf.member(USERS), *(mf.member(t.name) for t in TABLES)}
    infos = archive.infolist()
    unknown = sorted({info.filename for info in infos} - expected)
    if unknown or len(infos) != len({info.filename for info in infos}):
        shown = ", ".join(repr(name) for name in unknown[:5]) or "a name repeated"
        raise mf.ArchiveError(f"Not a study archive: it holds members no study archive has ({shown}"
                              f"{', ...' if len(unknown) > 5 else ''}). Nothing was read.")
    total = sum(info.file_size for info in infos)
    if total > MAX_UNCOMPRESSED_BYTES:
        raise mf.ArchiveError(f"The archive would unpack to {total:,} bytes; this server reads at most "
                              f"{MAX_UNCOMPRESSED_BYTES:,}. Nothing was read.")
    for info in infos:
        if info.file_size > RATIO_FROM_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise mf.ArchiveError(f"The archive's member {info.filename} unpacks {info.file_size // max(info.compress_size, 1):,}"
                                  f" times its size ({info.file_size:,} bytes): a zip bomb, not rows. Nothing was read.")
        if info.filename == mf.MANIFEST and info.file_size > MAX_MANIFEST_BYTES:
            raise mf.ArchiveError(f"The archive's {mf.MANIFEST} is {info.file_size:,} bytes; a manifest is a few "
                                  f"kilobytes (at most {MAX_MANIFEST_BYTES:,}). Nothing was read.")


def _lines(handle):
    """The member's lines, none longer than MAX_LINE_BYTES (one row is never that long)."""
    while True:
        line = handle.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES:
            raise mf.ArchiveError(f"A line of the archive is longer than {MAX_LINE_BYTES:,} bytes: not a row.")
        yield line


def _check_members(archive: zipfile.ZipFile, manifest: dict) -> None:
    expected = {t.name: [f.attname for f in fields(t.model)] for t in TABLES}
    expected[USERS] = ["id", *USER_FIELDS, "researcher"]
    tables = manifest["tables"]
    if set(tables) != set(expected):
        missing, extra = sorted(set(expected) - set(tables)), sorted(set(tables) - set(expected))
        raise mf.ArchiveError(f"The archive's tables differ from this server's: missing {missing or 'none'}, "
                              f"unknown {extra or 'none'}. Export it again from a server of this version.")
    if tables["study"].get("rows") != 1:
        raise mf.ArchiveError("The archive holds no study (or more than one).")
    for name, columns in expected.items():
        info = tables[name]
        if info.get("fields") != columns:
            raise mf.ArchiveError(f"The archive's {name} columns ({info.get('fields')}) differ from this server's "
                                  f"({columns}): it comes from another version of the schema.")
        digest, count = hashlib.sha256(), 0
        try:
            with archive.open(mf.member(name)) as handle:
                for line in _lines(handle):
                    digest.update(line)
                    count += 1
        except KeyError:
            raise mf.ArchiveError(f"The archive has no member {mf.member(name)}.") from None
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise mf.ArchiveError(f"The archive's member {mf.member(name)} is damaged: {exc}.") from None
        if digest.hexdigest() != info.get("sha256") or count != info.get("rows"):
            raise mf.ArchiveError(f"Checksum mismatch: {mf.member(name)} is not the file the manifest describes "
                                  f"(sha256 {digest.hexdigest()[:12]}..., {count} rows; the manifest says "
                                  f"{str(info.get('sha256'))[:12]}..., {info.get('rows')} rows).")


def _rows(archive: zipfile.ZipFile, name: str):
    with archive.open(mf.member(name)) as handle:
        for number, line in enumerate(_lines(handle), start=1):
            yield number, json.loads(line)


def _import(archive, manifest: dict, *, as_new: bool, actor, via: str) -> ImportResult:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_IMPORT_LOCK])
    source = manifest["origin"]
    if not as_new:
        _refuse_a_second_copy(source)
    maps: dict[str, dict] = {}
    result = ImportResult(study=None, rows={})
    maps[USERS] = _users(archive, result)
    with _timestamps_as_archived():
        for table in TABLES:
            result.rows[table.name] = _load(archive, table, maps, as_new)
    study = Study.objects.get(pk=next(iter(maps["study"].values())))
    for table in TABLES:
        if table.name in JOB_TABLES:
            # The worker that ran it is on the other server: here it can only be resumed.
            table.model.abandon(list(maps[table.name].values()), f"Was queued or running on {manifest['site']} "
                                                                 "when the study was exported; resume it here.")
    result.study = study
    audit(study=study, actor=actor or study.owner, action=mf.IMPORT_ACTION, obj=study,
          after={"source": source, "as_new": as_new, "site": manifest["site"],
                 "exported_at": manifest.get("exported_at"), "app_version": manifest.get("app_version"),
                 "rows": result.rows, "users_created": result.users_created, "via": via})
    return result


def _refuse_a_second_copy(source: dict) -> None:
    try:
        created_at = datetime.fromisoformat(source["created_at"])
        study_id = int(source["study_id"])
    except (KeyError, TypeError, ValueError):
        raise mf.ArchiveError("The archive's origin names no study id and creation time.") from None
    # Ids differ between servers, but a study id and a creation time to the microsecond do not repeat.
    original = Study.objects.filter(id=study_id, created_at=created_at).first()
    copy = AuditEvent.objects.filter(action=mf.IMPORT_ACTION, after__as_new=False, after__source__study_id=study_id,
                                     after__source__created_at=source["created_at"]).order_by("id").first()
    here = original or (copy.study if copy else None)
    if here is not None:
        raise mf.ArchiveError(f"This study is already here as study {here.id} (“{here.title}”, begun on "
                              f"{source.get('site')} as study {study_id}). Import it with --as-new for a "
                              "separate copy, or delete that study first.")


def _users(archive, result: ImportResult) -> dict[int, int]:
    """Archived accounts matched to accounts here by username or e-mail; the others created, with no password."""
    User = get_user_model()
    mapping, clashes, new = {}, [], []
    for _, row in _rows(archive, USERS):
        email = (row["email"] or "").strip()
        here = User.objects.filter(username=row["username"]).first()
        if here is not None and email and here.email and here.email.casefold() != email.casefold():
            clashes.append(f"{row['username']} (the archive's e-mail {email}, here {here.email})")
            continue
        if here is None and email:
            same = list(User.objects.filter(email__iexact=email).order_by("id")[:2])
            if len(same) > 1:
                clashes.append(f"{row['username']} ({email} belongs to several accounts here)")
                continue
            here = same[0] if same else None
        if here is not None and here.id in mapping.values():
            clashes.append(f"{row['username']} (matches {here.get_username()} here, as another archived account does)")
        elif here is not None:
            mapping[row["id"]] = here.id
            result.users_matched.append(f"{row['username']}={here.get_username()}")
        else:
            new.append(row)
    if clashes:
        raise mf.ArchiveError("Accounts of the archive clash with accounts here: " + "; ".join(clashes)
                              + ". Make the e-mail addresses agree (or rename one account) and import again.")
    for row in new:
        user = User(**{name: User._meta.get_field(name).to_python(row[name]) for name in USER_FIELDS})
        # The password stays on the other server: an administrator gives a new one (manage.py changepassword).
        user.set_unusable_password()
        user.save()
        if row["researcher"]:
            researcher_add(user=user)
        mapping[row["id"]] = user.id
        result.users_created.append(user.get_username())
    return mapping


def _load(archive, table, maps: dict[str, dict], as_new: bool) -> int:
    columns = fields(table.model)
    pk = table.model._meta.pk.attname
    names = {f.attname for f in columns}
    fresh = dict(table.fresh) if as_new else {}
    mapping = maps.setdefault(table.name, {})
    pending: list[tuple[int, object]] = []
    count = 0

    def flush():
        objects = table.model.objects.bulk_create([obj for _, obj in pending])
        for (source_id, _), obj in zip(pending, objects, strict=True):
            mapping[source_id] = obj.pk
        pending.clear()

    for number, row in _rows(archive, table.name):
        if not isinstance(row, dict) or set(row) != names:
            raise mf.ArchiveError(f"{mf.member(table.name)} line {number}: not a row of {sorted(names)}.")
        values = {}
        for f in columns:
            if f.primary_key:
                continue
            value = row[f.attname]
            if f.is_relation and value is not None:
                value = maps[table_of(f.related_model)].get(value)
                if value is None and not f.null:
                    raise mf.ArchiveError(f"{mf.member(table.name)} line {number}: {f.name} {row[f.attname]} is "
                                          "not in the archive.")
            elif f.attname in fresh:
                value = fresh[f.attname]()
                maps.setdefault(f"{table.name}.{f.attname}", {})[row[f.attname]] = value
            else:
                value = f.to_python(value)
            values[f.attname] = value
        remap_payload(table.name, values, maps)
        count += 1
        if table.reuse:
            existing = table.model.objects.filter(**{name: values[name] for name in table.reuse}).first()
            if existing is not None:
                mapping[row[pk]] = existing.pk
                continue
        pending.append((row[pk], table.model(**values)))
        if len(pending) >= BATCH:
            flush()
    flush()
    return count


@contextlib.contextmanager
def _timestamps_as_archived():
    """Keep the archived created_at/updated_at: auto_now fields would stamp every row with the import's time.

    The flags are switched off on the model fields for the import's duration; the import runs from the
    command line, never inside a web process whose other requests would then save without timestamps.
    """
    switched = []
    for table in TABLES:
        for f in table.model._meta.concrete_fields:
            if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
                switched.append((f, f.auto_now, f.auto_now_add))
                f.auto_now = f.auto_now_add = False
    try:
        yield
    finally:
        for f, auto_now, auto_now_add in switched:
            f.auto_now, f.auto_now_add = auto_now, auto_now_add
