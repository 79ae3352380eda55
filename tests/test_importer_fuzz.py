"""Every importer, fed anything: a clean import or a report of what is wrong, never a partial write or a crash.

The importers: prompt files (CSV, JSONL, .txt transcripts; `evalapp.services.study_import_prompts`),
rater codes (`raters.services.rater_accounts_bulk_create`), a rubric (`evalapp.services.study_set_rubric`)
and a study archive (`evalapp.archive.study_import`). Each property counts the rows before and after
inside the failing case: a refusal writes nothing.
"""

import csv
import io
import json
import zipfile

import pytest
from django.contrib.auth import get_user_model
from hypothesis import HealthCheck, given, settings, strategies as st

from evalapp.archive import ArchiveError, study_export, study_import
from evalapp.errors import ServiceError
from evalapp.models import AuditEvent, Criterion, Prompt, Study
from evalapp.services import ImportReport, study_import_prompts, study_set_rubric
from raters.models import StudyMembership
from raters.services import rater_accounts_bulk_create

from .factories import ArmFactory, PromptFactory, ResponseFactory, StudyFactory, UserFactory

pytestmark = pytest.mark.django_db
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Characters that have broken importers elsewhere: NUL (PostgreSQL refuses it), other controls, bidi
# overrides, quotes and separators, a BOM, surrogate-free astral characters, markup.
NASTY = st.sampled_from(["\x00", "\x07", "\x1b", "\x7f", "\u202e", "\u2066", "\ufeff", '"', ",", "\n", "\r", "\t",
                         "<script>", "<USER>", "<AI>", "---", "=", "é", "😀", "\u0301", " "])
CELL = st.lists(st.one_of(NASTY, st.text(max_size=8)), max_size=6).map("".join)
FILENAMES = st.sampled_from(["p.csv", "p.jsonl", "p.ndjson", "p.json", "p.txt", "P.CSV", "p.exe", "p", "",
                             "../../etc/passwd", "../p.csv", "/etc/p.csv", "dir/p.csv", "..\\p.csv", "p\x00.csv",
                             "p.csv\x00.exe", "p\n.csv"])
JSON_VALUE = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | CELL,
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(CELL, inner, max_size=3),
                          max_leaves=6)
JSON_KEYS = st.sampled_from(["id", "text", "topic", "split", "reference", "source", "messages", "transcript",
                             "question_id", "title", "splits", "source_question_ids", "role", "content"])
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", ""]),
                                 "content": CELL})


@st.composite
def csv_file(draw):
    header = draw(st.one_of(
        st.sampled_from([["id", "text"], ["id", "text", "topic", "split", "reference", "source"]]),
        st.lists(st.sampled_from(["id", "text", "topic", "split", "reference", "source", "other", "", " ID ", "Text"]),
                 max_size=6)))
    rows = draw(st.lists(st.lists(CELL, max_size=len(header) + 1), max_size=5))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


@st.composite
def jsonl_file(draw):
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["generic", "object", "chat", "garbage", "value"]))
        if kind == "generic":
            lines.append(json.dumps({"id": draw(CELL), "text": draw(CELL), "topic": draw(CELL)}))
        elif kind == "object":
            lines.append(json.dumps(draw(st.dictionaries(JSON_KEYS, JSON_VALUE, max_size=5))))
        elif kind == "chat":
            lines.append(json.dumps({"id": draw(CELL), "messages": draw(st.lists(MESSAGE, max_size=4))}))
        elif kind == "value":
            lines.append(json.dumps(draw(JSON_VALUE)))
        else:
            lines.append(draw(CELL))
    return "\n".join(lines)


@st.composite
def nearly_valid_file(draw):
    """Files whose every row could import but for the odd character: the writes are reached, not only the parser."""
    rows = [(f"q{i}", "hi " + draw(CELL), draw(CELL), draw(CELL)) for i in range(draw(st.integers(1, 3)))]
    if draw(st.booleans()):
        out = io.StringIO()
        csv.writer(out).writerows([("id", "text", "topic", "reference"), *rows])
        return out.getvalue(), "p.csv"
    lines = [json.dumps({"id": i, "text": t, "topic": topic, "reference": ref}) for i, t, topic, ref in rows]
    return "\n".join(lines), "p.jsonl"


TXT_FILE = st.lists(st.one_of(st.sampled_from(["<USER>", "<AI>", "\n---\n", "\n", "<USER> ", "<ai>"]), CELL),
                    max_size=12).map("".join)
PROMPT_FILE = st.one_of(csv_file(), jsonl_file(), TXT_FILE).map(lambda t: t.encode("utf-8", "surrogatepass"))
RAW_BYTES = st.binary(max_size=200)


def _prompt_count(study):
    return Prompt.objects.filter(study=study).count()


@pytest.fixture
def draft(db):
    study = StudyFactory()
    PromptFactory(study=study, external_id="already")
    return study


@FUZZ
@given(data=st.one_of(PROMPT_FILE, RAW_BYTES), filename=FILENAMES, split=st.none() | CELL,
       sample=st.none() | st.integers(-2, 5), redact=st.booleans())
def test_a_prompt_file_imports_whole_or_not_at_all(draft, data, filename, split, sample, redact):
    before = _prompt_count(draft)
    report = study_import_prompts(study=draft, data=data, filename=filename, split=split, sample=sample, redact=redact)
    assert isinstance(report, ImportReport)
    after = _prompt_count(draft)
    if report.ok:
        assert after - before == report.created
    else:
        assert after == before, report.errors
        assert all(problem.reason for problem in report.errors)
    for prompt in Prompt.objects.filter(study=draft):
        assert "\x00" not in json.dumps(prompt.messages, ensure_ascii=False)


@FUZZ
@given(file=nearly_valid_file())
def test_a_nearly_valid_prompt_file_imports_whole_or_not_at_all(db, file):
    text, name = file
    study = StudyFactory()  # one per example: an id imported by an earlier example would refuse the file
    report = study_import_prompts(study=study, data=text.encode("utf-8", "surrogatepass"), filename=name)
    assert _prompt_count(study) == (report.created if report.ok else 0), report.errors
    if not report.ok:
        assert all(p.reason for p in report.errors)


def test_path_like_and_control_character_names_are_refused(draft):
    for name in ["../../etc/passwd.csv", "/etc/p.csv", "dir/p.csv", "..\\p.csv", "p\x00.csv", "p\n.csv"]:
        report = study_import_prompts(study=draft, data=b"id,text\nq1,hello\n", filename=name)
        assert not report.ok and report.errors[0].field == "file" and "file name" in report.errors[0].reason, name
    assert _prompt_count(draft) == 1


def test_a_cell_past_the_csv_field_limit_is_a_row_error(draft):
    data = b"id,text,reference\nq1,hello,ok\nq2,hello," + b"x" * 200_000 + b"\n"
    report = study_import_prompts(study=draft, data=data, filename="p.csv")
    assert not report.ok and report.errors[0].row == 3 and "not valid CSV" in report.errors[0].reason
    assert _prompt_count(draft) == 1


def test_nul_in_a_prompt_is_a_row_error_not_a_server_error(draft):
    for data, name in [(b"id,text\nq1,he\x00llo\n", "p.csv"), (b'{"id": "q1", "text": "he\\u0000llo"}', "p.jsonl"),
                       (b"<USER> he\x00llo", "p.txt"), (b'{"id": "q\\u0000", "text": "hi"}', "p.jsonl"),
                       (b'{"id": "q1", "text": "hi", "topic": "t\\u0000"}', "p.jsonl")]:
        report = study_import_prompts(study=draft, data=data, filename=name)
        assert not report.ok and "NUL" in str(report.errors[0]), (name, report.errors)
    assert _prompt_count(draft) == 1


CODES_FILE = st.lists(st.lists(CELL, min_size=1, max_size=3), max_size=5).map(
    lambda rows: "\n".join(",".join(r) for r in rows))


@FUZZ
@given(data=st.one_of(CODES_FILE.map(lambda t: ("code\n" + t).encode("utf-8", "surrogatepass")),
                      CODES_FILE.map(lambda t: t.encode("utf-8", "surrogatepass")), RAW_BYTES))
def test_rater_codes_import_whole_or_not_at_all(draft, data):
    User = get_user_model()
    users, members = User.objects.count(), StudyMembership.objects.filter(study=draft).count()
    result = rater_accounts_bulk_create(study=draft, data=data)
    if result.errors:
        assert not result.accounts and all(result.errors)
        assert (User.objects.count(), StudyMembership.objects.filter(study=draft).count()) == (users, members)
    else:
        assert User.objects.count() - users == len(result.accounts) > 0


RUBRIC_KEYS = st.sampled_from(["key", "question", "kind", "min", "max", "labels", "options", "not_sure", "rationale",
                               "level", "description", "label"])
CRITERION = st.one_of(
    st.dictionaries(RUBRIC_KEYS, JSON_VALUE, max_size=8),
    st.fixed_dictionaries({"key": st.sampled_from(["empathy", "a b", "", "x" * 60, "ok"]), "question": CELL,
                           "kind": st.sampled_from(["likert", "choice", "text", ""]),
                           "min": st.integers(-3, 12), "max": st.integers(-3, 12)}),
)


@FUZZ
@given(criteria=st.one_of(st.lists(CRITERION, max_size=4), JSON_VALUE))
def test_a_rubric_is_replaced_whole_or_refused(draft, criteria):
    before = list(Criterion.objects.filter(study=draft).order_by("position").values())
    try:
        study_set_rubric(study=draft, criteria=criteria)
    except ServiceError as exc:
        assert exc.message
        assert list(Criterion.objects.filter(study=draft).order_by("position").values()) == before
    else:
        assert Criterion.objects.filter(study=draft).count() == len(criteria) > 0


@pytest.fixture
def archive_bytes(db):
    study = StudyFactory()
    arm = ArmFactory(study=study)
    ResponseFactory(prompt=PromptFactory(study=study), arm=arm)
    out = io.BytesIO()
    study_export(study=study, target=out)
    return out.getvalue()


def _rewrite(archive: bytes, member: str, content: bytes, fix_manifest: bool) -> bytes:
    """The archive with one member replaced; with `fix_manifest` its checksum and row count made to agree,
    so the reader gets past the checks to the rows themselves."""
    import hashlib

    source = zipfile.ZipFile(io.BytesIO(archive))
    manifest = json.loads(source.read("manifest.json"))
    if fix_manifest and member.startswith("tables/"):
        table = member.removeprefix("tables/").removesuffix(".jsonl")
        if table in manifest["tables"]:
            manifest["tables"][table]["sha256"] = hashlib.sha256(content).hexdigest()
            manifest["tables"][table]["rows"] = len(content.splitlines(keepends=True))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            if info.filename == "manifest.json":
                data = content if member == "manifest.json" else json.dumps(manifest).encode()
            elif info.filename == member:
                data = content
            else:
                data = source.read(info.filename)
            target.writestr(info.filename, data)
    return out.getvalue()


ROW = st.one_of(st.dictionaries(st.sampled_from(["id", "study_id", "text", "title", "owner_id", "messages",
                                                  "username", "email", "external_id", "prompt_id", "arm_id"]),
                                JSON_VALUE, max_size=6).map(json.dumps), CELL)


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_an_archive_imports_whole_or_not_at_all(archive_bytes, data):
    names = zipfile.ZipFile(io.BytesIO(archive_bytes)).namelist()
    how = data.draw(st.sampled_from(["row", "row", "flip", "truncate", "manifest"]))
    if how == "flip":
        at = data.draw(st.integers(0, len(archive_bytes) - 1))
        blob = archive_bytes[:at] + bytes([archive_bytes[at] ^ data.draw(st.integers(1, 255))]) + archive_bytes[at + 1:]
    elif how == "truncate":
        blob = archive_bytes[:data.draw(st.integers(0, len(archive_bytes) - 1))]
    elif how == "manifest":
        blob = _rewrite(archive_bytes, "manifest.json", data.draw(JSON_VALUE.map(json.dumps)).encode(), False)
    else:
        member = data.draw(st.sampled_from([n for n in names if n.startswith("tables/")]))
        original = zipfile.ZipFile(io.BytesIO(archive_bytes)).read(member).splitlines(keepends=True)
        lines = list(original)
        at = data.draw(st.integers(0, len(lines)))
        lines[at:at + 1] = [(data.draw(ROW) + "\n").encode("utf-8", "surrogatepass")]
        blob = _rewrite(archive_bytes, member, b"".join(lines), True)
    counts = (Study.objects.count(), get_user_model().objects.count(), Prompt.objects.count(),
              AuditEvent.objects.count())
    try:
        result = study_import(source=io.BytesIO(blob), as_new=True)
    except ArchiveError as exc:
        assert str(exc)
        assert (Study.objects.count(), get_user_model().objects.count(), Prompt.objects.count(),
                AuditEvent.objects.count()) == counts
    else:
        assert Study.objects.count() == counts[0] + 1 and result.study.pk
