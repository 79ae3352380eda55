"""Owner, member, outsider and anonymous views of every page."""

import pytest
from django.urls import reverse

from evalapp.models import Prompt

from ..factories import ArmFactory, PromptFactory

pytestmark = pytest.mark.django_db


def test_anonymous_is_sent_to_login(client, study):
    for url in [reverse("study_list"), reverse("study_detail", args=[study.id])]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    response = client.post(reverse("study_import", args=[study.id]))
    assert response.status_code == 302


def test_login_and_logout(client, researcher):
    response = client.post(reverse("login"), {"username": researcher.username, "password": "pw-for-tests"})
    assert response.status_code == 302 and response["Location"] == reverse("study_list")
    assert client.get(reverse("study_list")).status_code == 200
    client.post(reverse("logout"))
    assert client.get(reverse("study_list")).status_code == 302


def test_wrong_password_is_refused(client, researcher):
    response = client.post(reverse("login"), {"username": researcher.username, "password": "nope"})
    assert response.status_code == 200 and b"didn't match" in response.content


def test_study_list_shows_only_own_and_member_studies(client, personas, study):
    for name in ["researcher", "rater", "adjudicator"]:
        client.force_login(personas[name])
        content = client.get(reverse("study_list")).content.decode()
        assert "Alice&#x27;s study" in content and "Charlie&#x27;s study" not in content
    client.force_login(personas["outsider"])
    content = client.get(reverse("study_list")).content.decode()
    assert "Alice&#x27;s study" not in content and "Charlie&#x27;s study" in content


def test_researcher_sees_prompts_arms_and_counts(client, researcher, study, django_assert_max_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    PromptFactory.create_batch(3, study=study)
    ArmFactory(study=study, label="fine-tuned", adapter="adapters/demo")
    client.force_login(researcher)
    with CaptureQueriesContext(connection) as small:
        client.get(reverse("study_detail", args=[study.id]))
    PromptFactory.create_batch(30, study=study)
    ArmFactory(study=study, label="baseline")
    with django_assert_max_num_queries(len(small)):  # no query per prompt or arm
        client.get(reverse("study_detail", args=[study.id]))
    Prompt.objects.filter(id__in=list(study.prompts.order_by("id").values_list("id", flat=True)[3:])).delete()
    response = client.get(reverse("study_detail", args=[study.id]))
    content = response.content.decode()
    assert response.status_code == 200
    assert 'id="n-prompts">3<' in content
    assert "fine-tuned" in content and "adapters/demo" in content
    assert 'action="%s"' % reverse("study_import", args=[study.id]) in content


@pytest.mark.parametrize("persona", ["rater", "adjudicator"])
def test_members_see_the_study_but_not_arms_or_import(client, personas, study, persona):
    ArmFactory(study=study, label="fine-tuned", adapter="adapters/secret-name")
    client.force_login(personas[persona])
    response = client.get(reverse("study_detail", args=[study.id]))
    content = response.content.decode()
    assert response.status_code == 200
    assert "fine-tuned" not in content and "secret-name" not in content and "Import prompts" not in content


@pytest.mark.parametrize("persona", ["rater", "adjudicator", "outsider"])
def test_only_researchers_may_import(client, personas, study, persona):
    client.force_login(personas[persona])
    upload = _upload("id,text\nq1,Hi there\n")
    response = client.post(reverse("study_import", args=[study.id]), {"file": upload})
    assert response.status_code == 404
    assert not study.prompts.exists()


def test_outsider_gets_404_not_403(client, outsider, study):
    client.force_login(outsider)
    assert client.get(reverse("study_detail", args=[study.id])).status_code == 404
    assert client.get(reverse("study_detail", args=[987654])).status_code == 404


def test_upload_form_imports_and_reports(client, researcher, study):
    client.force_login(researcher)
    url = reverse("study_import", args=[study.id])
    response = client.post(url, {"file": _upload("id,text\nq1,Hi there\nq2,\nq1,again\n")})
    content = response.content.decode()
    assert response.status_code == 400
    assert "Nothing imported: 2 problem(s) found." in content
    assert "is empty or whitespace only" in content and "is also used in row 2" in content
    assert not study.prompts.exists()

    response = client.post(url, {"file": _upload("id,text\nq1,Hi there\nq2,Hello\n"), "seed": 0}, follow=True)
    assert response.status_code == 200
    assert "Imported 2 new prompt(s)" in response.content.decode()
    assert study.prompts.count() == 2


def test_upload_warnings_are_shown(client, researcher, study):
    client.force_login(researcher)
    response = client.post(
        reverse("study_import", args=[study.id]), {"file": _upload("id,text\nq1,<b>Hi</b> call 0123456789\n")}
    )
    content = response.content.decode()
    assert response.status_code == 200
    assert "HTML tags removed" in content and "phone number" in content


def _upload(text, name="prompts.csv"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, text.encode("utf-8"), content_type="text/csv")


def test_researcher_changes_study_settings_and_bad_values_are_refused(client, researcher, study):
    client.force_login(researcher)
    url = reverse("study_settings", args=[study.id])
    data = {"title": "Renamed", "description": "", "ratings_per_response": 5, "calibration_max_mae": 1.5,
            "gold_rate": 0.2, "disagreement_rule": "sd", "disagreement_threshold": 4, "disagreement_sd": 2.0,
            "safety_two_adjudicators": "on", "score_policy": "both"}
    assert client.post(url, data).status_code == 302
    study.refresh_from_db()
    assert (study.title, study.ratings_per_response, study.score_policy, study.safety_two_adjudicators) == (
        "Renamed", 5, "both", True)
    bad = client.post(url, {**data, "gold_rate": 3, "ratings_per_response": 0})
    assert bad.status_code == 400
    study.refresh_from_db()
    assert study.gold_rate == 0.2


@pytest.mark.parametrize("persona", ["rater", "adjudicator", "outsider"])
def test_only_researchers_change_settings(client, personas, study, persona):
    client.force_login(personas[persona])
    assert client.post(reverse("study_settings", args=[study.id]), {"title": "x"}).status_code == 404


def test_import_help_names_the_transcript_tags_as_text(client, researcher, study):
    # Form help text is not escaped by Django: tags written raw vanished from the page as unknown HTML.
    client.force_login(researcher)
    content = client.get(reverse("study_detail", args=[study.id])).content.decode()
    assert "&lt;USER&gt;/&lt;AI&gt; transcripts" in content and "<USER>" not in content
