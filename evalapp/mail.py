"""E-mail the site sends (invitations, harmful-response alerts): a task on the default queue.

Sending is a Celery task so a slow or failing SMTP server never holds a request: the `worker` service
(default queue, README "Deploy on a GPU server") sends it, retrying with backoff. The message is queued
only once the transaction that made it commits, so a rolled-back invitation mails nobody. Without a broker
(the demo) the task runs in the process at once. When the broker is configured but does not answer,
the mail is sent in the request rather than lost: the row that asked for it is already committed.
"""

import logging
import smtplib

from celery import shared_task
from django.core.mail import send_mail
from django.db import transaction
from kombu.exceptions import OperationalError

logger = logging.getLogger(__name__)

SEND_EMAIL = "evalapp.send_email"


@shared_task(name=SEND_EMAIL, autoretry_for=(smtplib.SMTPException, OSError), retry_backoff=10,
             retry_backoff_max=600, max_retries=8, acks_late=True)
def send_email(subject: str, body: str, recipients: list[str], from_email: str | None = None) -> int:
    return send_mail(subject, body, from_email, recipients)


def _queue(subject: str, body: str, recipients: list[str], from_email: str | None) -> None:
    try:
        # No publish retries: a broker that is down should not hold the request for their backoff.
        send_email.apply_async(args=(subject, body, recipients, from_email), retry=False)
    except OperationalError as exc:
        logger.warning("mail queue unavailable (%s); sending %r to %d recipient(s) in the request",
                       exc, subject, len(recipients))
        send_mail(subject, body, from_email, recipients)


def mail_on_commit(subject: str, body: str, recipients: list[str], from_email: str | None = None) -> None:
    """Queue one message for the default-queue worker once the current transaction commits."""
    transaction.on_commit(lambda: _queue(subject, body, list(recipients), from_email))
