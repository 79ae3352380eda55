"""manage.py release_idle_participants [--study ID]: time out idle pool participants and rebalance."""

from django.core.management.base import BaseCommand, CommandError

from evalapp.models import Study
from raters.services import panel_release_idle


class Command(BaseCommand):
    help = ("Mark pool participants idle past their link's idle_minutes as timed out, give their unfinished "
            "items to the other raters (what they rated stays) and rebalance the design.")

    def add_arguments(self, parser):
        parser.add_argument("--study", type=int, help="Only this study (by id).")

    def handle(self, *args, study=None, **options):
        target = None
        if study is not None:
            target = Study.objects.filter(id=study).first()
            if target is None:
                raise CommandError(f"No study {study}.")
        released = panel_release_idle(study=target)
        for participant in released:
            self.stdout.write(f"timed out: study {participant.study_id}, participant {participant.participant_id}")
        self.stdout.write(f"{len(released)} participant(s) timed out.")
