"""A study's design: frozen once it opens for rating; cloned (design without data) into a new draft."""

import pytest
from django.urls import reverse

from evalapp.models import Arm, Prompt, Study
from evalapp.services import study_import_prompts
from raters import services as rater_services
from raters.models import CalibrationItem, Role

from ..factories import ArmFactory, MembershipFactory, PromptFactory, ResponseFactory, UserFactory

pytestmark = pytest.mark.django_db

SETTINGS = {"title": "Renamed", "description": "", "ratings_per_response": 3, "calibration_max_mae": 2.0,
            "gold_rate": 0.1, "disagreement_rule": "range", "disagreement_threshold": 3, "disagreement_sd": 1.5,
            "score_policy": "adjudicated"}
CSV = b"id,text\nq1,I feel alone.\n"
ARM = {"label": "third", "base_model": "bundled", "adapter": "", "system_prompt": "", "max_new_tokens": 64,
       "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1}


@pytest.fixture
def designed(study, researcher):
    """A study with arms, a consent text, a calibration item, prompts, responses and a rater."""
    ArmFactory(study=study, label="fine-tuned", adapter="adapters/ft", generation_params={"temperature": 0.7})
    ArmFactory(study=study, label="baseline")
    rater_services.consent_publish(study=study, text="Your scores are research data.", withdrawal_policy="delete")
    CalibrationItem.objects.create(study=study, messages=[{"role": "user", "content": "Hi"}], response_text="Hello",
                                   references={"empathy": 7, "fluency": 8}, rationale="Warm.", created_by=researcher)
    study_import_prompts(study=study, data=CSV, filename="p.csv")
    for arm in study.arms.all():
        ResponseFactory(prompt=study.prompts.get(), arm=arm)
    study.ratings_per_response, study.disagreement_threshold = 1, 5
    study.save()
    return study


def opened(study):
    Study.objects.filter(id=study.id).update(status=Study.Status.RATING)
    study.refresh_from_db()
    return study


def test_settings_that_change_the_design_are_refused_once_open(client, researcher, designed):
    opened(designed)
    client.force_login(researcher)
    url = reverse("study_settings", args=[designed.id])
    response = client.post(url, {**SETTINGS, "ratings_per_response": 5, "disagreement_threshold": 5})
    assert response.status_code == 400 and "design is frozen" in response.content.decode()
    assert "Ratings per response" in response.content.decode()
    designed.refresh_from_db()
    assert designed.ratings_per_response == 1
    # Title and description are not design: they may still be corrected.
    assert client.post(url, {**SETTINGS, "ratings_per_response": 1, "disagreement_threshold": 5}).status_code == 302
    designed.refresh_from_db()
    assert designed.title == "Renamed"


def test_arms_and_new_prompts_are_refused_once_open_but_a_reimport_is_a_no_op(client, researcher, designed):
    opened(designed)
    client.force_login(researcher)
    client.post(reverse("arm_add", args=[designed.id]), ARM)
    assert not Arm.objects.filter(label="third").exists()
    page = client.get(reverse("study_detail", args=[designed.id])).content.decode()
    assert "design is frozen" in page
    same = study_import_prompts(study=designed, data=CSV, filename="p.csv")
    assert not same.errors and same.unchanged == 1
    more = study_import_prompts(study=designed, data=CSV + b"q2,Still alone.\n", filename="p.csv")
    assert "design is frozen" in more.errors[0].reason and Prompt.objects.filter(study=designed).count() == 1


def test_clone_copies_the_design_and_none_of_the_data(client, researcher, designed):
    rater_services.researcher_add(user=researcher)
    MembershipFactory(study=designed, user=UserFactory(username="r1"), role=Role.RATER)
    opened(designed)
    client.force_login(researcher)
    response = client.post(reverse("study_clone", args=[designed.id]))
    copy = Study.objects.exclude(id=designed.id).get(owner=researcher, title__endswith="(copy)")
    assert response["Location"] == reverse("study_detail", args=[copy.id])
    assert copy.status == Study.Status.DRAFT and copy.design_seed != designed.design_seed
    for name in Study.DESIGN_FIELDS:
        assert getattr(copy, name) == getattr(designed, name), name
    assert [(a.label, a.adapter, a.generation_params) for a in copy.arms.order_by("id")] == [
        ("fine-tuned", "adapters/ft", {"temperature": 0.7}), ("baseline", "", {})]
    assert set(copy.arms.values_list("blind_code", flat=True)).isdisjoint(designed.arms.values_list("blind_code", flat=True))
    consent = copy.consent_versions.get()
    assert (consent.text, consent.withdrawal_policy) == ("Your scores are research data.", "delete")
    assert copy.calibration_items.get().references == {"empathy": 7, "fluency": 8}
    assert not copy.prompts.exists() and not copy.memberships.exists()
    # The copy is a draft: its design can be changed.
    client.post(reverse("arm_add", args=[copy.id]), ARM)
    assert copy.arms.filter(label="third").exists()


@pytest.mark.parametrize("persona,status", [("researcher", 201), ("rater", 404), ("outsider", 404)])
def test_clone_through_the_api(client, personas, designed, persona, status):
    rater_services.researcher_add(user=personas["researcher"])
    rater_services.researcher_add(user=personas["outsider"])  # a researcher, but not of this study
    client.force_login(personas[persona])
    response = client.post(reverse("api_study_clone", args=[designed.id]), {"title": "Replication"},
                           content_type="application/json")
    assert response.status_code == status
    if status == 201:
        assert response.json()["title"] == "Replication" and response.json()["status"] == "draft"


def test_a_coresearcher_without_the_role_cannot_clone(client, designed):
    helper = UserFactory(username="helper")
    MembershipFactory(study=designed, user=helper, role=Role.RESEARCHER)
    client.force_login(helper)
    assert client.post(reverse("study_clone", args=[designed.id])).status_code == 403
    assert Study.objects.count() == 1
