"""Who may create studies (the researcher role, granted by an administrator, never by oneself), and who
else runs a study with its owner (co-researchers, added and removed by the owner, audited).

The role is Django's own permission to add a study, held through one group, so the admin, the
`create_researcher` command and the staff page all grant the same thing.
"""

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from evalapp.audit import audit

from ..models import Role, StudyMembership
from .common import RatingError

RESEARCHERS_GROUP = "Researchers"
CREATE_STUDY_PERMISSION = "evalapp.add_study"


def is_researcher(user) -> bool:
    return bool(user.is_authenticated and user.is_active and user.has_perm(CREATE_STUDY_PERMISSION))


def _researchers_group() -> Group:
    group, _ = Group.objects.get_or_create(name=RESEARCHERS_GROUP)
    app_label, codename = CREATE_STUDY_PERMISSION.split(".")
    group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return group


@transaction.atomic
def researcher_grant(*, email: str) -> tuple[object, str | None]:
    """Make the account with this e-mail a researcher, creating it if needed.

    Returns the user and, for a new account only, its one-time password (shown once, never stored).
    """
    email = email.strip().lower()
    try:
        validate_email(email)
    except ValidationError:
        raise RatingError(f"{email!r} is not an e-mail address.") from None
    User = get_user_model()
    user = User.objects.filter(email__iexact=email).order_by("id").first()
    password = None
    if user is None:
        if User.objects.filter(username=email).exists():
            raise RatingError(f"An account named {email} exists with another e-mail address.", status=409)
        password = secrets.token_urlsafe(12)
        user = User.objects.create_user(username=email, email=email, password=password)
    researcher_add(user=user)
    return user, password


def researcher_add(*, user) -> None:
    user.groups.add(_researchers_group())


def researcher_revoke(*, user) -> None:
    user.groups.remove(*Group.objects.filter(name=RESEARCHERS_GROUP))


def _owner_only(study, actor) -> None:
    if actor.id != study.owner_id:
        raise RatingError("Only the study's owner adds or removes co-researchers.", status=403)


@transaction.atomic
def coresearcher_add(*, study, actor, email: str):
    """Give an existing account the researcher role in this study (audited)."""
    _owner_only(study, actor)
    user = get_user_model().objects.filter(email__iexact=email.strip()).order_by("id").first()
    if user is None:
        raise RatingError(f"No account has the address {email.strip()!r}; an administrator can create one.",
                          status=404)
    if user.id == study.owner_id:
        raise RatingError("The owner is a researcher of the study already.", status=409)
    membership, created = StudyMembership.objects.get_or_create(study=study, user=user, role=Role.RESEARCHER)
    if created:
        audit(study=study, actor=actor, action="researcher.add", obj=membership, after={"user": user.id})
    return membership


@transaction.atomic
def coresearcher_remove(*, study, actor, user_id: int) -> None:
    _owner_only(study, actor)
    membership = StudyMembership.objects.filter(study=study, user_id=user_id, role=Role.RESEARCHER).first()
    if membership is None:
        raise RatingError("That account is not a co-researcher of this study.", status=404)
    audit(study=study, actor=actor, action="researcher.remove", obj=membership, before={"user": user_id})
    membership.delete()
