"""Rater groups (e.g. "students", "psychologists"): what the subgroup results and the judge validation
report split raters by. A label, not part of the design: a researcher may set it while a study runs."""

from django.db import transaction

from evalapp.audit import audit
from evalapp.models import Study

from ..models import Role, StudyMembership
from .common import RatingError

GROUP_MAX = 64


def rater_groups_set(*, study: Study, groups: dict[int, str], actor) -> int:
    """Set the group of each rater (user id -> name; "" for none) in one transaction, audited; the number
    changed. Refuses, writing nothing, an id that is not a rater of the study or a name over 64 characters."""
    cleaned = {}
    for user_id, name in groups.items():
        name = " ".join(str(name).split())
        if len(name) > GROUP_MAX or "\x00" in name:
            raise RatingError(f"A group name has at most {GROUP_MAX} characters.")
        cleaned[int(user_id)] = name
    with transaction.atomic():
        members = {m.user_id: m for m in StudyMembership.objects.select_for_update().filter(
            study=study, role=Role.RATER, user_id__in=cleaned)}
        if set(cleaned) - set(members):
            raise RatingError("Only the study's raters have a group.")
        changed = [m for uid, m in members.items() if m.group != cleaned[uid]]
        for m in changed:
            before = m.group
            m.group = cleaned[m.user_id]
            m.save(update_fields=["group"])
            audit(study=study, actor=actor, action="rater.group", obj=m, before={"group": before},
                  after={"group": m.group})
    return len(changed)
