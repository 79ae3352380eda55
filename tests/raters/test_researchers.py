"""The researcher role: granted by an administrator (command or staff page), needed to create a study."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse

from evalapp.models import AuditEvent, Study
from raters import services

from ..factories import UserFactory

pytestmark = pytest.mark.django_db

NEW_STUDY = {"title": "Replication", "description": "Our own", "ratings_per_response": 3,
             "disagreement_rule": "range", "disagreement_threshold": 4, "disagreement_sd": 2.0,
             "score_policy": "adjudicated"}


def test_create_researcher_creates_the_account_once_and_grants_the_role(capsys):
    call_command("create_researcher", "Ada@Lab.example")
    out = capsys.readouterr().out
    user = get_user_model().objects.get(email="ada@lab.example")
    password = out.split("one-time password ")[1].split()[0]
    assert user.check_password(password) and services.is_researcher(user)
    call_command("create_researcher", "ada@lab.example")  # again: the same account, no new password
    assert "one-time password" not in capsys.readouterr().out
    assert get_user_model().objects.filter(email="ada@lab.example").count() == 1


def test_create_researcher_refuses_a_bad_address():
    with pytest.raises(CommandError, match="not an e-mail address"):
        call_command("create_researcher", "ada@lab..example")
    assert not get_user_model().objects.exists()


def test_an_existing_account_becomes_a_researcher_and_can_lose_the_role():
    user = UserFactory(email="bo@lab.example")
    assert not services.is_researcher(user)
    granted, password = services.researcher_grant(email="bo@lab.example")
    assert granted == user and password is None
    user = get_user_model().objects.get(id=user.id)  # permissions are cached per instance
    assert services.is_researcher(user)
    services.researcher_revoke(user=user)
    assert not services.is_researcher(get_user_model().objects.get(id=user.id))


@pytest.mark.parametrize("persona,status", [("researcher", 302), ("rater", 403), ("adjudicator", 403), ("outsider", 403)])
def test_only_a_researcher_creates_a_study_on_the_page(client, personas, persona, status):
    services.researcher_add(user=personas["researcher"])
    client.force_login(personas[persona])
    listing = client.get(reverse("study_list")).content.decode()
    assert ("New study" in listing) == (persona == "researcher")
    assert client.get(reverse("study_new")).status_code == (200 if persona == "researcher" else 403)
    before = Study.objects.count()
    response = client.post(reverse("study_new"), NEW_STUDY)
    assert response.status_code == status
    if persona == "researcher":
        study = Study.objects.get(title="Replication")
        assert response["Location"] == reverse("study_detail", args=[study.id])
        assert study.owner == personas["researcher"] and study.ratings_per_response == 3
        assert study.score_policy == "adjudicated"
    else:
        assert Study.objects.count() == before


def test_a_bad_new_study_is_refused_with_the_field_named(client, researcher):
    services.researcher_add(user=researcher)
    client.force_login(researcher)
    response = client.post(reverse("study_new"), {**NEW_STUDY, "title": "", "ratings_per_response": 0})
    assert response.status_code == 200 and not Study.objects.filter(description="Our own").exists()
    assert "This field is required" in response.content.decode()
    assert "greater than or equal to 1" in response.content.decode()


@pytest.mark.parametrize("persona,status", [("researcher", 201), ("rater", 403), ("outsider", 403)])
def test_only_a_researcher_creates_a_study_through_the_api(client, personas, persona, status):
    services.researcher_add(user=personas["researcher"])
    client.force_login(personas[persona])
    response = client.post(reverse("api_studies"), NEW_STUDY, content_type="application/json")
    assert response.status_code == status, response.content
    if status == 201:
        assert response.json()["title"] == "Replication" and response.json()["owner"] == "alice-researcher"
        bad = client.post(reverse("api_studies"), {**NEW_STUDY, "ratings_per_response": 0},
                          content_type="application/json")
        assert bad.status_code == 400 and "ratings_per_response" in bad.json()


def test_anonymous_users_are_sent_to_log_in(client):
    assert client.get(reverse("study_new")).status_code == 302
    assert client.post(reverse("api_studies"), NEW_STUDY, content_type="application/json").status_code in (401, 403)


def test_only_staff_grant_the_role_on_the_staff_page(client, researcher, rater):
    client.force_login(rater)
    assert client.get(reverse("staff_researchers")).status_code == 403
    assert client.post(reverse("staff_researchers"), {"email": "cy@lab.example"}).status_code == 403
    staff = UserFactory(username="sam-staff", is_staff=True)
    client.force_login(staff)
    page = client.post(reverse("staff_researchers"), {"email": "cy@lab.example"}).content.decode()
    assert 'id="one-time-password"' in page and "cy@lab.example" in page
    assert services.is_researcher(get_user_model().objects.get(email="cy@lab.example"))
    again = client.get(reverse("staff_researchers")).content.decode()
    assert 'id="one-time-password"' not in again and "cy@lab.example" in again


def test_the_owner_adds_and_removes_a_coresearcher_who_then_sees_the_study(client, researcher, study, outsider):
    outsider.email = "charlie@lab.example"
    outsider.save()
    client.force_login(outsider)
    assert client.get(reverse("study_detail", args=[study.id])).status_code == 404
    client.force_login(researcher)
    client.post(reverse("study_researcher_change", args=[study.id]), {"action": "add", "email": "Charlie@Lab.example"})
    client.force_login(outsider)
    assert client.get(reverse("study_detail", args=[study.id])).status_code == 200
    assert client.get(reverse("raters_page", args=[study.id])).status_code == 200
    # A co-researcher manages the study but does not choose who else runs it.
    refused = client.post(reverse("study_researcher_change", args=[study.id]),
                          {"action": "remove", "user": outsider.id})
    assert refused.status_code == 403
    client.force_login(researcher)
    page = client.get(reverse("study_researchers", args=[study.id])).content.decode()
    assert "charlie-outsider" in page and "Remove" in page
    client.post(reverse("study_researcher_change", args=[study.id]), {"action": "remove", "user": outsider.id})
    client.force_login(outsider)
    assert client.get(reverse("study_detail", args=[study.id])).status_code == 404
    events = list(AuditEvent.objects.filter(study=study).order_by("id").values_list("action", "actor_id"))
    assert events == [("researcher.add", researcher.id), ("researcher.remove", researcher.id)]


def test_adding_an_unknown_address_or_the_owner_is_refused_clearly(researcher, study):
    with pytest.raises(services.RatingError, match="No account has the address"):
        services.coresearcher_add(study=study, actor=researcher, email="nobody@lab.example")
    researcher.email = "alice@lab.example"
    researcher.save()
    with pytest.raises(services.RatingError, match="owner is a researcher"):
        services.coresearcher_add(study=study, actor=researcher, email="alice@lab.example")
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize("persona", ["rater", "adjudicator", "outsider"])
def test_people_who_do_not_run_the_study_cannot_see_or_change_its_researchers(client, personas, study, persona):
    client.force_login(personas[persona])
    assert client.get(reverse("study_researchers", args=[study.id])).status_code == 404
    response = client.post(reverse("study_researcher_change", args=[study.id]), {"action": "add", "email": "x@y.org"})
    assert response.status_code == 404


def test_a_malformed_removal_is_a_clear_error_not_a_crash(client, researcher, study):
    client.force_login(researcher)
    response = client.post(reverse("study_researcher_change", args=[study.id]), {"action": "remove", "user": "x"},
                           follow=True)
    assert response.status_code == 200 and "Choose the co-researcher to remove." in response.content.decode()
