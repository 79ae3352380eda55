"""Rater welfare, the rows: settings (audited), the notice shown at consent, distress skips, breaks, caps."""

import math
from collections import Counter
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import BooleanField, Count, Exists, OuterRef, Q, Subquery, Value
from django.utils import timezone

from evalapp.audit import audit
from evalapp.models import AuditEvent, PairJudgment, Rating, Response, ResponsePair, Study

from .. import welfare as rules
from ..models import (
    Assignment,
    DistressReport,
    PairAssignment,
    Role,
    StudyMembership,
    WelfareBreak,
    WelfareNoticeSeen,
    WelfareSettings,
)
from ..compiled import STAND_IN_ID, STAND_IN_TIME, Compiled, Query, run_together
from ..panel_models import PanelParticipant, ParticipantStatus
from .common import RatingError

# A skip for distress: `skip_reason` holds this, the DistressReport row says the rest. Anything that
# counts a rater's skips must leave these out (none does today: raters.quality reads no skips).
DISTRESS_SKIP = "distressing"
EDITABLE = ("topics", "other_topics", "notice", "break_every_items", "break_every_minutes", "cap_per_day",
            "cap_per_session", "crisis_text", "crisis_links", "flag_min_reports", "flag_min_percent")


def welfare_settings(study: Study) -> WelfareSettings:
    """The study's settings; the defaults, unsaved, until a researcher saves them (a read never writes)."""
    try:
        return study.welfare
    except WelfareSettings.DoesNotExist:
        return WelfareSettings(study=study)


def welfare_save(*, study: Study, actor, **values) -> WelfareSettings:
    """Change the settings, open study or not (they protect raters, they don't shape the data); audited."""
    unknown = set(values) - set(EDITABLE)
    if unknown:
        raise RatingError(f"Unknown welfare settings: {', '.join(sorted(unknown))}.")
    if "topics" in values:
        bad = set(values["topics"]) - set(rules.PRESET_TOPICS)
        if bad:
            raise RatingError(f"Unknown topics: {', '.join(sorted(bad))}.")
        values["topics"] = [key for key in rules.PRESET_TOPICS if key in set(values["topics"])]
    if "crisis_links" in values:
        try:
            values["crisis_links"] = [rules.check_link(link.get("label", ""), link.get("url", ""))
                                      for link in values["crisis_links"]]
        except (ValueError, AttributeError) as exc:
            raise RatingError(str(exc) if isinstance(exc, ValueError) else "A link is a label and an address.") from exc
    if "flag_min_percent" in values and not 0 <= values["flag_min_percent"] <= 100:
        raise RatingError("The share of readers is a percentage, 0 to 100.")
    with transaction.atomic():
        current = WelfareSettings.objects.select_for_update().filter(study=study).first()
        row = current or WelfareSettings(study=study)
        before = {name: getattr(row, name) for name in EDITABLE} if current else None
        for name, value in values.items():
            setattr(row, name, value)
        row.full_clean(exclude=["study"])
        row.save()
        after = {name: getattr(row, name) for name in EDITABLE}
        if before != after:
            audit(study=study, actor=actor, action="welfare.update", obj=row, before=before, after=after)
    study.welfare = row
    return row


def notice_topics(settings: WelfareSettings) -> list[str]:
    return rules.topic_labels(settings.topics, settings.other_topics)


def break_taken(*, study: Study, rater) -> WelfareBreak:
    return WelfareBreak.objects.create(study=study, rater=rater)


def welfare_limits(study: Study) -> rules.Limits:
    settings = welfare_settings(study)
    return rules.Limits(break_every_items=settings.break_every_items, break_every_minutes=settings.break_every_minutes,
                        cap_per_day=settings.cap_per_day, cap_per_session=settings.cap_per_session)


def _recent(study_id: int, rater_id: int, since: datetime):
    """The times since `since` the rater finished an item (1-10 and pairwise) or took a break, each with
    whether it is a break: one round trip for the three lists."""
    # Simulated answers (the demo's, evalapp/management/commands/demo.py) were read by nobody.
    simulated = Rating.objects.filter(response_id=OuterRef("response_id"), rater_id=rater_id, simulated=True)
    simulated_pair = PairJudgment.objects.filter(pair_id=OuterRef("pair_id"), rater_id=rater_id, simulated=True)
    # order_by(): SQLite refuses a union of ordered parts (the models' Meta ordering).
    item = {"is_break": Value(False, output_field=BooleanField())}
    return (Assignment.objects.filter(study_id=study_id, rater_id=rater_id, completed_at__gte=since)
            .exclude(Exists(simulated)).annotate(**item).order_by().values_list("completed_at", "is_break")
            .union(PairAssignment.objects.filter(study_id=study_id, rater_id=rater_id, completed_at__gte=since)
                   .exclude(Exists(simulated_pair)).annotate(**item).order_by()
                   .values_list("completed_at", "is_break"),
                   WelfareBreak.objects.filter(study_id=study_id, rater_id=rater_id, at__gte=since)
                   .annotate(is_break=Value(True, output_field=BooleanField())).order_by()
                   .values_list("at", "is_break"),
                   all=True))


# Compiled once: it runs on every rating page and submit, and building the union cost more than running it.
_RECENT = Compiled(_recent, study_id=STAND_IN_ID, rater_id=STAND_IN_ID - 1, since=STAND_IN_TIME)


def rater_state(study: Study, rater, now: datetime | None = None) -> rules.State:
    """Where the rater stands on breaks and caps, from the items they finished in this study (1-10 and
    pairwise together) and the breaks they took; the day is the server's (settings.TIME_ZONE)."""
    return run_together(rater_state_query(study, rater, now))[0]


def rater_state_query(study: Study, rater, now: datetime | None = None) -> Query:
    """rater_state's read, to run with others (raters.compiled.run_together)."""
    now = now or timezone.now()
    limits = welfare_limits(study)
    since = now - timedelta(days=1, hours=1)  # the day so far, DST included; a session rarely runs longer

    def finish(rows):
        done, breaks = [], []
        for at, taken in rows:
            (breaks if taken else done).append(at)
        day_start = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
        return rules.welfare_state(limits, done, breaks, now=now, day_start=day_start)

    return Query(_RECENT, {"study_id": study.id, "rater_id": rater.id, "since": since}, finish)


def welfare_shown(study: Study, state: rules.State | None) -> dict:
    """What the rating pages show of welfare (raters.templatetags.welfare.welfare_state): `state` is
    rater_state's, or None where the study sets no break and no cap (none can be due)."""
    return {"state": state, "cap_message": cap_message(state) if state and state.cap else "",
            "topics": notice_topics(welfare_settings(study))}


def when_words(moment: datetime) -> str:
    """A moment as the rater reads it: the time, the day, and the zone it is in (the server's, settings.
    TIME_ZONE: the zone the day cap's midnight is counted in)."""
    local = timezone.localtime(moment)
    return f"{local:%H:%M} on {local:%A} {local.day} {local:%B} ({timezone.get_current_timezone_name()} time)"


def cap_message(state: rules.State) -> str:
    if state.cap == "day":
        return (f"You have reached today's limit of {rules.plural(state.limit, 'item')} (the daily cap). Thank you: "
                f"come back tomorrow, from {when_words(state.resume_at)}.")
    return (f"You have reached this session's limit of {rules.plural(state.limit, 'item')} (the per-session cap; a "
            f"session ends after a pause of {int(rules.SESSION_GAP.total_seconds() // 60)} minutes). Thank you: "
            f"take a rest and come back from {when_words(state.resume_at)}.")


def welfare_gate(study: Study, rater, now: datetime | None = None) -> dict | None:
    """What stands before the rater's next item, as the rate page shows it: a cap reached (until it lifts)
    or a break due (until they have rested, or say they have), else None. For the API's next item."""
    now = now or timezone.now()
    state = rater_state(study, rater, now)
    if state.cap is None and not state.break_due:
        return None
    if state.cap:
        detail, until = cap_message(state), state.resume_at
    else:
        until = state.break_over_at
        detail = (f"Time for a break. {state.break_message} Step away from the screen for a few minutes; "
                  f"the next item comes after a pause of {int(rules.REST.total_seconds() // 60)} minutes, "
                  f"from {when_words(until)}, or once you say you have had a break on the rating page.")
    return {"retry_after": max(1, math.ceil((until - now).total_seconds())), "body": {"detail": detail,
            "welfare": {"break_due": state.break_due, "cap": state.cap, "limit": state.limit,
                        "items_today": state.items_today, "items_in_session": state.items_in_session,
                        "items_since_break": state.items_since_break,
                        "minutes_since_break": round(state.minutes_since_break, 1), "until": until.isoformat()}}}


def check_cap(study: Study, rater, assignment) -> None:
    """Refuse a new item past a cap (a revision of a finished one is not more reading): nothing is written.

    Call it inside the transaction that then marks the item done. It locks the rater's membership row
    until that commits, so two submits at once (two tabs, the API) are counted one after the other
    rather than both passing at cap - 1; READ COMMITTED then shows the second the first's item."""
    if assignment.completed_at is not None:
        return
    settings = welfare_settings(study)
    if not settings.cap_per_day and not settings.cap_per_session:
        return
    list(StudyMembership.objects.select_for_update().filter(study=study, user=rater, role=Role.RATER)
         .values_list("id", flat=True))
    if type(assignment).objects.filter(id=assignment.id, completed_at__isnull=False).exists():
        return  # the same item, finished meanwhile by the request we waited for: not more reading
    state = rater_state(study, rater)
    if state.cap is not None:
        raise RatingError(cap_message(state), status=409)


def distress_summary(study: Study) -> dict:
    """Reports per topic and per item, each item's readers (raters who finished it), and which are flagged."""
    settings = welfare_settings(study)
    reports = list(DistressReport.objects.filter(study=study).values_list(
        "response_id", "pair_id", "gold_item_id", "gold_pair_id", "topic"))
    by_topic = Counter(topic or "(no topic given)" for *_, topic in reports)
    per = Counter()
    for response_id, pair_id, gold_item_id, gold_pair_id, _ in reports:
        key = (("response", response_id) if response_id else ("pair", pair_id) if pair_id
               else ("gold_item", gold_item_id) if gold_item_id else ("gold_pair", gold_pair_id))
        per[key] += 1
    readers = Counter()
    for kind, model, field in (("response", Assignment, "response_id"), ("gold_item", Assignment, "gold_item_id"),
                               ("pair", PairAssignment, "pair_id"), ("gold_pair", PairAssignment, "gold_pair_id")):
        ids = [pk for k, pk in per if k == kind]
        if ids:
            for pk in model.objects.filter(Q(**{f"{field}__in": ids}), completed_at__isnull=False).values_list(
                    field, flat=True):
                readers[kind, pk] += 1
    responses = Response.objects.select_related("arm", "prompt").in_bulk([pk for k, pk in per if k == "response"])
    pairs = ResponsePair.objects.select_related("prompt", "first__arm", "second__arm").in_bulk(
        [pk for k, pk in per if k == "pair"])
    items = []
    for (kind, pk), count in per.most_common():
        n = max(readers[kind, pk], count)
        items.append({"kind": kind, "reports": count, "readers": n, "response": responses.get(pk) if kind == "response"
                      else None, "pair": pairs.get(pk) if kind == "pair" else None,
                      "flagged": rules.flagged(count, n, min_reports=settings.flag_min_reports,
                                               min_percent=settings.flag_min_percent)})
    return {"total": len(reports), "by_topic": by_topic.most_common(), "items": items,
            "flagged": sum(item["flagged"] for item in items),
            "rule": rules.flag_rule(settings.flag_min_reports, settings.flag_min_percent)}


def _limit_words(every: int, word: str) -> str:
    return rules.plural(every, word) if every else ""


def welfare_report(study: Study) -> dict:
    """What the study does for its raters and how often each measure came into play, for an ethics board:
    aggregate counts only (a fixed number of queries however many raters), nothing naming a rater."""
    settings = welfare_settings(study)
    withdrawn = StudyMembership.objects.filter(study=study, role=Role.RATER, withdrawn_at__isnull=False)
    # A pool participant who withdraws is also "returned"; counted once, as withdrawn, so that the three
    # ways of leaving add up to the raters who left.
    left_panel = PanelParticipant.objects.filter(study=study).exclude(user__in=withdrawn.values("user"))
    panel = Counter(dict(left_panel.filter(status__in=[ParticipantStatus.RETURNED, ParticipantStatus.TIMED_OUT])
                         .values_list("status").annotate(n=Count("id")).order_by()))
    # "Later": left after their first report, so the report came while they were still rating; a rater who had
    # left before a report was recorded (a page still open) did not leave after one.
    first_report = DistressReport.objects.filter(study=study, rater=OuterRef("user")).order_by("at").values("at")[:1]
    reporters = DistressReport.objects.filter(study=study).values("rater").distinct().count()
    # order_by(): SQLite (the demo) refuses a union of ordered parts (the models' Meta ordering).
    left_after_report = (
        withdrawn.filter(withdrawn_at__gt=Subquery(first_report)).values("user").order_by()
        .union(left_panel.filter(status__in=[ParticipantStatus.RETURNED, ParticipantStatus.TIMED_OUT],
                                 outcome_at__gt=Subquery(first_report)).values("user").order_by()))
    breaks = WelfareBreak.objects.filter(study=study).aggregate(
        n=Count("id"), raters=Count("rater", distinct=True))
    every = " or ".join(words for words in (_limit_words(settings.break_every_items, "item"),
                                            _limit_words(settings.break_every_minutes, "minute")) if words)
    caps = ", ".join(words for words in (
        f"{rules.plural(settings.cap_per_day, 'item')} a day" if settings.cap_per_day else "",
        f"{rules.plural(settings.cap_per_session, 'item')} a session" if settings.cap_per_session else "") if words)
    return {
        "topics": notice_topics(settings),
        "notice": settings.notice,
        "notice_seen": WelfareNoticeSeen.objects.filter(study=study).values("user").distinct().count(),
        "break_rule": f"a break after {every} of rating" if every else "no breaks prompted",
        "breaks": breaks["n"], "break_raters": breaks["raters"],
        "cap_rule": caps or "no cap",
        "caps_reached": AuditEvent.objects.filter(study=study, action="panel.cap_reached").count(),
        "crisis_text": settings.crisis_text, "crisis_links": settings.crisis_links,
        "withdrew": withdrawn.values("user").distinct().count(),
        "stopped_early": panel[ParticipantStatus.RETURNED], "timed_out": panel[ParticipantStatus.TIMED_OUT],
        "reporters": reporters, "left_after_report": left_after_report.count(),
    }
