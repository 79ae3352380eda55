import os
import tempfile
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from evalapp.archive import ArchiveError, study_export
from evalapp.models import Study


def actor_named(username: str | None):
    if username is None:
        return None
    try:
        return get_user_model().objects.get_by_natural_key(username)
    except get_user_model().DoesNotExist:
        raise CommandError(f"No account named {username!r}.") from None


class Command(BaseCommand):
    help = ("Write a study and everything that belongs to it (design, prompts, arms, responses with provenance, "
            "ratings, adjudications, audit trail, consent, calibration, the accounts involved without passwords, "
            "adapters' metadata and hashes) into a zip that study_import reads on another server.")

    def add_arguments(self, parser):
        parser.add_argument("study", type=int, help="Study id.")
        parser.add_argument("out", type=Path, help="The zip to write (replaced if it exists).")
        parser.add_argument("--actor", help="Username the audit trail records for the export (default: the owner).")

    def handle(self, *args, **options):
        try:
            study = Study.objects.get(id=options["study"])
        except Study.DoesNotExist:
            raise CommandError(f"No study with id {options['study']}.") from None
        actor = actor_named(options["actor"])
        out: Path = options["out"]
        # Written beside the target and renamed at the end: a failed export leaves no half-written zip.
        try:
            handle, part = tempfile.mkstemp(dir=out.resolve().parent, prefix=f".{out.name}.", suffix=".part")
        except OSError as exc:
            raise CommandError(f"Cannot write into {out.parent}: {exc.strerror}.") from None
        try:
            with os.fdopen(handle, "wb") as target:
                manifest = study_export(study=study, target=target, actor=actor, via="manage.py study_export")
            os.replace(part, out)
        except ArchiveError as exc:
            raise CommandError(str(exc)) from None
        finally:
            if os.path.exists(part):
                os.unlink(part)
        rows = {name: info["rows"] for name, info in manifest["tables"].items()}
        self.stdout.write(self.style.SUCCESS(
            f"Wrote {out}: study {study.id} (“{study.title}”), {sum(rows.values())} rows in {len(rows)} tables."))
        self.stdout.write(", ".join(f"{name} {n}" for name, n in rows.items()))
