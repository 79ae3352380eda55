from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from evalapp.models import Study
from evalapp.services import study_import_prompts


class Command(BaseCommand):
    help = (
        "Import prompts into a study, all or nothing. Formats: CSV (id,text[,topic,split,reference]), "
        "JSONL (generic, chat messages, <USER>/<AI> transcripts, CounselChat questions), .txt transcripts. "
        f"Limits: {settings.PROMPT_IMPORT_MAX_BYTES:,} bytes a file, {settings.PROMPT_MAX_CHARS:,} characters a message."
    )

    def add_arguments(self, parser):
        parser.add_argument("study", type=int, help="Study id.")
        parser.add_argument("file", type=Path)
        parser.add_argument("--split", help="Import only prompts of this split (e.g. test).")
        parser.add_argument("--sample", type=int, help="Import a random sample of N prompts.")
        parser.add_argument("--seed", type=int, default=0, help="Seed for --sample (default 0).")
        parser.add_argument("--redact", action="store_true", help="Replace e-mail addresses, phone numbers, URLs.")

    def handle(self, *args, **options):
        try:
            study = Study.objects.get(id=options["study"])
        except Study.DoesNotExist:
            raise CommandError(f"No study with id {options['study']}.") from None
        path: Path = options["file"]
        try:
            size = path.stat().st_size
            if size > settings.PROMPT_IMPORT_MAX_BYTES:
                # Read no more than the limit plus one byte: the parser reports the size.
                with path.open("rb") as handle:
                    data = handle.read(settings.PROMPT_IMPORT_MAX_BYTES + 1)
            else:
                data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}.") from None
        report = study_import_prompts(
            study=study,
            data=data,
            filename=path.name,
            split=options["split"],
            sample=options["sample"],
            seed=options["seed"],
            redact=options["redact"],
        )
        for warning in report.warnings:
            self.stdout.write(self.style.WARNING(f"warning: {warning}"))
        for error in report.errors:
            self.stderr.write(f"error: {error}")
        if not report.ok:
            raise CommandError(report.summary())
        self.stdout.write(self.style.SUCCESS(report.summary()))
