"""Prompt import: every bad input names its rows and writes nothing."""

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from evalapp.models import Prompt
from evalapp.prompt_import import find_pii, redact_pii
from evalapp.services import study_import_prompts
from modelserver.corpus import COUNSELCHAT_QUESTIONS

from ..factories import StudyFactory

pytestmark = pytest.mark.django_db


def run_import(study, content, filename="prompts.csv", **options):
    data = content.encode("utf-8") if isinstance(content, str) else content
    return study_import_prompts(study=study, data=data, filename=filename, **options)


def problems(report):
    return [(e.row, e.field) for e in report.errors]


GOOD_CSV = "id,text,topic,split\nq1,I feel lonely at night.,anxiety,test\nq2,My partner ignores me.,relationships,train\n"


def test_csv_import_creates_single_turn_conversations(study):
    report = run_import(study, GOOD_CSV)
    assert report.ok and report.created == 2
    prompt = Prompt.objects.get(study=study, external_id="q1")
    assert prompt.messages == [{"role": "user", "content": "I feel lonely at night."}]
    assert (prompt.topic, prompt.split, prompt.source) == ("anxiety", "test", "csv")


def test_same_file_twice_adds_nothing(study):
    assert run_import(study, GOOD_CSV).created == 2
    again = run_import(study, GOOD_CSV)
    assert again.ok and again.created == 0 and again.unchanged == 2
    assert Prompt.objects.filter(study=study).count() == 2


def test_changed_text_for_existing_id_is_an_error_and_writes_nothing(study):
    run_import(study, GOOD_CSV)
    changed = "id,text\nq3,A new one.\nq1,I feel lonely in the morning.\n"
    report = run_import(study, changed)
    assert problems(report) == [(3, "id")]
    assert "different content" in report.errors[0].reason
    assert not Prompt.objects.filter(external_id="q3").exists()
    assert Prompt.objects.get(study=study, external_id="q1").last_user_message == "I feel lonely at night."


def test_not_utf8(study):
    report = run_import(study, "id,text\nq1,caf\xe9\n".encode("latin-1"))
    assert problems(report) == [(0, "file")]
    assert "not UTF-8" in report.errors[0].reason
    assert not Prompt.objects.exists()


def test_missing_columns(study):
    report = run_import(study, "identifier,question\nq1,Hello\n")
    assert problems(report) == [(1, "header")]
    assert "id, text" in report.errors[0].reason


def test_every_bad_row_is_reported_and_nothing_written(study, settings):
    settings.PROMPT_MAX_CHARS = 50
    content = (
        "id,text\n"
        "q1,Fine question\n"
        "q2,\n"  # empty
        "q3,   \n"  # whitespace only
        f"q4,{'x' * 51}\n"  # too long
        "q1,Duplicate id\n"
        ",No id\n"
    )
    report = run_import(study, content)
    assert problems(report) == [(3, "text"), (4, "text"), (5, "text"), (6, "id"), (7, "id")]
    assert "row 2" in report.errors[3].reason
    assert "limit is 50" in report.errors[2].reason
    assert not Prompt.objects.exists()


def test_html_is_stripped_keeping_words(study):
    content = 'id,text\nq1,"<p>I feel <b>very</b> sad &amp; tired.</p><script>alert(1)</script>"\n'
    report = run_import(study, content)
    assert report.ok
    assert Prompt.objects.get(external_id="q1").last_user_message == "I feel very sad & tired."
    assert [(w.row, w.field) for w in report.warnings] == [(2, "text")]


def test_file_over_size_limit(study, settings):
    settings.PROMPT_IMPORT_MAX_BYTES = 100
    report = run_import(study, "id,text\n" + "".join(f"q{i},question {i}\n" for i in range(20)))
    assert problems(report) == [(0, "file")]
    assert "limit is 100 bytes" in report.errors[0].reason
    assert not Prompt.objects.exists()


@pytest.mark.parametrize("cell", ["=HYPERLINK(\"http://x\")", "+1 feel", "-sad", "@home alone"])
def test_formula_like_cells_are_stored_as_plain_text(study, cell):
    quoted = '"' + cell.replace('"', '""') + '"'
    report = run_import(study, f"id,text\nq1,{quoted}\n")
    assert report.ok
    assert Prompt.objects.get(external_id="q1").last_user_message == cell


def test_pii_is_reported_and_optionally_redacted(study):
    content = "id,text\nq1,Mail me at jo.doe@example.org or call +1 (555) 123-4567\nq2,See https://example.com/me\nq3,I am 23 and it is 2019\n"
    report = run_import(study, content)
    assert report.ok
    assert [(w.row, w.reason.split(" (")[0]) for w in report.warnings] == [
        (2, "contains e-mail address, phone number"),
        (3, "contains URL"),
    ]
    assert "jo.doe@example.org" in Prompt.objects.get(external_id="q1").last_user_message

    other = run_import(StudyFactory(owner=study.owner), content, redact=True)
    assert other.ok
    texts = list(Prompt.objects.exclude(study=study).order_by("external_id").values_list("messages", flat=True))
    assert texts[0][0]["content"] == "Mail me at [EMAIL] or call [PHONE]"
    assert texts[1][0]["content"] == "See [URL]"
    assert texts[2][0]["content"] == "I am 23 and it is 2019"


def test_pii_helpers():
    assert find_pii("no personal data here, age 34, 2021-2022") == []
    assert redact_pii("write to a@b.co") == "write to [EMAIL]"


def test_chat_jsonl_keeps_history(study):
    lines = [
        {"id": "c1", "messages": [
            {"role": "user", "content": "I can't sleep."},
            {"role": "assistant", "content": "How long has it been?"},
            {"role": "user", "content": "Months now."},
        ], "topic": "sleep-improvement"},
        {"id": "c2", "messages": [{"role": "user", "content": "Hello?"}]},
    ]
    report = run_import(study, "\n".join(json.dumps(line) for line in lines), filename="chat.jsonl")
    assert report.ok and report.created == 2
    prompt = Prompt.objects.get(external_id="c1")
    assert len(prompt.history) == 2 and prompt.last_user_message == "Months now."


def test_chat_jsonl_bad_rows(study):
    lines = [
        json.dumps({"id": "c1", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}),
        json.dumps({"id": "c2", "messages": [{"role": "system", "content": "Be nice"}, {"role": "user", "content": "Hi"}]}),
        "{not json",
        json.dumps({"messages": [{"role": "user", "content": "no id"}]}),
        json.dumps({"id": "c5"}),
    ]
    report = run_import(study, "\n".join(lines), filename="chat.jsonl")
    assert problems(report) == [(1, "messages"), (2, "messages[0]"), (3, "json"), (4, "id"), (5, "text")]
    assert not Prompt.objects.exists()


def test_tagged_transcripts_give_one_prompt_per_user_turn(study):
    transcript = (
        "<USER> I keep fighting with my sister. <AI> That sounds painful. What do you fight about?\n"
        "<USER> Money, mostly. <AI> Money fights often carry older hurts.\n<USER> What should I do?"
    )
    content = transcript + "\n---\n<USER> One question only."
    report = run_import(study, content, filename="transcripts.txt")
    assert report.ok and report.created == 4
    last = Prompt.objects.get(external_id="t1-u3")
    assert [m["role"] for m in last.messages] == ["user", "assistant", "user", "assistant", "user"]
    assert last.last_user_message == "What should I do?"
    assert Prompt.objects.get(external_id="t1-u2").reference == "Money fights often carry older hurts."
    assert Prompt.objects.get(external_id="t2-u1").messages == [{"role": "user", "content": "One question only."}]


def test_transcript_jsonl_and_bad_transcript(study):
    lines = [
        json.dumps({"id": "x", "transcript": "<USER> Hi <AI> Hello <USER> I am sad"}),
        json.dumps({"id": "y", "transcript": "Hi there <AI> Hello"}),
    ]
    report = run_import(study, "\n".join(lines), filename="t.jsonl")
    assert problems(report) == [(2, "transcript")]


def test_counselchat_file_with_split_and_seeded_sample(study):
    data = COUNSELCHAT_QUESTIONS.read_bytes()
    report = study_import_prompts(study=study, data=data, filename="questions.jsonl", split="test", sample=5, seed=7)
    assert report.ok and report.created == 5
    prompts = list(Prompt.objects.filter(study=study))
    assert {p.split for p in prompts} == {"test"}
    assert all(p.source == "counselchat" and p.topic and p.reference for p in prompts)
    first_ids = {p.external_id for p in prompts}
    again = study_import_prompts(study=study, data=data, filename="questions.jsonl", split="test", sample=5, seed=7)
    assert again.created == 0 and again.unchanged == 5
    other = StudyFactory(owner=study.owner)
    different = study_import_prompts(study=other, data=data, filename="questions.jsonl", split="test", sample=5, seed=8)
    assert {p.external_id for p in other.prompts.all()} != first_ids and different.ok


def test_sample_larger_than_available(study):
    report = run_import(study, GOOD_CSV, split="test", sample=5)
    assert problems(report) == [(0, "sample")]


def test_unknown_file_type(study):
    assert problems(run_import(study, "whatever", filename="prompts.xlsx")) == [(0, "file")]


def test_command_reports_rows_and_exits_non_zero(study, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text\nq1,\nq2,fine\n", encoding="utf-8")
    with pytest.raises(CommandError, match="Nothing imported: 1 problem"):
        call_command("study_import_prompts", str(study.id), str(bad))
    assert "row 2, text: is empty or whitespace only" in capsys.readouterr().err
    assert not Prompt.objects.exists()

    good = tmp_path / "good.csv"
    good.write_text(GOOD_CSV, encoding="utf-8")
    call_command("study_import_prompts", str(study.id), str(good), "--split", "test")
    assert "Imported 1 new prompt" in capsys.readouterr().out
    assert list(Prompt.objects.values_list("external_id", flat=True)) == ["q1"]


def test_command_unknown_study(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text(GOOD_CSV)
    with pytest.raises(CommandError, match="No study with id 999999"):
        call_command("study_import_prompts", "999999", str(path))
