"""manage.py create_researcher EMAIL: give an account the researcher role (creating it if needed)."""

from django.core.management.base import BaseCommand, CommandError

from raters.services import RatingError, researcher_grant


class Command(BaseCommand):
    help = "Make the account with this e-mail a researcher, who may create studies; creates it if needed."

    def add_arguments(self, parser):
        parser.add_argument("email")

    def handle(self, *args, email: str, **options):
        try:
            user, password = researcher_grant(email=email)
        except RatingError as exc:
            raise CommandError(str(exc)) from exc
        if password:
            self.stdout.write(f"Created researcher {user.get_username()} with the one-time password {password}")
            self.stdout.write("It is shown only now: pass it on safely and ask them to change it.")
        else:
            self.stdout.write(f"{user.get_username()} is a researcher.")
