"""Rater welfare, the pure part: when a break is due, when a cap is reached, which links may be offered.

Plain Python over times and plain data (no Django), so the rules are tested directly; the rows and
the pages around them are raters/services/welfare.py, raters/welfare_views.py and the template tags.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

PRESET_TOPICS = {
    "self_harm": "Self-harm and suicide",
    "abuse": "Abuse and violence",
    "bereavement": "Bereavement and loss",
}
# A pause this long between two finished items ends a rating session (the per-session cap starts again).
SESSION_GAP = timedelta(minutes=30)
# A pause this long counts as a break taken, as pressing "continue" on the break prompt does.
REST = timedelta(minutes=5)
LINK_SCHEMES = ("http", "https", "tel")


@dataclass(frozen=True)
class Limits:
    break_every_items: int = 0  # 0: off
    break_every_minutes: int = 0
    cap_per_day: int = 0
    cap_per_session: int = 0

    @property
    def any(self) -> bool:
        """Whether any break or cap is set: with none, no state can have one due."""
        return any((self.break_every_items, self.break_every_minutes, self.cap_per_day, self.cap_per_session))


@dataclass(frozen=True)
class State:
    break_due: bool
    cap: str | None  # "day", "session" or None
    items_today: int
    items_in_session: int
    items_since_break: int
    minutes_since_break: float
    resume_at: datetime | None  # when the cap reached lifts: the session gap after the last item, or midnight
    limit: int = 0  # the cap reached
    break_over_at: datetime | None = None  # a due break is over by itself once the rater has rested this long

    @property
    def break_message(self) -> str:
        """What the break prompt says the rater has done: never "about 0 minutes" nor "1 items"."""
        return f"You have read {plural(self.items_since_break, 'item')} in {duration_words(self.minutes_since_break)}."


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def duration_words(minutes: float) -> str:
    """A rough duration: twenty quick items can take under a minute, and rounding that says "0 minutes"."""
    if minutes < 1:
        return "less than a minute"
    whole = round(minutes)
    if whole < 60:
        return f"about {plural(whole, 'minute')}"
    hours, rest = divmod(whole, 60)
    return f"about {plural(hours, 'hour')}" + (f" {plural(rest, 'minute')}" if rest else "")


def welfare_state(limits: Limits, done: Iterable[datetime], breaks: Iterable[datetime], *, now: datetime,
                  day_start: datetime) -> State:
    """Where a rater stands, from the times they finished items (rated, skipped or found distressing:
    every item read is exposure) and the times they pressed "continue" on a break prompt. `day_start` is
    the local midnight that began today (aware): the day cap lifts at the next one."""
    times = sorted(t for t in done if t <= now)
    session = _last_run(times, SESSION_GAP, now)
    last_break = max((b for b in breaks if b <= now), default=None)
    after_break = [t for t in times if last_break is None or t > last_break]
    stretch = _last_run(after_break, REST, now, inclusive=True)
    if not stretch:
        minutes = 0.0
    else:
        # From the break the rater came back from, else from the first item of the stretch (the time
        # spent reading that first item is not known here).
        started = last_break if last_break is not None and stretch[0] == after_break[0] else stretch[0]
        minutes = (now - started).total_seconds() / 60
    break_due = bool(stretch) and (
        (limits.break_every_items > 0 and len(stretch) >= limits.break_every_items)
        or (limits.break_every_minutes > 0 and minutes >= limits.break_every_minutes))
    items_today = sum(1 for t in times if t >= day_start)
    cap = None
    if limits.cap_per_day > 0 and items_today >= limits.cap_per_day:
        cap = "day"
    elif limits.cap_per_session > 0 and len(session) >= limits.cap_per_session:
        cap = "session"
    return State(break_due=break_due and cap is None, cap=cap, items_today=items_today,
                 items_in_session=len(session), items_since_break=len(stretch), minutes_since_break=minutes,
                 # Aware arithmetic keeps the wall clock: a day after local midnight is the next midnight,
                 # also across a DST change (a zoneinfo day_start).
                 resume_at={"session": session[-1] + SESSION_GAP if session else None,
                            "day": day_start + timedelta(days=1)}.get(cap),
                 limit={"day": limits.cap_per_day, "session": limits.cap_per_session}.get(cap, 0),
                 break_over_at=stretch[-1] + REST if break_due and cap is None else None)


def _last_run(times: Sequence[datetime], gap: timedelta, now: datetime, inclusive: bool = False) -> list[datetime]:
    """The last run of times with no pause longer than `gap` (at least `gap` when inclusive), empty once
    that long has passed since the last one."""
    def paused(a, b):
        return b - a >= gap if inclusive else b - a > gap

    run: list[datetime] = []
    for t in times:
        if run and paused(run[-1], t):
            run = []
        run.append(t)
    if run and paused(run[-1], now):
        return []
    return run


def check_link(label: str, url: str) -> dict:
    """One crisis resource link: a label and an http(s) or tel: address; ValueError says what is wrong."""
    label, url = label.strip(), url.strip()
    if not label or not url:
        raise ValueError("A link needs a label and an address.")
    parts = urlsplit(url)
    if parts.scheme.lower() not in LINK_SCHEMES:
        raise ValueError(f"{url}: only http://, https:// and tel: addresses may be offered.")
    if parts.scheme.lower() in ("http", "https") and not parts.netloc:
        raise ValueError(f"{url}: the address names no site.")
    if parts.scheme.lower() == "tel" and not any(c.isdigit() for c in parts.path):
        raise ValueError(f"{url}: a tel: address needs a number.")
    if len(label) > 200 or len(url) > 500:
        raise ValueError("A link's label is at most 200 characters, its address 500.")
    return {"label": label, "url": url}


def parse_links(text: str) -> list[dict]:
    """Links written one a line as `label | address`; ValueError names the first bad line."""
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        label, sep, url = line.rpartition("|")
        if not sep:
            raise ValueError(f"Line {number}: write `label | address`.")
        try:
            out.append(check_link(label, url))
        except ValueError as exc:
            raise ValueError(f"Line {number}: {exc}") from None
    return out


def links_text(links: Iterable[dict]) -> str:
    return "\n".join(f"{link['label']} | {link['url']}" for link in links)


def topic_labels(presets: Iterable[str], other: str) -> list[str]:
    """The topics a study names: its presets' labels, then its own, one a line."""
    return [PRESET_TOPICS[key] for key in PRESET_TOPICS if key in set(presets)] + [
        line.strip() for line in other.splitlines() if line.strip()]


def flagged(reports: int, readers: int, *, min_reports: int, min_percent: int) -> bool:
    """An item found distressing by at least `min_reports` raters AND by at least `min_percent` % of those
    who read it. Both, because either alone is too eager: by share, one report of one reader is 100 %; by
    count, two reports among a hundred readers would be. 0 drops that condition; both 0 turn flags off."""
    if reports <= 0 or (min_reports <= 0 and min_percent <= 0):
        return False
    readers = max(readers, reports)  # whoever reported an item read it
    if min_reports > 0 and reports < min_reports:
        return False
    return not (min_percent > 0 and 100 * reports < min_percent * readers)


def flag_rule(min_reports: int, min_percent: int) -> str:
    """The rule `flagged` applies, in words, for the researcher's page."""
    if min_reports <= 0 and min_percent <= 0:
        return "Flags are off: no item is flagged for review, whatever its reports."
    parts = ([f"at least {plural(min_reports, 'rater')}"] if min_reports > 0 else []) + (
        [f"at least {min_percent}% of the raters who read it"] if min_percent > 0 else [])
    return f"An item is flagged for review when {' and '.join(parts)} found it distressing."
