"""The rubric's scales on the rating forms, drawn once per distinct rubric in each process.

The fieldsets depend on the criteria alone (and on whether they take a researcher's reference answer):
no item, rater or token is in them. Drawn by the template engine they were a third of a submit's
server time (22 radio buttons of a handful of lookups each, bench/rating.py), on every submit and
rating page, for the same HTML. Keyed by the criteria's content, never by a study id: a rubric edited
before the study opens draws afresh, and nothing has to be invalidated.
"""

import json
from functools import lru_cache

from django import template
from django.template.loader import render_to_string
from django.utils.safestring import mark_safe

register = template.Library()


@lru_cache(maxsize=256)
def _drawn(criteria_json: str, reference: bool) -> str:
    return render_to_string("raters/_scales.html", {"criteria": json.loads(criteria_json), "reference": reference})


@register.simple_tag
def scales(criteria, reference=False):
    """raters/_scales.html for `criteria` (raters.views.rubric_for_display's dicts)."""
    # No sort_keys: a likert's labels keep their order ("10" would sort before "2"); the same rubric
    # gives the same dicts in the same order, so the same key.
    return mark_safe(_drawn(json.dumps(criteria), bool(reference)))  # noqa: S308 - the engine's own output, escaped
