"""The default queue's tasks, found by Celery's autodiscovery (`<app>.tasks`); each lives with its service."""

from .mail import send_email
from .results import compute_results

__all__ = ["compute_results", "send_email"]
