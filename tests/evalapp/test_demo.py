"""The demo's preparation runs in the test suite so `make demo` cannot rot."""

import os
import re
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.urls import reverse

from evalapp.management.commands.demo import JUDGE_NAME
from evalapp.management.commands.demo import Command as Demo
from evalapp.models import PairJudgment, PairVerdict, Rating, Response, ResponsePair, Study
from modelserver.models import SAFETY_KEY, Adapter, Judge, JudgeAnswer, JudgeRun
from raters.models import Assignment

from ..factories import ArmFactory, PromptFactory, ResponseFactory, log_in


# Real commits: the demo queues its jobs after commit, which a test's wrapping transaction would hold back.
@pytest.mark.django_db(transaction=True)
def test_demo_prepares_study_and_working_accounts(client, capsys, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    call_command("demo", "--no-serve", "--quick", "--simulate")
    out = capsys.readouterr().out
    accounts = dict(re.findall(r"^  (demo-[\w-]+)\s+(\S+)", out, re.M))
    assert set(accounts) == {"demo-researcher", "demo-rater-1", "demo-rater-2", "demo-rater-3", "demo-adjudicator"}

    study = Study.objects.get()
    assert study.prompts.count() == 20
    assert set(study.prompts.values_list("split", flat=True)) == {"test"}
    # Both arms generated with the real bundled model, the fine-tuned one through the demo's adapter.
    arms = {arm.label: arm for arm in study.arms.all()}
    assert set(arms) == {"fine-tuned", "baseline"} and arms["fine-tuned"].adapter and not arms["baseline"].adapter
    responses = Response.objects.filter(prompt__study=study)
    assert responses.count() == 40 and all(r.text.strip() for r in responses)
    assert {r.provenance["base_sha256"] for r in responses} == {responses[0].provenance["base_sha256"]}
    adapter = Adapter.objects.get(created_by=study.owner)
    assert not adapter.training_question_ids() & set(study.prompts.values_list("external_id", flat=True))
    # The raters consented and have balanced queues; the simulation is labelled.
    assert Assignment.objects.filter(study=study, response__isnull=False).count() == 40 * 3
    assert Rating.objects.filter(response__prompt__study=study, simulated=True).count() == 40 * 3
    # The pairwise phase is open on the same responses: one pair a prompt, judged by all three (simulated),
    # the gold pairs left for people; on empathy the fine-tuned arm's response wins more often than not.
    assert study.pairwise.status == "open" and ResponsePair.objects.filter(study=study).count() == 20
    judgments = PairJudgment.objects.filter(pair__study=study)
    assert judgments.count() == 20 * 3 and not judgments.filter(simulated=False).exists()
    tuned = {"first" if pair.first.arm.adapter else "second"
             for pair in ResponsePair.objects.filter(study=study).select_related("first__arm")}
    assert len(tuned) == 1
    (baseline,) = {"first", "second"} - tuned
    (tuned,) = tuned
    empathy = list(PairVerdict.objects.filter(judgment__pair__study=study, key="empathy").values_list("verdict",
                                                                                                    flat=True))
    assert len(empathy) == 60 and empathy.count(tuned) > 2 * empathy.count(baseline) and "tie" in empathy
    # --quick leaves the judge out (a minute of the bundled model); test_demo_judges_every_response runs it.
    assert not Judge.objects.exists() and "Judge validation report" not in out

    response = client.post(reverse("login"), {"username": "demo-researcher", "password": accounts["demo-researcher"]})
    assert response.status_code == 302
    page = client.get(reverse("study_detail", args=[study.id])).content.decode()
    assert 'id="n-prompts">20<' in page
    results = client.get(reverse("results", args=[study.id])).content.decode()
    assert 'id="simulated-banner"' in results and 'id="result-empathy"' in results

    client.post(reverse("logout"))
    assert log_in(client, "demo-rater-1", accounts["demo-rater-1"])
    assert client.get(reverse("study_detail", args=[study.id])).status_code == 200
    assert 'id="response-b"' in client.get(reverse("compare", args=[study.id])).content.decode()  # a gold pair

    # A second run keeps the study and its prompts, and issues new passwords.
    call_command("demo", "--no-serve", "--quick")
    assert Study.objects.count() == 1 and study.prompts.count() == 20
    assert "Reusing the demo adapter" in capsys.readouterr().out
    assert not log_in(client, "demo-rater-1", accounts["demo-rater-1"])


def test_demo_preparation_runs_twice_in_a_row_as_make_demo_runs_it(tmp_path):  # its own database, not the test's
    """Bug 4: with its own settings (SQLite under var/, no broker) the demo both queued its run (started on a
    thread) and ran it itself: a `Retry in 1800s` traceback, then "Generation failed", then a run held for
    30 minutes. Now each job runs once, in the command's thread, and a second preparation reuses everything."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "evalapp.settings.base", "DATABASE_URL": "", "REDIS_URL": "",
           "EMPATHEVAL_VAR_DIR": str(tmp_path / "var"), "EMPATHEVAL_ADAPTER_DIR": "", "HF_HUB_OFFLINE": "1"}

    def prepare() -> str:
        for command in (["migrate", "--noinput", "-v0"], ["demo", "--no-serve", "--quick", "--simulate"]):
            result = subprocess.run([sys.executable, "manage.py", *command], cwd=django_settings.BASE_DIR, env=env,
                                    capture_output=True, text=True, timeout=1200)
            output = result.stdout + result.stderr
            assert result.returncode == 0, output[-4000:]
        return output

    first, second = prepare(), prepare()
    for output in (first, second):
        assert "Traceback" not in output and "Retry in" not in output, output[-4000:]
        assert "Demo ready" in output
    assert "Generating 40 missing responses" in first and "generate: 100%" in first  # the progress bar
    assert "Reusing the demo adapter" in second and "Reusing the demo's generated responses" in second
    assert "40 of 40 responses present" in first
    # Every page the researcher can reach from the study, on the demo's own database (SQLite): a query
    # PostgreSQL takes and SQLite refuses (the welfare summary's union of ordered parts) showed only here.
    crawl = subprocess.run([sys.executable, "manage.py", "shell", "-c", CRAWL], cwd=django_settings.BASE_DIR, env=env,
                           capture_output=True, text=True, timeout=600)
    assert crawl.returncode == 0, (crawl.stdout + crawl.stderr)[-4000:]
    assert "crawled" in crawl.stdout and "failed: []" in crawl.stdout, crawl.stdout[-4000:]


# Follows the study's own links (GET only: every change is a POST form) as its owner, and as a rater.
CRAWL = """
import re
from django.test import Client
from evalapp.models import Study
from raters.models import Role
study = Study.objects.order_by("id").first()
rater = study.memberships.filter(role=Role.RATER).first().user
failed, seen = [], set()
for user in (study.owner, rater):
    client = Client(SERVER_NAME="localhost", raise_request_exception=False)
    client.force_login(user)
    todo = [f"/studies/{study.id}/"]
    while todo and len(seen) < 400:
        url = todo.pop()
        if (user.id, url) in seen:
            continue
        seen.add((user.id, url))
        response = client.get(url)
        if response.status_code >= 500:
            failed.append((user.username, url, response.status_code))
        if response.get("Content-Type", "").startswith("text/html"):
            todo += re.findall(r'href="(/studies/%d/[^"#?]*)"' % study.id, response.content.decode())
print("crawled", len(seen), "failed:", failed)
"""


# Real commits, as above. One test for the four other presets so the demo adapter is trained once.
@pytest.mark.django_db(transaction=True)
def test_demo_runs_with_every_other_preset(client, capsys, settings, tmp_path):
    """`make demo PRESET=...`: the same demo end to end with each protocol's rubric, a study of its own."""
    from evalapp.rubric_presets import DEFAULT_PRESET, PRESETS

    settings.VAR_DIR = tmp_path
    for preset in [p for p in PRESETS if p != DEFAULT_PRESET]:
        call_command("demo", "--no-serve", "--quick", "--simulate", "--preset", preset)
        out = capsys.readouterr().out
        study = Study.objects.get(title__endswith=f"({PRESETS[preset]['name']})")
        keys = [c["key"] for c in PRESETS[preset]["criteria"]]
        assert [c["key"] for c in study.rubric()] == keys
        assert Response.objects.filter(prompt__study=study).count() == 40
        ratings = Rating.objects.filter(response__prompt__study=study, simulated=True)
        assert ratings.count() == 40 * 3 and all(r.scores.count() == len(keys) for r in ratings[:5])
        assert set(study.calibration_items.values_list("references", flat=True)[0]) == set(keys)
        accounts = dict(re.findall(r"^  (demo-[\w-]+)\s+(\S+)", out, re.M))
        assert log_in(client, "demo-researcher", accounts["demo-researcher"])
        page = client.get(reverse("results", args=[study.id])).content.decode()
        assert all(f'id="result-{key}"' in page for key in keys), preset
        client.logout()


# Real commits: the judge run is queued after commit, and run in the command's thread.
@pytest.mark.django_db(transaction=True)
def test_demo_judges_every_response_once_with_the_bundled_model(study, researcher, capsys):
    """The demo's judge step on a study of one response (the full demo's 40 take a minute): every response
    answered on every criterion and the unsafe question by the real bundled model, through the task; a second
    demo reuses the answers; templates changed since start the judge afresh."""
    arm = ArmFactory(study=study, label="baseline", base_model="bundled")
    ResponseFactory(prompt=PromptFactory(study=study), arm=arm, text="That sounds hard. What would help most?")
    rubric = {c["key"]: c for c in study.rubric()}
    demo = Demo()
    judge = demo._judge(study, researcher)
    assert (judge.name, judge.kind, judge.model, judge.safety) == (JUDGE_NAME, "local", "bundled", True)
    [run] = JudgeRun.objects.filter(judge=judge)
    assert run.status == "succeeded" and run.done == run.total == 1
    answers = JudgeAnswer.objects.filter(judge=judge)
    assert answers.count() == len(rubric) + 1
    for a in answers:
        low, high = (0, 1) if a.criterion == SAFETY_KEY else (rubric[a.criterion]["min"], rubric[a.criterion]["max"])
        assert a.method == "local-probabilities" and low <= a.value <= high and abs(sum(a.distribution) - 1) < 1e-6
        assert a.provenance["base_ref"] == "bundled" and a.provenance["judge_run"] == run.id
    captured = capsys.readouterr()
    assert "Judging 1 responses on 3 questions" in captured.out and "1 of 1 responses judged" in captured.out
    assert "judge: 100%" in captured.err  # the progress bar moved with the chunks

    assert demo._judge(study, researcher) == judge
    assert "Reusing the demo judge's answers" in capsys.readouterr().out
    assert JudgeRun.objects.filter(judge=judge).count() == 1

    Judge.objects.filter(id=judge.id).update(templates={"criterion": {"name": "older"}})
    again = demo._judge(study, researcher)
    assert again.id != judge.id and not Judge.objects.filter(id=judge.id).exists()
    assert JudgeAnswer.objects.filter(judge=again).count() == len(rubric) + 1
