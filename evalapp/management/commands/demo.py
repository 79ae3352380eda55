"""Set up the demo study and accounts, then serve the site.

`--no-serve` stops before serving; the test suite runs it so the demo cannot rot.
"""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from evalapp.models import Study
from evalapp.prompt_import import COUNSELCHAT_QUESTIONS
from evalapp.services import study_create, study_import_prompts
from raters.models import Role, StudyMembership

DEMO_TITLE = "Demo: CounselChat support responses"
DEMO_PROMPTS = 20
DEMO_SEED = 0
ACCOUNTS = [
    ("demo-researcher", None),
    ("demo-rater-1", Role.RATER),
    ("demo-rater-2", Role.RATER),
    ("demo-rater-3", Role.RATER),
    ("demo-adjudicator", Role.ADJUDICATOR),
]


class Command(BaseCommand):
    help = "Create the demo study and accounts (new passwords each run), then serve the site."

    def add_arguments(self, parser):
        parser.add_argument("--no-serve", action="store_true", help="Prepare everything, then stop.")
        parser.add_argument("--addrport", default="127.0.0.1:8000")

    def handle(self, *args, **options):
        if not settings.DEBUG and not options["no_serve"]:
            raise CommandError("The demo serves with Django's development server; run it with DEBUG=true.")
        passwords, study = self._prepare()
        self.stdout.write("\nDemo accounts (passwords are new on every run):")
        for username, role in ACCOUNTS:
            self.stdout.write(f"  {username:<18} {passwords[username]:<16} {role or 'researcher (owner)'}")
        self.stdout.write(f"\nDemo study #{study.id}: {study.title} ({study.prompts.count()} prompts)")
        if options["no_serve"]:
            return
        self.stdout.write(self.style.SUCCESS(f"\nOpen http://{options['addrport']}/ and log in as demo-researcher.\n"))
        call_command("runserver", options["addrport"], use_reloader=False)

    @transaction.atomic
    def _prepare(self) -> tuple[dict[str, str], Study]:
        User = get_user_model()
        passwords = {}
        users = {}
        for username, _role in ACCOUNTS:
            user, _ = User.objects.get_or_create(username=username)
            passwords[username] = secrets.token_urlsafe(9)
            user.set_password(passwords[username])
            user.save(update_fields=["password"])
            users[username] = user
        owner = users["demo-researcher"]
        study = Study.objects.filter(owner=owner, title=DEMO_TITLE).first()
        if study is None:
            study = study_create(
                owner=owner,
                title=DEMO_TITLE,
                description=f"{DEMO_PROMPTS} test-split CounselChat questions (seed {DEMO_SEED}), rated blind.",
            )
        for username, role in ACCOUNTS:
            if role is not None:
                StudyMembership.objects.get_or_create(
                    study=study, user=users[username], role=role, defaults={"pseudonym": username.replace("demo-", "")}
                )
        report = study_import_prompts(
            study=study,
            data=COUNSELCHAT_QUESTIONS.read_bytes(),
            filename=COUNSELCHAT_QUESTIONS.name,
            split="test",
            sample=DEMO_PROMPTS,
            seed=DEMO_SEED,
        )
        if not report.ok:
            raise CommandError("The bundled CounselChat file failed to import: " + "; ".join(map(str, report.errors)))
        return passwords, study
