"""{% panel_participant study as panel %}: the signed-in rater's pool link in this study, or None.

The rater pages show a pool participant the way to their completion code without their views knowing
about pools (raters/views.py stays as it is).
"""

from django import template

from ..panel_models import PanelParticipant, ParticipantStatus

register = template.Library()


@register.simple_tag(takes_context=True)
def panel_participant(context, study):
    request = context.get("request")
    user = getattr(request, "user", None)
    if study is None or not getattr(user, "is_authenticated", False):
        return None
    return PanelParticipant.objects.select_related("link").filter(user=user, study=study).first()


@register.filter
def panel_of(identities: dict, user_id):
    """{{ panel_ids|panel_of:user_id }}: that rater's pool participant row (panel_identities), or None."""
    return (identities or {}).get(user_id)


@register.filter
def participant_status(value: str) -> str:
    """{{ "timed_out"|participant_status }}: the status as the researcher's pages name it ("Timed out")."""
    return ParticipantStatus(value).label if value in ParticipantStatus.values else value


@register.simple_tag
def withdrawal_policy(study) -> str:
    """The policy withdrawing now falls under: the latest consent text's, as consent_withdraw applies it."""
    version = study.consent_versions.order_by("-version").first()
    return version.withdrawal_policy if version is not None else "exclude"
