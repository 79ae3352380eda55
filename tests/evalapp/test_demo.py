"""The demo's preparation runs in the test suite so `make demo` cannot rot."""

import re

import pytest
from django.core.management import call_command
from django.urls import reverse

from evalapp.models import Study

pytestmark = pytest.mark.django_db


def test_demo_prepares_study_and_working_accounts(client, capsys):
    call_command("demo", "--no-serve")
    out = capsys.readouterr().out
    accounts = dict(re.findall(r"^  (demo-[\w-]+)\s+(\S+)", out, re.M))
    assert set(accounts) == {"demo-researcher", "demo-rater-1", "demo-rater-2", "demo-rater-3", "demo-adjudicator"}

    study = Study.objects.get()
    assert study.prompts.count() == 20
    assert set(study.prompts.values_list("split", flat=True)) == {"test"}

    response = client.post(reverse("login"), {"username": "demo-researcher", "password": accounts["demo-researcher"]})
    assert response.status_code == 302
    page = client.get(reverse("study_detail", args=[study.id])).content.decode()
    assert 'id="n-prompts">20<' in page

    client.post(reverse("logout"))
    assert client.login(username="demo-rater-1", password=accounts["demo-rater-1"])
    assert client.get(reverse("study_detail", args=[study.id])).status_code == 200

    # A second run keeps the study and its prompts, and issues new passwords.
    call_command("demo", "--no-serve")
    assert Study.objects.count() == 1 and study.prompts.count() == 20
    assert not client.login(username="demo-rater-1", password=accounts["demo-rater-1"])
