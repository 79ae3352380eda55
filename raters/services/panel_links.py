"""Participant pools, the researcher's side: a study's entry links saved (checked field by field, so a
form shows each problem in place), closed, opened again, or deleted while no one has entered by them.
"""

from collections.abc import Mapping

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from evalapp.audit import audit
from evalapp.models import Study

from ..panel_models import PRESET_PARAMS, PanelLink
from .common import RatingError

LINK_FIELDS = ("label", "preset", "enabled", "id_param", "study_param", "session_param", "assignment_param",
               "code_completed", "code_screened_out", "code_returned", "code_timed_out", "redirect_completed",
               "redirect_screened_out", "redirect_returned", "idle_minutes", "gap_minutes")


class LinkInvalid(RatingError):
    """A link's settings refused, field by field (None: the link as a whole), for a form to show in place."""

    def __init__(self, errors: dict[str | None, list[str]]):
        self.errors = errors
        super().__init__(" ".join(f"{field}: {' '.join(msgs)}" if field else " ".join(msgs)
                                  for field, msgs in errors.items()), status=400)


# ----------------------------------------------------------------------------- the link


def panel_link_save(*, study: Study, actor, values: Mapping, link: PanelLink | None = None) -> PanelLink:
    """Create or change a study's link; a preset names its own query parameters."""
    link = link or PanelLink(study=study, created_by=actor)
    for name in LINK_FIELDS:
        if name in values:
            setattr(link, name, values[name].strip() if isinstance(values[name], str) else values[name])
    if link.preset in PRESET_PARAMS:
        link.id_param, link.study_param, link.session_param, link.assignment_param = PRESET_PARAMS[link.preset]
    try:
        # The study is checked too: the unique label is per study (a form, which has no study field, skips it).
        link.full_clean(exclude=["created_by"])
    except ValidationError as exc:
        raise LinkInvalid({None if field == "__all__" else field: msgs
                           for field, msgs in exc.message_dict.items()}) from None
    if link.code_returned == "" and link.redirect_returned:
        raise LinkInvalid({"code_returned": ["A redirect for returned participants needs a code for them too."]})
    try:
        with transaction.atomic():
            link.save()
    except IntegrityError:
        # A concurrent save took the label between the check and the write; the database's word is final.
        raise LinkInvalid({"label": ["Another link of this study has this label."]}) from None
    audit(study=study, actor=actor, action="panel.link_save", obj=link,
          after={name: getattr(link, name) for name in LINK_FIELDS})
    return link


def panel_link_set_enabled(*, link: PanelLink, actor, enabled: bool) -> PanelLink:
    """Close a link (no one new or returning gets in; everyone's records stay) or open it again."""
    PanelLink.objects.filter(id=link.id).update(enabled=enabled)
    link.enabled = enabled
    audit(study=link.study, actor=actor, action="panel.link_open" if enabled else "panel.link_close", obj=link,
          after={"enabled": enabled})
    return link


@transaction.atomic
def panel_link_delete(*, link: PanelLink, actor) -> None:
    """Delete a link no one has entered by; one with participants can only be closed (their records stay)."""
    locked = PanelLink.objects.select_for_update().get(id=link.id)
    if locked.participants.exists():
        raise RatingError(f"{locked.name} has participants, whose records are kept: close it instead.", status=409)
    audit(study=link.study, actor=actor, action="panel.link_delete", obj=locked,
          before={name: getattr(locked, name) for name in LINK_FIELDS})
    locked.delete()
