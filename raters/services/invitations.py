"""Single-use invitation links: create (and mail), look up by token, accept once."""

import hashlib
import re
import secrets
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone

from evalapp.mail import mail_on_commit
from evalapp.models import Study

from ..models import Invitation, Role, StudyMembership
from .common import RatingError
from .design import design_rebalance


def _token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invitation_create(*, study: Study, created_by, role: str, email: str = "", days: int = 14, accept_url=None):
    """Create a single-use invitation; returns (invitation, token). Mails the link when there is an address."""
    if role not in Role.values or role == Role.RESEARCHER and study.owner_id != created_by.id:
        raise RatingError("Only the study's owner can invite researchers.")
    token = secrets.token_urlsafe(24)
    invitation = Invitation.objects.create(
        study=study,
        email=email,
        role=role,
        token_sha256=_token_sha256(token),
        created_by=created_by,
        expires_at=timezone.now() + timedelta(days=days),
    )
    if email and accept_url is not None:
        link = accept_url(token)
        mail_on_commit(
            f"Invitation to take part in “{study.title}”",
            f"You are invited to take part in the study “{study.title}” as {role}.\n\n"
            f"Accept within {days} days: {link}\n\nThe link works once.",
            [email],
            settings.DEFAULT_FROM_EMAIL,
        )
    return invitation, token


def _is_email(text: str) -> bool:
    try:
        validate_email(text)
    except ValidationError:
        return False
    return True


def invitations_create_from_list(*, study: Study, created_by, role: str, emails_text: str, accept_url) -> list:
    emails = [e.strip() for e in re.split(r"[\s,;]+", emails_text) if e.strip()]
    if bad := [e for e in emails if not _is_email(e)]:
        raise RatingError(f"Not e-mail addresses: {', '.join(bad)}. Nothing was sent.")
    if not emails:
        raise RatingError("Give at least one e-mail address.")
    with transaction.atomic():
        return [
            invitation_create(study=study, created_by=created_by, role=role, email=e, accept_url=accept_url)[0]
            for e in dict.fromkeys(emails)
        ]


def invitation_for_token(token: str) -> Invitation:
    invitation = Invitation.objects.select_related("study").filter(token_sha256=_token_sha256(token)).first()
    if invitation is None:
        raise RatingError("This invitation link is not valid.", status=404)
    if invitation.accepted_at is not None:
        raise RatingError("This invitation has already been used.", status=410)
    if invitation.expires_at < timezone.now():
        raise RatingError("This invitation has expired; ask the researcher for a new one.", status=410)
    return invitation


def invitation_accept(*, token: str, user) -> StudyMembership:
    invitation = invitation_for_token(token)
    with transaction.atomic():
        # Single use even under a double click: only one request flips accepted_at.
        claimed = Invitation.objects.filter(id=invitation.id, accepted_at__isnull=True).update(
            accepted_at=timezone.now(), accepted_by=user
        )
        if not claimed:
            raise RatingError("This invitation has already been used.", status=410)
        membership, _ = StudyMembership.objects.get_or_create(
            study=invitation.study, user=user, role=invitation.role, defaults={"pseudonym": new_pseudonym(invitation.study)}
        )
        if membership.role == Role.RATER:  # with no consent text or calibration they may rate right away
            design_rebalance(study=invitation.study)
    return membership


def new_pseudonym(study: Study) -> str:
    taken = set(StudyMembership.objects.filter(study=study).values_list("pseudonym", flat=True))
    while True:
        candidate = "R-" + secrets.token_hex(3).upper()
        if candidate not in taken:
            return candidate
