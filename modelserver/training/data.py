"""Training data for LoRA fine-tuning: loading, cleaning and splitting by question.

Pure Python (csv, json, nh3): no torch, no Django.

Sources
-------
``"counselchat"``
    The bundled CounselChat answers (``evalapp/data/counselchat_answers.csv``): one
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
user turn, see ``evalapp/prompt_import.py``); those ids are recorded as ``prompt_ids`` so
overlap checks work for transcripts too.

Cleaning (each step's row count is recorded): drop rows with an empty turn, strip HTML
(nh3 with no allowed tags, then ``html.unescape``), normalise whitespace, drop rows that
became empty, drop exact duplicate conversations (first one kept).

Splitting is by question, never by row: all answers to one question land in one split.
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import nh3

DATA_DIR = Path(__file__).resolve().parents[2] / "evalapp" / "data"
COUNSELCHAT_ANSWERS = DATA_DIR / "counselchat_answers.csv"
COUNSELCHAT_QUESTIONS = DATA_DIR / "counselchat_questions.jsonl"
COUNSELCHAT = "counselchat"
SPLITS = ("train", "val", "test", "excluded")

_TURN_TAG = re.compile(r"<(USER|AI)>\s*:?", re.I)
_TRANSCRIPT_SEPARATOR = re.compile(r"^\s*---+\s*$", re.M)
_MAX_PROBLEMS = 50


class DataError(ValueError):
    """The training data cannot be read or yields no usable examples."""


# --------------------------------------------------------------------------- data classes


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


@dataclass(frozen=True)
class CleaningStep:
    step: str
    rows: int  # rows left after the step
    changed: int = 0  # rows whose text the step modified
    dropped: int = 0


@dataclass
class DataManifest:
    """What the adapter was trained on: enough to check a study's prompts for overlap."""

    sources: list[dict]
    cleaning: list[dict]
    split_method: str
    seed: int
    val_fraction: float
    question_ids: dict[str, list[str]]  # split -> sorted question ids
    prompt_ids: dict[str, list[str]]  # split -> sorted external prompt ids (slugs, chat ids, t1-u1, ...)
    examples: dict[str, int]  # split -> number of examples
    excluded_requested: int  # ids the caller asked to exclude (whether or not present in the data)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DataManifest:
        return cls(**data)

    def training_ids(self) -> set[str]:
        """Every id (question or prompt) whose answers the adapter saw in training."""
        return set(self.question_ids.get("train", ())) | set(self.prompt_ids.get("train", ()))

    def overlap(self, external_ids: Iterable[str]) -> list[str]:
        """The given study prompt ids that were trained on (should be empty)."""
        seen = self.training_ids()
        return sorted({str(i) for i in external_ids} & seen)


@dataclass
class PreparedData:
    train: list[Example]
    val: list[Example]
    test: list[Example]
    excluded: list[Example]
    manifest: DataManifest

    def split(self, name: str) -> list[Example]:
        return getattr(self, name)


# --------------------------------------------------------------------------- helpers


def sha256_of_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def strip_html(text: str) -> str:
    # Same as evalapp.prompt_import.strip_html: nh3 keeps the words of every tag and drops
    # script/style content; it HTML-escapes the text, which unescape undoes (entities included).
    return html.unescape(nh3.clean(text, tags=set(), strip_comments=True))


def normalise_whitespace(text: str) -> str:
    """Collapse runs of spaces/tabs/NBSP to one space per line, strip lines, keep at most one blank line."""
    lines = [" ".join(line.split()) for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _slug(url: str) -> str:
    return url.strip().rstrip("/").rsplit("/", 1)[-1]


def _text_id(prefix: str, text: str) -> str:
    return f"{prefix}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]}"


# --------------------------------------------------------------------------- loading


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
                    messages = parse_transcript(obj["transcript"])
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
                users = sum(1 for m in messages if m["role"] == "user")
                prompt_ids = tuple(f"{qid}-u{k}" for k in range(1, users + 1)) if has_id else (qid,)
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
    chunks = _TRANSCRIPT_SEPARATOR.split(text)
    for number, chunk in enumerate(chunks, start=1):
        if not chunk.strip():
            continue
        try:
            messages = parse_transcript(chunk)
        except DataError as exc:
            _note(problems, f"transcript {number}: {exc}")
            continue
        tid = f"t{number}"
        users = sum(1 for m in messages if m["role"] == "user")
        examples.append(
            Example(
                id=f"{path.stem}:{tid}",
                question_id=tid,
                messages=tuple(messages),
                source="transcript",
                prompt_ids=tuple(f"{tid}-u{k}" for k in range(1, users + 1)),
            )
        )
    src = SourceFile(str(path), sha256_of_file(path), "transcript-txt", sum(1 for c in chunks if c.strip()))
    return RawData(examples, [src], {}, problems)


def parse_transcript(transcript: str) -> list[dict]:
    parts = _TURN_TAG.split(transcript)
    if parts[0].strip():
        raise DataError("a transcript must start with a <USER> or <AI> tag")
    turns = [
        {"role": "user" if tag.upper() == "USER" else "assistant", "content": content.strip()}
        for tag, content in zip(parts[1::2], parts[2::2], strict=True)
    ]
    return _check_turns(turns)


def _chat_messages(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise DataError("'messages' must be a non-empty list")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise DataError(f"messages[{i}] needs a string 'content'")
        if m.get("role") == "system":
            raise DataError(f"messages[{i}]: system messages are not supported (the system prompt is a setting)")
        if m.get("role") not in ("user", "assistant"):
            raise DataError(f"messages[{i}] has role {m.get('role')!r}; use 'user' or 'assistant'")
        turns.append({"role": m["role"], "content": m["content"]})
    return _check_turns(turns)


def _check_turns(turns: list[dict]) -> list[dict]:
    # Trailing user turns have no answer to learn from.
    while turns and turns[-1]["role"] == "user":
        turns = turns[:-1]
    if not any(t["role"] == "user" for t in turns) or not any(t["role"] == "assistant" for t in turns):
        raise DataError("needs at least one user turn followed by an assistant turn")
    return turns


# --------------------------------------------------------------------------- cleaning


def clean_examples(examples: Sequence[Example]) -> tuple[list[Example], list[CleaningStep]]:
    """Drop empty rows, strip HTML, normalise whitespace, drop exact duplicates; counts after each step."""
    steps = [CleaningStep("loaded", len(examples))]
    kept = [e for e in examples if all(m["content"].strip() for m in e.messages)]
    steps.append(CleaningStep("drop_empty", len(kept), dropped=len(examples) - len(kept)))

    def apply(rows, fn):
        out, changed = [], 0
        for e in rows:
            msgs = tuple({"role": m["role"], "content": fn(m["content"])} for m in e.messages)
            if msgs != e.messages:
                changed += 1
                e = replace(e, messages=msgs)
            out.append(e)
        return out, changed

    kept, changed = apply(kept, strip_html)
    steps.append(CleaningStep("strip_html", len(kept), changed=changed))
    kept, changed = apply(kept, normalise_whitespace)
    steps.append(CleaningStep("normalise_whitespace", len(kept), changed=changed))
    before = len(kept)
    kept = [e for e in kept if all(m["content"] for m in e.messages)]
    steps.append(CleaningStep("drop_empty_after_cleaning", len(kept), dropped=before - len(kept)))
    seen: set[tuple] = set()
    unique = []
    for e in kept:
        k = e.key()
        if k not in seen:
            seen.add(k)
            unique.append(e)
    steps.append(CleaningStep("drop_duplicates", len(unique), dropped=len(kept) - len(unique)))
    return unique, steps


# --------------------------------------------------------------------------- splitting


@dataclass
class Split:
    train: list[Example]
    val: list[Example]
    test: list[Example]
    excluded: list[Example]
    method: str

    def question_ids(self) -> dict[str, list[str]]:
        return {name: sorted({e.question_id for e in getattr(self, name)}) for name in SPLITS}

    def prompt_ids(self) -> dict[str, list[str]]:
        return {name: sorted({p for e in getattr(self, name) for p in e.prompt_ids}) for name in SPLITS}


def split_by_question(
    examples: Sequence[Example],
    val_fraction: float = 0.1,
    *,
    test_question_ids: Iterable[str] = (),
    exclude_question_ids: Iterable[str] = (),
    question_splits: dict[str, frozenset[str]] | None = None,
    seed: int = 0,
) -> Split:
    """Assign whole questions to train / val / test / excluded.

    * A question whose id or any prompt id is in ``exclude_question_ids`` (a study's prompts)
      goes to ``excluded``: never trained on, never used for model selection.
    * ``test_question_ids`` go to ``test``.
    * With ``question_splits`` (declared by the source, e.g. CounselChat's questions file) a
      question is train only if every split it declares is train; one with any test answer
      goes to test, else one with any val answer to val.
    * The remaining questions are shuffled with ``seed`` and ``val_fraction`` of them go to val.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    excluded_ids = {str(i) for i in exclude_question_ids}
    test_ids = {str(i) for i in test_question_ids}
    question_splits = question_splits or {}
    by_question: dict[str, list[Example]] = {}
    for e in examples:
        by_question.setdefault(e.question_id, []).append(e)

    assignment: dict[str, str] = {}
    undecided = []
    for qid, rows in by_question.items():
        ids = {qid} | {p for e in rows for p in e.prompt_ids}
        declared = question_splits.get(qid, frozenset())
        if ids & excluded_ids:
            assignment[qid] = "excluded"
        elif ids & test_ids or "test" in declared:
            assignment[qid] = "test"
        elif declared and declared != {"train"}:
            assignment[qid] = "val" if "val" in declared or "validation" in declared else "test"
        elif declared == {"train"}:
            assignment[qid] = "train"
        else:
            undecided.append(qid)
    undecided.sort()
    random.Random(seed).shuffle(undecided)
    n_val = round(len(undecided) * val_fraction)
    if val_fraction > 0 and n_val == 0 and len(undecided) > 1 and "val" not in assignment.values():
        n_val = 1
    for i, qid in enumerate(undecided):
        assignment[qid] = "val" if i < n_val else "train"

    parts: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for e in examples:
        parts[assignment[e.question_id]].append(e)
    if question_splits and undecided:
        method = "declared splits; undeclared questions shuffled by seed"
    elif question_splits:
        method = "declared splits"
    else:
        method = "questions shuffled by seed"
    return Split(parts["train"], parts["val"], parts["test"], parts["excluded"], method)


# --------------------------------------------------------------------------- all together


def prepare_data(
    source: str | Path = COUNSELCHAT,
    *,
    val_fraction: float = 0.1,
    exclude_question_ids: Iterable[str] = (),
    test_question_ids: Iterable[str] = (),
    use_source_splits: bool = True,
    seed: int = 0,
) -> PreparedData:
    """Load, clean and split one source; the manifest records files, counts and ids per split."""
    raw = load_source(source)
    excluded = {str(i) for i in exclude_question_ids}
    cleaned, steps = clean_examples(raw.examples)
    if not cleaned:
        raise DataError(f"{source}: no usable examples ({'; '.join(raw.problems[:5]) or 'all rows were empty'})")
    split = split_by_question(
        cleaned,
        val_fraction,
        test_question_ids=test_question_ids,
        exclude_question_ids=excluded,
        question_splits=raw.question_splits if use_source_splits else None,
        seed=seed,
    )
    if not split.train:
        raise DataError(f"{source}: no training examples left after splitting and exclusions")
    manifest = DataManifest(
        sources=[asdict(s) for s in raw.sources],
        cleaning=[asdict(s) for s in steps],
        split_method=split.method,
        seed=seed,
        val_fraction=val_fraction,
        question_ids=split.question_ids(),
        prompt_ids=split.prompt_ids(),
        examples={name: len(getattr(split, name)) for name in SPLITS},
        excluded_requested=len(excluded),
        problems=list(raw.problems),
    )
    return PreparedData(split.train, split.val, split.test, split.excluded, manifest)


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
