"""The default queue's tasks, found by Celery's autodiscovery (`<app>.tasks`); each lives with its service."""

from .mail import send_email

__all__ = ["send_email"]
