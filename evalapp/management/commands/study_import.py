from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from evalapp.archive import ArchiveError, study_import

from .study_export import actor_named


class Command(BaseCommand):
    help = ("Import a study archive written by study_export, all or nothing, with new ids. Accounts are matched by "
            "username, else e-mail (an account with the same username and no e-mail on either side is taken to be "
            "the same person: check with --dry-run); missing ones are created without a password. A study already "
            "here is refused unless --as-new.")

    def add_arguments(self, parser):
        parser.add_argument("archive", type=Path, help="The zip study_export wrote.")
        parser.add_argument("--as-new", action="store_true",
                            help="Import beside the same study already here, as a separate copy (new public ids).")
        parser.add_argument("--dry-run", action="store_true",
                            help="Run the whole import and roll it back: shows the accounts it would match and create.")
        parser.add_argument("--actor", help="Username the audit trail records for the import (default: the owner).")

    def handle(self, *args, **options):
        actor = actor_named(options["actor"])
        path: Path = options["archive"]
        if not path.is_file():
            raise CommandError(f"No file {path}.")
        try:
            result = study_import(source=path, as_new=options["as_new"], actor=actor, via="manage.py study_import",
                                  dry_run=options["dry_run"])
        except ArchiveError as exc:
            raise CommandError(str(exc)) from None
        study = result.study
        if options["dry_run"]:
            self.stdout.write(f"Dry run, nothing written: the import would add study “{study.title}” with "
                              f"{sum(result.rows.values())} rows.")
        else:
            self.stdout.write(self.style.SUCCESS(
                f"Imported study {study.id} (“{study.title}”): {sum(result.rows.values())} rows."))
        self.stdout.write(", ".join(f"{name} {n}" for name, n in result.rows.items()))
        if result.users_matched:
            self.stdout.write(f"Accounts matched here: {', '.join(result.users_matched)}.")
        if result.users_created:
            self.stdout.write(self.style.WARNING(
                f"Accounts created without a password: {', '.join(result.users_created)}. Give each one a password "
                "(manage.py changepassword NAME) before they log in."))
        if not options["dry_run"]:
            self.stdout.write(str(study.id))  # last, alone: for scripts
