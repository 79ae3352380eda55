"""What an archive says about itself: its format, where it came from, and the study's lasting identity."""

from importlib import metadata

from django.conf import settings

from ..models import Study

FORMAT = "empatheval-study-archive"
# Raise it whenever a reader of the old format would misread the new one (a member's meaning, not a
# column: columns are listed per table and checked against this server's models on import).
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
IMPORT_ACTION = "study.import"
EXPORT_ACTION = "study.export"


class ArchiveError(Exception):
    """An archive that cannot be written or read as asked; the message says why."""


def member(table: str) -> str:
    return f"tables/{table}.jsonl"


def app_version() -> str | None:
    try:
        return metadata.version("empatheval")
    except metadata.PackageNotFoundError:
        return None


def site_name() -> str:
    return settings.EMPATHEVAL_SITE_NAME


def origin(study: Study) -> dict:
    """The study's identity wherever it travels: the server it began on, its id and creation time there.

    A study imported here (not as a new copy) keeps the origin its import recorded, so an archive of it
    is still recognised as the same study on a third server, or back on the first.
    """
    imported = study.audit_events.filter(action=IMPORT_ACTION, after__as_new=False).order_by("-id").first()
    if imported is not None:
        return imported.after["source"]
    return {"site": site_name(), "study_id": study.id, "created_at": study.created_at.isoformat()}


def check(manifest: object) -> dict:
    """The manifest, if this server can read the archive it describes; else ArchiveError saying why."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError(f"Not a study archive: its {MANIFEST} does not name the format {FORMAT!r}.")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArchiveError(f"The archive is in format version {version!r}; this server ({app_version()}) reads "
                           f"version {FORMAT_VERSION} only. Export it again from a server of the same version.")
    for key in ("origin", "tables", "site"):
        if key not in manifest:
            raise ArchiveError(f"The archive's {MANIFEST} has no {key!r}.")
    if not isinstance(manifest["tables"], dict) or not all(isinstance(t, dict) for t in manifest["tables"].values()):
        raise ArchiveError(f"The archive's {MANIFEST} does not describe its tables.")
    return manifest
