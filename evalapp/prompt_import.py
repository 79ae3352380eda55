"""Parsing prompt files into conversations, with a report of every bad row.

Pure: bytes in, parsed prompts and problems out. `services.study_import_prompts`
does the database work around it. Formats:

- CSV with columns ``id,text`` and optionally ``topic,split,reference,source``;
- JSONL, one object a line, each one of: ``{"id", "text", ...}`` (generic),
  ``{"id", "messages": [{"role", "content"}, ...]}`` (chat),
  ``{"id", "transcript": "<USER> ... <AI> ..."}`` (tagged transcript), or a
  CounselChat question (``question_id``, ``text``, ``topic``, ``splits``);
- ``.txt``: tagged ``<USER>``/``<AI>`` transcripts separated by lines of ``---``.

A tagged transcript gives one prompt per user turn, each carrying the
conversation before it; the AI turn that followed becomes its reference answer.
"""

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from modelserver.corpus import (
    MessageError,
    best_counselchat_answer,
    parse_transcript,
    split_transcripts,
    strip_html,
    transcript_id,
    user_turn_ids,
    validate_messages,
)

CSV_REQUIRED = ("id", "text")
CSV_OPTIONAL = ("topic", "split", "reference", "source")
MAX_ID_CHARS = 200

_HTML_TAG = re.compile(r"<\s*/?\s*[a-zA-Z][a-zA-Z0-9]*(\s[^<>]*)?/?\s*>|<!--.*?-->", re.S)
PII_PATTERNS = {
    "e-mail address": (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), "[EMAIL]"),
    "URL": (re.compile(r"\b(?:https?://|www\.)[^\s<>\"']+", re.I), "[URL]"),
    # Nine or more digits with the usual separators; shorter runs are years and ages.
    "phone number": (re.compile(r"(?<![\w.])\+?\(?\d(?:[\s().-]{0,2}\d){8,14}(?![\w])"), "[PHONE]"),
}


@dataclass(frozen=True)
class RowProblem:
    row: int
    field: str
    reason: str

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row else "file"
        return f"{where}, {self.field}: {self.reason}"


@dataclass
class ParsedPrompt:
    row: int
    external_id: str
    messages: list[dict]
    topic: str = ""
    source: str = ""
    split: str = ""
    reference: str = ""


@dataclass
class ParseResult:
    format: str = ""
    prompts: list[ParsedPrompt] = field(default_factory=list)
    errors: list[RowProblem] = field(default_factory=list)
    warnings: list[RowProblem] = field(default_factory=list)


class _RowError(Exception):
    def __init__(self, field_name: str, reason: str):
        super().__init__(reason)
        self.field = field_name
        self.reason = reason


def find_pii(text: str) -> list[str]:
    return [kind for kind, (pattern, _) in PII_PATTERNS.items() if pattern.search(text)]


def redact_pii(text: str) -> str:
    for pattern, replacement in PII_PATTERNS.values():
        text = pattern.sub(replacement, text)
    return text


def check_file_name(filename: str) -> str:
    """Why an uploaded file's name is refused, or "" if it is a plain name. Only its suffix is used (the
    file is never written under it), but a name with a path or control characters is not what any browser
    sends: it is refused so that no later use of the name can be steered."""
    if not filename or filename in (".", ".."):
        return "has no file name"
    if "/" in filename or "\\" in filename or any(ord(c) < 32 or ord(c) == 127 for c in filename):
        return f"file name {filename!r} must be a plain name, without folders or control characters"
    return ""


def check_upload_size(size: int, max_bytes: int) -> str:
    """Why a file of `size` bytes is refused, or "": checked on the upload before it is read into memory."""
    if size > max_bytes:
        return f"is {size:,} bytes; the limit is {max_bytes:,} bytes"
    return ""


def upload_problem(upload, *, max_bytes: int) -> str:
    """Why an uploaded file (anything with `name` and `size`) is refused before it is read: a 10 GB upload is
    answered from its size, not read into memory first. The parser checks the bytes again."""
    return check_file_name(upload.name or "") or check_upload_size(upload.size, max_bytes)


def parse_prompt_file(
    data: bytes,
    filename: str,
    *,
    max_bytes: int,
    max_chars: int,
    redact: bool = False,
) -> ParseResult:
    result = ParseResult()
    name_problem = check_file_name(filename)
    if name_problem:
        result.errors.append(RowProblem(0, "file", name_problem))
        return result
    too_big = check_upload_size(len(data), max_bytes)
    if too_big:
        result.errors.append(RowProblem(0, "file", too_big))
        return result
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        result.errors.append(
            RowProblem(0, "file", f"is not UTF-8 (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); save it as UTF-8")
        )
        return result
    if not text.strip():
        result.errors.append(RowProblem(0, "file", "is empty"))
        return result

    suffix = Path(filename).suffix.lower()
    if suffix == ".csv":
        result.format = "csv"
        rows = _csv_rows(text, result)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        result.format = "jsonl"
        rows = _jsonl_rows(text, result)
    elif suffix == ".txt":
        result.format = "transcript"
        rows = _txt_rows(text)
    else:
        result.errors.append(RowProblem(0, "file", f"has an unknown type {suffix or '(none)'}; use .csv, .jsonl or .txt"))
        return result

    seen: dict[str, int] = {}
    for row_number, raw in rows:
        try:
            parsed = raw()
        except _RowError as exc:
            result.errors.append(RowProblem(row_number, exc.field, exc.reason))
            continue
        for prompt in parsed:
            problems = _clean_prompt(prompt, max_chars=max_chars, redact=redact, warnings=result.warnings)
            if problems:
                result.errors.extend(problems)
                continue
            if prompt.external_id in seen:
                result.errors.append(
                    RowProblem(row_number, "id", f"{prompt.external_id!r} is also used in row {seen[prompt.external_id]}")
                )
                continue
            seen[prompt.external_id] = row_number
            result.prompts.append(prompt)
    if not result.prompts and not result.errors:
        result.errors.append(RowProblem(0, "file", "contains no prompts"))
    return result


def _clean_prompt(prompt: ParsedPrompt, *, max_chars: int, redact: bool, warnings: list) -> list[RowProblem]:
    problems = []
    row = prompt.row
    for name, value in [("id", prompt.external_id), ("topic", prompt.topic), ("split", prompt.split),
                        ("source", prompt.source), ("reference", prompt.reference),
                        *((f"messages[{i}]", m["content"]) for i, m in enumerate(prompt.messages))]:
        if "\x00" in value:
            # PostgreSQL cannot store NUL in text or JSON: refused here, per row, rather than as a database error.
            problems.append(RowProblem(row, name, "contains a NUL character (\\x00)"))
    if problems:
        return problems
    prompt.external_id = prompt.external_id.strip()
    if not prompt.external_id:
        problems.append(RowProblem(row, "id", "is empty"))
    elif len(prompt.external_id) > MAX_ID_CHARS:
        problems.append(RowProblem(row, "id", f"is longer than {MAX_ID_CHARS} characters"))
    for index, message in enumerate(prompt.messages):
        name = "text" if len(prompt.messages) == 1 else f"messages[{index}]"
        message["content"] = _clean_text(message["content"], row, name, redact, warnings)
        if not message["content"]:
            problems.append(RowProblem(row, name, "is empty or whitespace only"))
        elif len(message["content"]) > max_chars:
            problems.append(
                RowProblem(row, name, f"is {len(message['content']):,} characters; the limit is {max_chars:,}")
            )
    if not problems:
        try:
            validate_messages(prompt.messages)
        except MessageError as exc:
            problems.append(RowProblem(row, exc.field, exc.reason))
    if prompt.reference:
        prompt.reference = _clean_text(prompt.reference, row, "reference", redact, warnings)
    return problems


def _clean_text(text: str, row: int, name: str, redact: bool, warnings: list) -> str:
    if _HTML_TAG.search(text):
        text = strip_html(text)
        warnings.append(RowProblem(row, name, "HTML tags removed, words kept"))
    text = "\n".join(line.rstrip() for line in text.strip().splitlines())
    found = find_pii(text)
    if found:
        action = "redacted" if redact else "kept; import with redaction to remove"
        warnings.append(RowProblem(row, name, f"contains {', '.join(found)} ({action})"))
        if redact:
            text = redact_pii(text)
    return text


def _csv_rows(text: str, result: ParseResult) -> Iterator[tuple[int, object]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = [name.strip().lower() for name in (reader.fieldnames or [])]
    except csv.Error as exc:
        result.errors.append(RowProblem(1, "header", f"is not valid CSV ({exc})"))
        return
    missing = [name for name in CSV_REQUIRED if name not in header]
    if missing:
        result.errors.append(RowProblem(1, "header", f"missing column(s) {', '.join(missing)}; found {', '.join(header) or 'none'}"))
        return
    reader.fieldnames = header
    row_number = 1  # as a spreadsheet numbers rows, the header being row 1
    while True:
        row_number += 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # A cell past csv's field limit (128 KiB) or similar: the rest of the file cannot be read reliably.
            yield row_number, _fail("row", f"is not valid CSV ({exc}); nothing after it was read")
            return
        if None in record:
            yield row_number, _fail("row", "has more cells than the header")
            continue

        def build(record=record, row_number=row_number):
            # Cells starting with = + - @ are kept verbatim as text; exports neutralise them.
            return [
                ParsedPrompt(
                    row=row_number,
                    external_id=record.get("id") or "",
                    messages=[{"role": "user", "content": record.get("text") or ""}],
                    topic=(record.get("topic") or "").strip(),
                    split=(record.get("split") or "").strip(),
                    reference=record.get("reference") or "",
                    source=(record.get("source") or "csv").strip(),
                )
            ]

        yield row_number, build


def _jsonl_rows(text: str, result: ParseResult) -> Iterator[tuple[int, object]]:
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield line_number, _fail("json", f"is not valid JSON ({exc.msg})")
            continue
        if not isinstance(obj, dict):
            yield line_number, _fail("json", "must be an object")
            continue
        yield line_number, (lambda obj=obj, n=line_number: _from_json_object(obj, n))


def _from_json_object(obj: dict, row: int) -> list[ParsedPrompt]:
    if "question_id" in obj:
        return [_counselchat_question(obj, row)]
    external_id = _json_id(obj)
    common = {
        "topic": _json_str(obj, "topic"),
        "split": _json_str(obj, "split"),
        "reference": _json_str(obj, "reference"),
    }
    if "messages" in obj:
        try:
            # Emptiness and the final user turn are checked after cleaning (_clean_prompt).
            clean = validate_messages(obj["messages"], final_user=False, blank_ok=True)
        except MessageError as exc:
            raise _RowError(exc.field, exc.reason) from None
        return [ParsedPrompt(row=row, external_id=external_id, messages=clean, source=_json_str(obj, "source") or "chat", **common)]
    if "transcript" in obj:
        return _transcript_prompts(_json_str(obj, "transcript"), external_id, row, obj)
    if "text" not in obj:
        raise _RowError("text", "is missing; each line needs 'text', 'messages' or 'transcript'")
    return [
        ParsedPrompt(
            row=row,
            external_id=external_id,
            messages=[{"role": "user", "content": _json_str(obj, "text")}],
            source=_json_str(obj, "source") or "jsonl",
            **common,
        )
    ]


def _counselchat_question(obj: dict, row: int) -> ParsedPrompt:
    splits = obj.get("splits") or []
    if not isinstance(splits, list):
        raise _RowError("splits", "must be a list")
    source_ids = obj.get("source_question_ids") or []
    return ParsedPrompt(
        row=row,
        external_id=_json_str(obj, "question_id"),
        messages=[{"role": "user", "content": _json_str(obj, "text") or _json_str(obj, "title")}],
        topic=_json_str(obj, "topic"),
        # A question can have answers in several splits; "test+train" keeps that visible.
        split="+".join(sorted(str(s) for s in splits)),
        reference=best_counselchat_answer(source_ids),
        source="counselchat",
    )


def _txt_rows(text: str) -> Iterator[tuple[int, object]]:
    for number, chunk in split_transcripts(text):
        yield number, (lambda chunk=chunk, n=number: _transcript_prompts(chunk, transcript_id(n), n, {}))


def _transcript_prompts(transcript: str, external_id: str, row: int, obj: dict) -> list[ParsedPrompt]:
    try:
        turns = parse_transcript(transcript)
    except MessageError as exc:
        raise _RowError(exc.field, exc.reason) from None
    ids = iter(user_turn_ids(external_id, turns))
    if not any(turn["role"] == "user" for turn in turns):
        raise _RowError("transcript", "has no <USER> turn")
    prompts = []
    for index, turn in enumerate(turns):
        if turn["role"] != "user":
            continue
        following = turns[index + 1] if index + 1 < len(turns) else None
        prompts.append(
            ParsedPrompt(
                row=row,
                external_id=next(ids),
                messages=[dict(t) for t in turns[: index + 1]],
                topic=_json_str(obj, "topic"),
                split=_json_str(obj, "split"),
                reference=following["content"] if following and following["role"] == "assistant" else "",
                source="transcript",
            )
        )
    return prompts


def _json_id(obj: dict) -> str:
    if "id" not in obj:
        raise _RowError("id", "is missing")
    value = obj["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _RowError("id", "must be a string or an integer")
    return str(value)


def _json_str(obj: dict, key: str) -> str:
    value = obj.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _RowError(key, "must be a string")
    return value


def _fail(field_name: str, reason: str):
    def raise_it():
        raise _RowError(field_name, reason)

    return raise_it
