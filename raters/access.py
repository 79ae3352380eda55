"""The only way a view fetches a study or its rows for a user.

A study the user has no role in is answered with 404, never 403, so that
study ids don't leak to outsiders. A rater who withdrew has no role left: they
see nothing more of the study (raters.services.consent_withdraw). An excluded
rater keeps theirs, so that they can still withdraw; the rating pages turn them
away (raters.views.gate).
"""

from collections.abc import Iterable

from django.db.models import Q, QuerySet
from django.http import Http404

from evalapp.models import Study

from .models import Role, StudyMembership

ALL_ROLES = (Role.RESEARCHER, Role.RATER, Role.ADJUDICATOR)


def _memberships(user) -> QuerySet[StudyMembership]:
    return StudyMembership.objects.filter(user=user, withdrawn_at__isnull=True)


def studies_for(user, roles: Iterable[str] = ALL_ROLES) -> QuerySet[Study]:
    if not user.is_authenticated:
        return Study.objects.none()
    roles = list(roles)
    member_of = _memberships(user).filter(role__in=roles).values("study_id")
    condition = Q(id__in=member_of)
    if Role.RESEARCHER in roles:
        condition |= Q(owner=user)
    return Study.objects.filter(condition)


def roles_in(user, study: Study) -> set[str]:
    if not user.is_authenticated:
        return set()
    roles = set(_memberships(user).filter(study=study).values_list("role", flat=True))
    if study.owner_id == user.id:
        roles.add(Role.RESEARCHER)
    return roles


def get_study_for(user, study_id: int, roles: Iterable[str] = ALL_ROLES) -> Study:
    try:
        return studies_for(user, roles).get(id=study_id)
    except Study.DoesNotExist:
        raise Http404("No such study.") from None
