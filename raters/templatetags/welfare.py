"""Welfare on the rater's pages: the content notice (consent), breaks and caps (rate, compare)."""

from django import template

from ..services import cap_message, notice_topics, rater_state, welfare_settings

register = template.Library()


@register.inclusion_tag("raters/_welfare_notice.html")
def welfare_notice(study):
    settings = welfare_settings(study)
    return {"topics": notice_topics(settings), "notice": settings.notice}


@register.simple_tag
def welfare_state(study, user):
    """Whether a break is due or a cap reached, and the topics a distress report may name."""
    state = rater_state(study, user)
    return {"state": state, "cap_message": cap_message(state) if state.cap else "",
            "topics": notice_topics(welfare_settings(study))}
