"""Rater welfare rows: a study's settings, the content notice each rater was shown, distress reports, breaks.

Imported at the end of raters/models.py so that Django registers them with the app. The settings protect
raters rather than shape the data, so they are not part of the study's design: a researcher may change
them while the study is open (audited, raters.services.welfare).
"""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from .welfare import PRESET_TOPICS, check_link

DEFAULT_NOTICE = (
    "The conversations in this study are people writing about their mental health. Some describe painful "
    "experiences in their own words. You can skip any item that is distressing to read, without penalty, "
    "take a break whenever you like, and stop or withdraw at any time."
)
DEFAULT_CRISIS_TEXT = (
    "If reading this material has upset you, stop and take a break; talking to someone you trust can help. "
    "If you are in danger or thinking about harming yourself, contact your local emergency services now."
)


def _all_presets() -> list[str]:
    return list(PRESET_TOPICS)


def validate_links(value) -> None:
    """A list of {label, url}, each an http(s) or tel: address (raters.welfare.check_link)."""
    if not isinstance(value, list):
        raise ValidationError("Crisis links are a list of {label, url}.")
    for link in value:
        try:
            check_link(link.get("label", ""), link.get("url", ""))
        except (ValueError, AttributeError) as exc:
            raise ValidationError(str(exc) if isinstance(exc, ValueError) else "A link is a label and an address.")


class WelfareSettings(models.Model):
    """What raters are warned of, how often they are asked to rest, how much they may rate, where to get help."""

    study = models.OneToOneField("evalapp.Study", on_delete=models.CASCADE, related_name="welfare")
    topics = models.JSONField(default=_all_presets, blank=True)  # keys of raters.welfare.PRESET_TOPICS
    other_topics = models.TextField(blank=True)  # the study's own topics, one a line
    notice = models.TextField(default=DEFAULT_NOTICE)
    break_every_items = models.PositiveIntegerField(default=20)  # 0: off
    break_every_minutes = models.PositiveIntegerField(default=30)
    cap_per_day = models.PositiveIntegerField(default=0)
    cap_per_session = models.PositiveIntegerField(default=0)
    crisis_text = models.TextField(default=DEFAULT_CRISIS_TEXT)
    crisis_links = models.JSONField(default=list, blank=True, validators=[validate_links])  # [{"label", "url"}], http(s) or tel: only
    # An item is flagged for review when at least this many raters AND this share of its readers found it
    # distressing (raters.welfare.flagged). 3 and 20 %: one or two reports in a small study are not yet a
    # pattern, and a handful among a hundred readers is not one either.
    flag_min_reports = models.PositiveIntegerField(default=3)
    flag_min_percent = models.PositiveIntegerField(default=20)
    updated_at = models.DateTimeField(auto_now=True)


class WelfareNoticeSeen(models.Model):
    """The content notice a rater was shown on the consent page when they agreed, as it read then."""

    study = models.ForeignKey("evalapp.Study", on_delete=models.CASCADE, related_name="welfare_notices_seen")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="welfare_notices_seen")
    consent_version = models.PositiveIntegerField()
    topics = models.JSONField(default=list)  # the labels shown
    notice = models.TextField()
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]


class DistressReport(models.Model):
    """A rater found an item distressing and skipped it: never a skip against them, never in their quality."""

    study = models.ForeignKey("evalapp.Study", on_delete=models.CASCADE, related_name="distress_reports")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="distress_reports")
    response = models.ForeignKey("evalapp.Response", on_delete=models.CASCADE, null=True, blank=True,
                                 related_name="distress_reports")
    pair = models.ForeignKey("evalapp.ResponsePair", on_delete=models.CASCADE, null=True, blank=True,
                             related_name="distress_reports")
    # Hidden gold items get the button too (else its absence would give them away).
    gold_item = models.ForeignKey("raters.CalibrationItem", on_delete=models.CASCADE, null=True, blank=True,
                                  related_name="distress_reports")
    gold_pair = models.ForeignKey("raters.GoldPair", on_delete=models.CASCADE, null=True, blank=True,
                                  related_name="distress_reports")
    topic = models.CharField(max_length=200, blank=True)  # optional: which of the study's topics
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(response__isnull=False, pair__isnull=True, gold_item__isnull=True,
                                    gold_pair__isnull=True)
                           | models.Q(response__isnull=True, pair__isnull=False, gold_item__isnull=True,
                                      gold_pair__isnull=True)
                           | models.Q(response__isnull=True, pair__isnull=True, gold_item__isnull=False,
                                      gold_pair__isnull=True)
                           | models.Q(response__isnull=True, pair__isnull=True, gold_item__isnull=True,
                                      gold_pair__isnull=False)),
                name="distressreport_one_item"),
            models.UniqueConstraint(fields=["rater", "response"], condition=models.Q(response__isnull=False),
                                    name="distressreport_unique_response"),
            models.UniqueConstraint(fields=["rater", "pair"], condition=models.Q(pair__isnull=False),
                                    name="distressreport_unique_pair"),
            models.UniqueConstraint(fields=["rater", "gold_item"], condition=models.Q(gold_item__isnull=False),
                                    name="distressreport_unique_gold_item"),
            models.UniqueConstraint(fields=["rater", "gold_pair"], condition=models.Q(gold_pair__isnull=False),
                                    name="distressreport_unique_gold_pair"),
        ]


class WelfareBreak(models.Model):
    """A rater pressed "continue" on a break prompt: the count towards the next break starts again."""

    study = models.ForeignKey("evalapp.Study", on_delete=models.CASCADE, related_name="welfare_breaks")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="welfare_breaks")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["study", "rater", "at"], name="welfarebreak_rater_time")]
