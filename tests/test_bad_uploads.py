"""Uploads of the wrong type, too big, bombs and path-like names: refused with a clear error, nothing written.

Every upload the site takes: the prompt file (page and API), the rater codes CSV (page), and the study
archive (`manage.py study_import`; no page takes one).
"""

import io
import json
import zipfile

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils.html import escape
from rest_framework.test import APIClient

from evalapp.archive import ArchiveError, reader, study_export, study_import
from evalapp.models import Prompt, Study
from raters.models import StudyMembership
from raters import services as rater_services

from .factories import ArmFactory, PromptFactory, ResponseFactory, StudyFactory

pytestmark = pytest.mark.django_db

GOOD = b"id,text\nq1,I cannot sleep.\n"
BAD_FILES = [
    ("prompts.exe", GOOD, "unknown type .exe"),
    ("prompts", GOOD, "unknown type (none)"),
    ("prompts.zip", zipfile.ZipFile.__doc__.encode()[:50], "unknown type .zip"),
    ("prompts.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "is not UTF-8"),
    ("prompts.csv", b"", "empty"),
    ("prompts.jsonl", b"PK\x03\x04" + b"\x00" * 20, "is not valid JSON"),
    ("prompts.csv", b"id,text\nq1,a\x00b\n", "NUL character"),
]


@pytest.fixture
def api(researcher):
    client = APIClient()
    client.force_authenticate(researcher)
    return client


@pytest.mark.parametrize("name,data,message", BAD_FILES)
def test_wrong_types_are_refused_on_the_page_and_the_api(client, api, researcher, study, name, data, message):
    client.force_login(researcher)
    page = client.post(reverse("study_import", args=[study.id]),
                       {"file": SimpleUploadedFile(name, data), "seed": 0})
    assert page.status_code == 400 and message in page.content.decode()
    answer = api.post(reverse("api_prompts_import", kwargs={"study_id": study.id}),
                      {"file": SimpleUploadedFile(name, data)}, format="multipart")
    assert answer.status_code == 400 and message in json.dumps(answer.json())
    assert not Prompt.objects.exists()


def test_an_oversize_file_is_refused_from_its_size_before_it_is_read(client, api, researcher, study, settings,
                                                                   monkeypatch):
    settings.PROMPT_IMPORT_MAX_BYTES = 1000
    big = GOOD + b"q2," + b"x" * 2000 + b"\n"
    from django.core.files.uploadedfile import InMemoryUploadedFile

    read = []
    # Django's File proxies read() to the file it wraps, as a property. The test client reads its
    # SimpleUploadedFile to send it; only the server's own InMemoryUploadedFile counts.
    monkeypatch.setattr(InMemoryUploadedFile, "read", property(
        lambda self: (type(self) is InMemoryUploadedFile and read.append(self.name)) or self.file.read))
    client.force_login(researcher)
    page = client.post(reverse("study_import", args=[study.id]), {"file": SimpleUploadedFile("p.csv", big), "seed": 0})
    assert page.status_code == 400 and "the limit is 1,000 bytes" in page.content.decode()
    answer = api.post(reverse("api_prompts_import", kwargs={"study_id": study.id}),
                      {"file": SimpleUploadedFile("p.csv", big)}, format="multipart")
    assert answer.status_code == 400 and "the limit is 1,000 bytes" in json.dumps(answer.json())
    assert not Prompt.objects.exists() and read == []


def test_path_like_names_are_cut_to_a_plain_name_or_refused(api, study):
    """Django's multipart parser keeps only a name's last component and its printable characters; the
    service refuses any other name itself (tests/test_importer_fuzz.py), for the command line's sake."""
    url = reverse("api_prompts_import", kwargs={"study_id": study.id})
    answer = api.post(url, {"file": SimpleUploadedFile("../../etc/passwd", GOOD)}, format="multipart")
    assert answer.status_code == 400 and "unknown type (none)" in json.dumps(answer.json())
    assert not Prompt.objects.exists()
    answer = api.post(url, {"file": SimpleUploadedFile("..\\..\\p\x07rompts.csv", GOOD)}, format="multipart")
    assert answer.status_code == 201 and Prompt.objects.count() == 1  # read as "prompts.csv": nothing is saved under it


def test_rater_codes_refuse_an_oversize_file_a_bad_csv_and_a_wrong_type(client, researcher, study):
    client.force_login(researcher)
    url = reverse("raters_bulk_codes", args=[study.id])
    cases = [
        (b"code\n" + b"abc\n" * (rater_services.CODES_MAX_BYTES // 4 + 1), "the limit is 1,000,000"),
        (b"\x89PNG\r\n\x1a\n\xff", "not UTF-8"),
        (b'code\n"unterminated\nab\r"x\x00', "code"),
        (b"name\nab\n", "needs a 'code' column"),
    ]
    for data, message in cases:
        response = client.post(url, {"file": SimpleUploadedFile("codes.csv", data)}, follow=True)
        assert response.status_code == 200 and escape(message) in response.content.decode(), message
    assert not StudyMembership.objects.filter(study=study, role="rater").exists()


@pytest.fixture
def archive(db):
    study = StudyFactory()
    ResponseFactory(prompt=PromptFactory(study=study), arm=ArmFactory(study=study))
    out = io.BytesIO()
    study_export(study=study, target=out)
    return out.getvalue()


def _with(archive: bytes, extra: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(archive))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as target:
        for info in source.infolist():
            target.writestr(info.filename, extra.pop(info.filename, source.read(info.filename)))
        for name, data in extra.items():
            target.writestr(name, data)
    return out.getvalue()


def _refused(blob: bytes, message: str) -> None:
    studies, users = Study.objects.count(), get_user_model().objects.count()
    with pytest.raises(ArchiveError, match=message):
        study_import(source=io.BytesIO(blob), as_new=True)
    assert (Study.objects.count(), get_user_model().objects.count()) == (studies, users)


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "tables/../../x.jsonl", "tables/x\x00.jsonl",
                                  "tables/extra.jsonl", "README.txt"])
def test_an_archive_with_a_member_no_archive_has_is_refused(archive, name):
    _refused(_with(archive, {name: b"{}\n"}), "members no study archive has")


def test_a_zip_bomb_is_refused_from_the_directory_before_it_is_unpacked(archive, monkeypatch):
    bomb = _with(archive, {"tables/prompts.jsonl": b"\x00" * (30 * 1024**2)})
    assert len(bomb) < 200_000  # 30 MB of zeros in a few dozen kilobytes
    unpacked = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: unpacked.append(name) or real_open(self, name, *a, **k))
    _refused(bomb, "a zip bomb")
    assert unpacked == []
    monkeypatch.setattr(reader, "MAX_UNCOMPRESSED_BYTES", 10_000)
    _refused(archive, "would unpack to")


def test_a_huge_manifest_a_huge_line_and_a_damaged_member_are_refused(archive, monkeypatch):
    _refused(_with(archive, {"manifest.json": b" " * (reader.MAX_MANIFEST_BYTES + 1)}, zipfile.ZIP_STORED),
             "a manifest is a few")
    monkeypatch.setattr(reader, "MAX_LINE_BYTES", 20)
    _refused(archive, "longer than 20 bytes")
    monkeypatch.undo()
    damaged = bytearray(archive)
    info = zipfile.ZipFile(io.BytesIO(archive)).getinfo("tables/prompts.jsonl")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for at in range(start, start + min(info.compress_size, 40)):
        damaged[at] ^= 0x5A
    _refused(bytes(damaged), "damaged|Checksum mismatch")


def test_the_command_says_why(archive, tmp_path):
    path = tmp_path / "bomb.zip"
    path.write_bytes(_with(archive, {"../../etc/passwd": b"x"}))
    with pytest.raises(CommandError, match="members no study archive has"):
        call_command("study_import", str(path), "--as-new")
