"""The demo's preparation runs in the test suite so `make demo` cannot rot."""

import re

import pytest
from django.core.management import call_command
from django.urls import reverse

from evalapp.models import Rating, Response, Study
from modelserver.models import Adapter
from raters.models import Assignment

pytestmark = pytest.mark.django_db


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

    response = client.post(reverse("login"), {"username": "demo-researcher", "password": accounts["demo-researcher"]})
    assert response.status_code == 302
    page = client.get(reverse("study_detail", args=[study.id])).content.decode()
    assert 'id="n-prompts">20<' in page
    results = client.get(reverse("results", args=[study.id])).content.decode()
    assert 'id="simulated-banner"' in results and 'id="result-empathy"' in results

    client.post(reverse("logout"))
    assert client.login(username="demo-rater-1", password=accounts["demo-rater-1"])
    assert client.get(reverse("study_detail", args=[study.id])).status_code == 200

    # A second run keeps the study and its prompts, and issues new passwords.
    call_command("demo", "--no-serve", "--quick")
    assert Study.objects.count() == 1 and study.prompts.count() == 20
    assert "Reusing the demo adapter" in capsys.readouterr().out
    assert not client.login(username="demo-rater-1", password=accounts["demo-rater-1"])
