"""Reading a pool's submissions export (Prolific's CSV): pure, bytes in, rows and per-row problems out.

`raters.services.panel.panel_submissions_import` writes what this returns, all or nothing.
"""

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from evalapp.prompt_import import RowProblem

SUBMISSIONS_MAX_BYTES = 5_000_000
# What the pool says of a submission, and the participant status each one sets here ("" records it only).
POOL_STATUSES = {
    "APPROVED": "", "AWAITING REVIEW": "", "ACTIVE": "", "SCREENED OUT": "",
    "RETURNED": "returned", "TIMED-OUT": "timed_out", "REJECTED": "rejected",
}
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S")


@dataclass(frozen=True)
class SubmissionRow:
    row: int
    participant_id: str
    status: str  # as the pool wrote it, upper-case
    seconds: int | None  # the pool's time taken, when it gave one


@dataclass
class SubmissionsFile:
    rows: list[SubmissionRow] = field(default_factory=list)
    errors: list[RowProblem] = field(default_factory=list)


def _when(text: str) -> datetime:
    text = text.strip().removesuffix("Z")
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise ValueError(text)


class _CellError(ValueError):
    """A cell that is not what its column holds: the column (as the pool names it) and why."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field, self.reason = field, reason


def _seconds(record: dict) -> int | None:
    taken = (record.get("time taken") or "").strip()
    if taken:
        if not re.fullmatch(r"\d{1,9}(\.\d+)?", taken):
            raise _CellError("Time taken", f"{taken[:40]!r} is not a number of seconds")
        return round(float(taken))
    started, completed = (record.get("started at") or "").strip(), (record.get("completed at") or "").strip()
    if started and completed:
        times = []
        for field, text in (("Started at", started), ("Completed at", completed)):
            try:
                times.append(_when(text))
            except ValueError:
                raise _CellError(field, f"{text[:40]!r} is not a date and time like 2026-01-31 12:00:00") from None
        if times[1] < times[0]:
            raise _CellError("Completed at", "is before 'Started at'")
        return round((times[1] - times[0]).total_seconds())
    return None


def parse_submissions(data: bytes, participant_id: Callable[[str], str | None]) -> SubmissionsFile:
    """Every row of the file, or the reasons it is refused: each row's problem by its line number.
    `participant_id` gives the pool's id in its stored form, or None for one that is malformed."""
    out = SubmissionsFile()
    if len(data) > SUBMISSIONS_MAX_BYTES:
        out.errors.append(RowProblem(0, "file", f"is {len(data):,} bytes; the limit is {SUBMISSIONS_MAX_BYTES:,}"))
        return out
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        out.errors.append(RowProblem(0, "file", "is not UTF-8 text"))
        return out
    if "\x00" in text:
        out.errors.append(RowProblem(0, "file", "contains a NUL character"))
        return out
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        reader.fieldnames = [f.strip().lower() for f in (reader.fieldnames or [])]
        records = list(reader)
    except csv.Error as exc:
        out.errors.append(RowProblem(reader.line_num, "file", f"not valid CSV ({exc})"))
        return out
    missing = [c for c in ("participant id", "status") if c not in reader.fieldnames]
    if missing:
        out.errors.append(RowProblem(0, "columns", "the file needs the columns 'Participant id' and 'Status' "
                                     f"(missing: {', '.join(missing)})"))
        return out
    seen: dict[str, int] = {}
    for number, record in enumerate(records, start=2):
        # Every problem of the row, so that one upload shows all there is to fix.
        problems = []
        given = (record.get("participant id") or "").strip()
        status = (record.get("status") or "").strip().upper()
        pid = participant_id(given) if given else None
        if not given:
            problems.append(RowProblem(number, "Participant id", "empty participant id"))
        elif pid is None:
            problems.append(RowProblem(number, "Participant id", f"{given[:80]!r} is not a participant id of this pool"))
        elif pid in seen:
            problems.append(RowProblem(number, "Participant id", f"{pid} repeats row {seen[pid]}"))
        else:
            seen[pid] = number
        if status not in POOL_STATUSES:
            problems.append(RowProblem(number, "Status", f"{status[:40]!r} is not one of "
                                       + ", ".join(sorted(POOL_STATUSES))))
        seconds = None
        try:
            seconds = _seconds(record)
        except _CellError as exc:
            problems.append(RowProblem(number, exc.field, exc.reason))
        if problems:
            out.errors.extend(problems)
        else:
            out.rows.append(SubmissionRow(number, pid, status, seconds))
    if not records:
        out.errors.append(RowProblem(0, "file", "has no rows"))
    return out
