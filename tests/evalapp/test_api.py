"""The REST API: the same access rules as the pages, strict filters, token auth, a valid schema."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from evalapp.models import Prompt
from modelserver.models import GenerationRun
from raters import services as rater_services
from raters.models import Role

from ..factories import ArmFactory, MembershipFactory, PromptFactory, ResponseFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    return APIClient()


def study_urls(study, run):
    return [
        ("api_study", {}), ("api_prompts", {}), ("api_arms", {}), ("api_generation_runs", {}),
        ("api_generation_run", {"run_id": run.id}), ("api_adjudications", {}), ("api_results", {}),
        ("api_export", {"name": "ratings"}),
    ]


# Who may read each study endpoint: researcher (owner) everything; adjudicator the study and adjudications;
# rater only the study itself; outsider nothing (404, never 403).
ALLOWED = {
    "researcher": {"api_study", "api_prompts", "api_arms", "api_generation_runs", "api_generation_run", "api_adjudications",
                   "api_results", "api_export"},
    "adjudicator": {"api_study", "api_adjudications"},
    "rater": {"api_study"},
    "outsider": set(),
}


@pytest.mark.parametrize("persona", ["researcher", "adjudicator", "rater", "outsider"])
def test_access_matrix(api, personas, study, persona):
    run = GenerationRun.objects.create(study=study, created_by=personas["researcher"], total=0, status="succeeded")
    api.force_authenticate(personas[persona])
    for name, extra in study_urls(study, run):
        status = api.get(reverse(name, kwargs={"study_id": study.id, **extra})).status_code
        expected = 200 if name in ALLOWED[persona] else 404
        assert status == expected, (persona, name, status)
    posts = [("api_generation_runs", {}), ("api_prompts_import", {})]
    if persona != "researcher":
        for name, data in posts:
            assert api.post(reverse(name, kwargs={"study_id": study.id}), data).status_code == 404


def test_a_hidden_study_is_404_whatever_the_method_or_body(api, personas, study):
    """The study is looked up before the body is validated and before the method is checked: a
    non-member's malformed PUT or a POST to a read-only endpoint was a 400 or a 405, not a 404."""
    api.force_authenticate(personas["outsider"])
    rubric = reverse("api_study_rubric", kwargs={"study_id": study.id})
    assert api.put(rubric, {}, format="json").status_code == 404
    runs = reverse("api_generation_runs", kwargs={"study_id": study.id})
    assert api.post(runs, {"seed": "x"}, format="json").status_code == 404
    for name in ("api_study", "api_prompts", "api_results"):
        assert api.post(reverse(name, kwargs={"study_id": study.id}), {}).status_code == 404, name
    api.force_authenticate(personas["researcher"])
    assert api.put(rubric, {}, format="json").status_code == 400
    assert api.post(reverse("api_prompts", kwargs={"study_id": study.id}), {}).status_code == 405


def test_anonymous_is_refused(api, study):
    assert api.get(reverse("api_studies")).status_code in (401, 403)
    assert api.get(reverse("api_study", kwargs={"study_id": study.id})).status_code in (401, 403)


def test_token_auth_and_study_list(api, researcher, study, outsider):
    token = Token.objects.create(user=researcher)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    body = api.get(reverse("api_studies")).json()
    assert [s["title"] for s in body["results"]] == ["Alice's study"] and body["count"] == 1


def test_filters_take_only_declared_fields(api, researcher, study):
    PromptFactory(study=study, topic="anxiety")
    PromptFactory(study=study, topic="grief")
    api.force_authenticate(researcher)
    url = reverse("api_prompts", kwargs={"study_id": study.id})
    assert [p["topic"] for p in api.get(url, {"topic": "grief"}).json()["results"]] == ["grief"]
    leak = api.get(url, {"study__owner__password__startswith": "pbkdf2"})
    assert leak.status_code == 400 and "Unknown query parameter" in leak.json()["detail"]
    assert api.get(reverse("api_studies"), {"owner__password": "x"}).status_code == 400


def test_lists_are_paginated(api, researcher, study):
    PromptFactory.create_batch(7, study=study)
    api.force_authenticate(researcher)
    body = api.get(reverse("api_prompts", kwargs={"study_id": study.id}), {"page_size": 3}).json()
    assert body["count"] == 7 and len(body["results"]) == 3 and body["next"]


def test_import_through_the_api_is_all_or_nothing(api, researcher, study):
    api.force_authenticate(researcher)
    url = reverse("api_prompts_import", kwargs={"study_id": study.id})
    bad = api.post(url, {"file": SimpleUploadedFile("p.csv", b"id,text\nq1,\nq2,ok\n")}, format="multipart")
    assert bad.status_code == 400 and bad.json()["errors"] == [{"row": 2, "field": "text", "reason": "is empty or whitespace only"}]
    assert not Prompt.objects.exists()
    good = api.post(url, {"file": SimpleUploadedFile("p.csv", b"id,text\nq1,hi\n")}, format="multipart")
    assert good.status_code == 201 and good.json()["created"] == 1
    again = api.post(url, {"file": SimpleUploadedFile("p.csv", b"id,text\nq1,hi\n")}, format="multipart")
    assert again.status_code == 200 and again.json()["unchanged"] == 1


def test_generation_start_refuses_without_prompts(api, researcher, study):
    ArmFactory(study=study)
    api.force_authenticate(researcher)
    response = api.post(reverse("api_generation_runs", kwargs={"study_id": study.id}), {"seed": 1})
    assert response.status_code == 409 and "no prompts" in response.json()["detail"]


def test_rater_next_item_and_submit_are_blind_and_idempotent(api, study):
    arm = ArmFactory(study=study, label="fine-tuned", adapter="adapters/x")
    for prompt in PromptFactory.create_batch(2, study=study):
        ResponseFactory(prompt=prompt, arm=arm)
    study.ratings_per_response = 1
    study.save()
    rater = MembershipFactory(study=study, user=UserFactory(), role=Role.RATER).user
    rater_services.study_open_for_rating(study=study)
    api.force_authenticate(rater)
    item = api.get(reverse("api_rating_next", kwargs={"study_id": study.id}))
    text = json.dumps(item.json())
    assert item.status_code == 200 and "fine-tuned" not in text and arm.blind_code not in text and "adapter" not in text
    url = reverse("api_rating_submit", kwargs={"study_id": study.id, "public_id": item.json()["public_id"]})
    bad = api.post(url, {"answers": {"empathy": 11, "fluency": 5}}, format="json")
    assert bad.status_code == 400 and "1 to 10" in bad.json()["detail"]
    assert api.post(url, {"answers": {"empathy": 6, "fluency": 5}}, format="json").status_code == 201
    assert api.post(url, {"answers": {"empathy": 6, "fluency": 5}}, format="json").json()["outcome"] == "unchanged"
    other = reverse("api_rating_submit", kwargs={"study_id": study.id, "public_id": "not-mine"})
    assert api.post(other, {"answers": {"empathy": 6, "fluency": 5}}, format="json").status_code == 404


def test_openapi_schema_validates(api, researcher):
    from openapi_spec_validator import validate

    api.force_authenticate(researcher)
    response = api.get(reverse("api_schema"), {"format": "json"})
    assert response.status_code == 200
    schema = json.loads(response.content)
    validate(schema)
    assert "/api/studies/{study_id}/prompts/import/" in schema["paths"]
    docs = api.get(reverse("api_docs"))
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


@pytest.mark.parametrize("params", [
    {"ordering": "-id"}, {"ordering": "study__owner__password"}, {"fields": "id,messages"}, {"search": "x"},
    {"topic__icontains": "a"}, {"id__in": "1,2"}, {"page": "1", "limit": "5"},
])
def test_ordering_fields_and_undeclared_filters_are_refused_on_every_view(api, researcher, study, params):
    run = GenerationRun.objects.create(study=study, created_by=researcher, total=0, status="succeeded")
    api.force_authenticate(researcher)
    for name, extra in [*study_urls(study, run), ("api_study_rubric", {}), ("api_studies", None), ("api_presets", None)]:
        url = reverse(name, kwargs=None if extra is None else {"study_id": study.id, **extra})
        response = api.get(url, params)
        assert response.status_code == 400, (name, params, response.status_code)
        assert "Unknown query parameter" in response.json()["detail"] and "Allowed: " in response.json()["detail"]
        unknown = sorted(set(params) - {"page"})
        assert ", ".join(unknown) in response.json()["detail"], name


def test_declared_filters_and_paging_still_work_and_bad_values_are_400(api, researcher, study):
    PromptFactory.create_batch(3, study=study, topic="grief")
    api.force_authenticate(researcher)
    url = reverse("api_prompts", kwargs={"study_id": study.id})
    assert api.get(url, {"topic": "grief", "page_size": 2, "page": 2, "format": "json"}).json()["count"] == 3
    assert api.get(reverse("api_studies"), {"status": "no-such-status"}).status_code == 400
    assert api.get(reverse("api_study", kwargs={"study_id": study.id}), {"format": "json"}).status_code == 200
    # Paging is a list's: a detail view refuses it like any other unknown parameter.
    assert api.get(reverse("api_study", kwargs={"study_id": study.id}), {"page": 1}).status_code == 400
