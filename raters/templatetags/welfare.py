"""Welfare on the rater's pages: the content notice (consent), breaks and caps (rate, compare), crisis resources."""

from django import template

from ..services import notice_topics, rater_state, welfare_limits, welfare_settings, welfare_shown

register = template.Library()


@register.inclusion_tag("raters/_welfare_notice.html")
def welfare_notice(study):
    settings = welfare_settings(study)
    return {"topics": notice_topics(settings), "notice": settings.notice}


@register.inclusion_tag("raters/_crisis_resources.html")
def crisis_resources(study, heading=True):
    settings = welfare_settings(study)
    return {"crisis_text": settings.crisis_text, "links": settings.crisis_links, "heading": heading}


@register.simple_tag
def welfare_state(study, user):
    """Whether a break is due or a cap reached, and the topics a distress report may name.

    state is None when the study sets no break and no cap: none can be due then, so the rater's items
    are not read (a query on every rating page and submit)."""
    return welfare_shown(study, rater_state(study, user) if welfare_limits(study).any else None)
