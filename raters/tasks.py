"""The default queue's rater tasks, found by Celery's autodiscovery; a beat schedule may run them."""

from celery import shared_task

from .services import panel_release_idle


@shared_task(name="raters.release_idle_participants")
def release_idle_participants() -> int:
    """Time out idle pool participants (manage.py release_idle_participants, on a timer)."""
    return len(panel_release_idle())
