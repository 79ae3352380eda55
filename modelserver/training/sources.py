"""Where training examples come from: the bundled CounselChat files, CSV, chat JSONL, transcripts.

Pure Python (csv, json): no torch, no Django.

Sources
-------
``"counselchat"``
    The bundled CounselChat answers (``modelserver/corpus/data/counselchat_answers.csv``): one
    example per answer, the user turn is ``questionText`` (``questionTitle`` when empty).
    Question ids are the slugs of ``counselchat_questions.jsonl`` - the ``external_id`` a
    study gives the same question - so a study can check its prompts against the adapter's
    training data.  CSV ``questionID`` values are not unique (18 of them cover two different
    questions), so a row is mapped to the slug that lists its ``questionID`` in
    ``source_question_ids`` *and* matches its ``questionLink``.
``*.csv``
    Any CSV with CounselChat's columns (questionText/questionTitle, answerText, optionally
    questionID, questionLink, split).
``*.jsonl``
    One conversation a line: ``{"id"?, "messages": [{"role", "content"}, ...], "split"?}`` or
    ``{"id"?, "transcript": "<USER> ... <AI> ..."}``.
``*.txt``
    Tagged transcripts separated by lines of ``---``.

A transcript ``t`` imported as study prompts gives prompts ``t-u1``, ``t-u2``, ... (one per
user turn, :func:`modelserver.corpus.user_turn_ids`); those ids are recorded as ``prompt_ids`` so
overlap checks work for transcripts too.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from modelserver.corpus import (
    COUNSELCHAT_ANSWERS,
    COUNSELCHAT_QUESTIONS,
    MessageError,
    parse_transcript,
    split_transcripts,
    transcript_id,
    user_turn_ids,
    validate_messages,
)

COUNSELCHAT = "counselchat"
_MAX_PROBLEMS = 50


class DataError(ValueError):
    """The training data cannot be read or yields no usable examples."""


@dataclass(frozen=True)
class Example:
    """One training conversation (user/assistant turns; the system prompt is added at tokenisation)."""

    id: str
    question_id: str  # the unit of splitting
    messages: tuple[dict, ...]
    source: str
    prompt_ids: tuple[str, ...] = ()  # external ids a study importing the same file would give these prompts
    topic: str = ""

    def key(self) -> tuple:
        return tuple((m["role"], m["content"]) for m in self.messages)


@dataclass(frozen=True)
class SourceFile:
    path: str
    sha256: str
    format: str
    rows: int


@dataclass
class RawData:
    """Loaded, not yet cleaned.  ``question_splits``: the splits each question's rows declare."""

    examples: list[Example]
    sources: list[SourceFile]
    question_splits: dict[str, frozenset[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def sha256_of_file(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _slug(url: str) -> str:
    return url.strip().rstrip("/").rsplit("/", 1)[-1]


def _text_id(prefix: str, text: str) -> str:
    return f"{prefix}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]}"


def load_source(source: str | Path, *, questions_path: str | Path | None = None) -> RawData:
    """``"counselchat"`` or a .csv / .jsonl / .txt file (see module docstring)."""
    if str(source) == COUNSELCHAT:
        return load_counselchat(COUNSELCHAT_ANSWERS, questions_path or COUNSELCHAT_QUESTIONS)
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataError(f"Training data {str(source)!r} is neither 'counselchat' nor an existing file.")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return load_counselchat(path, questions_path)
    if suffix in (".jsonl", ".ndjson"):
        return load_chat_jsonl(path)
    if suffix == ".txt":
        return load_transcripts_txt(path)
    raise DataError(f"{path}: unknown file type {suffix or '(none)'}; use 'counselchat', .csv, .jsonl or .txt")


def load_counselchat(
    csv_path: str | Path = COUNSELCHAT_ANSWERS, questions_path: str | Path | None = COUNSELCHAT_QUESTIONS
) -> RawData:
    """One example per answer; question ids are the questions file's slugs (see module docstring)."""
    csv_path = Path(csv_path)
    by_csv_id: dict[str, list[str]] = {}
    splits: dict[str, frozenset[str]] = {}
    sources = []
    if questions_path is not None and Path(questions_path).is_file():
        questions_path = Path(questions_path)
        with questions_path.open(encoding="utf-8") as fh:
            n = 0
            for line in fh:
                if not line.strip():
                    continue
                q = json.loads(line)
                n += 1
                splits[q["question_id"]] = frozenset(str(s) for s in q.get("splits") or ())
                for sid in q.get("source_question_ids") or ():
                    by_csv_id.setdefault(str(sid), []).append(q["question_id"])
        sources.append(SourceFile(str(questions_path), sha256_of_file(questions_path), "counselchat-questions", n))
    problems: list[str] = []
    examples = []
    row_splits: dict[str, set[str]] = {}
    with csv_path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "answerText" not in reader.fieldnames:
            raise DataError(f"{csv_path}: not a CounselChat CSV (needs an answerText column)")
        n = 0
        for n, row in enumerate(reader, start=1):
            question = (row.get("questionText") or "").strip() or (row.get("questionTitle") or "")
            answer = row.get("answerText") or ""
            qid = _counselchat_question_id(row, by_csv_id, problems, n)
            examples.append(
                Example(
                    id=f"{csv_path.stem}:{n}",
                    question_id=qid,
                    messages=({"role": "user", "content": question}, {"role": "assistant", "content": answer}),
                    source=COUNSELCHAT,
                    prompt_ids=(qid,),
                    topic=row.get("topic") or "",
                )
            )
            if row.get("split"):
                row_splits.setdefault(qid, set()).add(row["split"].strip())
    sources.insert(0, SourceFile(str(csv_path), sha256_of_file(csv_path), "counselchat-csv", n))
    if not splits:  # no questions file: the rows' own split column
        splits = {k: frozenset(v) for k, v in row_splits.items()}
    return RawData(examples, sources, splits, problems)


def _counselchat_question_id(row: dict, by_csv_id: dict[str, list[str]], problems: list[str], n: int) -> str:
    link = _slug(row.get("questionLink") or "")
    candidates = by_csv_id.get(str(row.get("questionID", "")).strip(), [])
    if len(candidates) == 1:
        return candidates[0]
    if link and link in candidates:
        return link
    if candidates:
        _note(problems, f"row {n}: questionID {row.get('questionID')} maps to {candidates}, "
                        f"none matches its link; using {candidates[0]}")
        return candidates[0]
    if link:
        return link
    text = (row.get("questionText") or row.get("questionTitle") or "").strip()
    return f"q{row['questionID']}" if row.get("questionID") else _text_id("q", text)


def _note(problems: list[str], text: str) -> None:
    if len(problems) < _MAX_PROBLEMS:
        problems.append(text)
    elif len(problems) == _MAX_PROBLEMS:
        problems.append("... (more problems not listed)")


def load_chat_jsonl(path: str | Path) -> RawData:
    """``{"id"?, "messages": [...], "split"?, "topic"?}`` or ``{"id"?, "transcript": ...}`` per line."""
    path = Path(path)
    examples: list[Example] = []
    problems: list[str] = []
    splits: dict[str, set[str]] = {}
    n = 0
    with path.open(encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            n += 1
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise DataError("each line must be a JSON object")
                if "messages" in obj:
                    messages = _chat_messages(obj["messages"])
                    prompt_ids = None
                elif "transcript" in obj:
                    if not isinstance(obj["transcript"], str):
                        raise DataError("'transcript' must be a string")
                    messages = transcript_turns(obj["transcript"])
                    prompt_ids = None
                else:
                    raise DataError("needs 'messages' or 'transcript'")
            except (ValueError, DataError) as exc:
                _note(problems, f"line {lineno}: {exc}")
                continue
            has_id = "id" in obj and obj["id"] is not None
            first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
            qid = str(obj["id"]) if has_id else _text_id("chat", first_user)
            if "transcript" in obj:
                # A study importing this line gets one prompt per user turn: <id>-u1, <id>-u2, ...
                prompt_ids = tuple(user_turn_ids(qid, messages)) if has_id else (qid,)
            else:
                prompt_ids = (qid,)
            if isinstance(obj.get("split"), str) and obj["split"].strip():
                splits.setdefault(qid, set()).update(s for s in re.split(r"[+,\s]+", obj["split"].strip()) if s)
            examples.append(
                Example(
                    id=f"{path.stem}:{lineno}",
                    question_id=qid,
                    messages=tuple(messages),
                    source="transcript" if "transcript" in obj else "chat",
                    prompt_ids=prompt_ids,
                    topic=obj.get("topic") if isinstance(obj.get("topic"), str) else "",
                )
            )
    src = SourceFile(str(path), sha256_of_file(path), "jsonl", n)
    return RawData(examples, [src], {k: frozenset(v) for k, v in splits.items()}, problems)


def load_transcripts_txt(path: str | Path) -> RawData:
    """Tagged ``<USER>``/``<AI>`` transcripts separated by lines of ``---``; ids t1, t2, ... as in prompt_import."""
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    examples, problems = [], []
    chunks = list(split_transcripts(text))
    for number, chunk in chunks:
        try:
            messages = transcript_turns(chunk)
        except ValueError as exc:
            _note(problems, f"transcript {number}: {exc}")
            continue
        tid = transcript_id(number)
        examples.append(
            Example(
                id=f"{path.stem}:{tid}",
                question_id=tid,
                messages=tuple(messages),
                source="transcript",
                prompt_ids=tuple(user_turn_ids(tid, messages)),
            )
        )
    src = SourceFile(str(path), sha256_of_file(path), "transcript-txt", len(chunks))
    return RawData(examples, [src], {}, problems)


def transcript_turns(transcript: str) -> list[dict]:
    """A tagged transcript's turns, without the trailing user turns (there is no answer to learn)."""
    return _check_turns(parse_transcript(transcript))


def _chat_messages(messages) -> list[dict]:
    try:
        # Empty turns are dropped, and counted, by cleaning; a conversation may end with the assistant.
        return _check_turns(validate_messages(messages, final_user=False, blank_ok=True))
    except MessageError as exc:
        raise DataError(str(exc)) from None


def _check_turns(turns: list[dict]) -> list[dict]:
    # Trailing user turns have no answer to learn from.
    while turns and turns[-1]["role"] == "user":
        turns = turns[:-1]
    if not any(t["role"] == "user" for t in turns) or not any(t["role"] == "assistant" for t in turns):
        raise DataError("needs at least one user turn followed by an assistant turn")
    return turns


def read_id_file(path: str | Path) -> list[str]:
    """Question ids to exclude: a text file (one id a line, ``#`` comments), a JSON list, or a JSONL of
    prompts / questions (``external_id``, ``question_id`` or ``id``)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    keys = ("external_id", "question_id", "id")

    def from_obj(obj) -> str | None:
        if isinstance(obj, (str, int)) and not isinstance(obj, bool):
            return str(obj)
        if isinstance(obj, dict):
            for k in keys:
                if obj.get(k) is not None:
                    return str(obj[k])
        return None

    ids: list[str] = []
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of ids")
        ids = [i for i in map(from_obj, data) if i is not None]
    elif suffix in (".jsonl", ".ndjson"):
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                value = from_obj(json.loads(line))
                if value is None:
                    raise DataError(f"{path}:{lineno}: no external_id / question_id / id")
                ids.append(value)
    else:
        ids = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return ids
