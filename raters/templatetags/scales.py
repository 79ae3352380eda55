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

from evalapp.rubric import NOT_SURE_LETTER, key_hints, option_letters, point_key, points

register = template.Library()


def rubric_for_display(study) -> list[dict]:
    """The study's criteria with what the rating form draws: points or lettered options, key hints."""
    out = []
    for criterion in study.rubric():
        shown = dict(criterion)
        if criterion["kind"] == "likert":
            shown["choices"] = [{"value": str(v), "text": str(v), "key": point_key(criterion, v),
                                 "label": criterion["labels"].get(str(v), "")} for v in points(criterion)]
        else:
            shown["choices"] = [{"value": o["key"], "text": o["label"], "key": letter, "label": ""}
                                for letter, o in zip(option_letters(criterion), criterion["options"], strict=True)]
        if criterion["not_sure"]:
            shown["choices"].append({"value": "not_sure", "text": criterion["not_sure"], "key": NOT_SURE_LETTER,
                                     "label": "", "not_sure": True})
        shown["hint"] = key_hints(criterion)
        out.append(shown)
    return out


@lru_cache(maxsize=256)
def _drawn(criteria_json: str, reference: bool) -> str:
    return render_to_string("raters/_scales.html", {"criteria": json.loads(criteria_json), "reference": reference})


@register.simple_tag
def scales(criteria, reference=False):
    """raters/_scales.html for `criteria` (rubric_for_display's dicts)."""
    # No sort_keys: a likert's labels keep their order ("10" would sort before "2"); the same rubric
    # gives the same dicts in the same order, so the same key.
    return mark_safe(_drawn(json.dumps(criteria), bool(reference)))  # noqa: S308 - the engine's own output, escaped
