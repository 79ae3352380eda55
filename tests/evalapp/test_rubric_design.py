"""A study's rubric through the page and the API: who may set it, presets, clear refusals, frozen once open."""

import json

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from evalapp.models import AuditEvent, Study
from evalapp.rubric_presets import PRESETS
from raters import services as rater_services
from raters.models import CalibrationItem

from ..factories import ResponseFactory

pytestmark = pytest.mark.django_db

CHOICE = {"key": "advice", "question": "Gives medical advice?", "kind": "choice",
          "options": [{"key": "yes", "label": "Yes"}, {"key": "no", "label": "No"}], "not_sure": "Not sure"}


def api_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.parametrize("persona,status", [("researcher", 200), ("rater", 404), ("adjudicator", 404),
                                            ("outsider", 404)])
def test_rubric_api_by_persona(personas, study, persona, status):
    api = api_for(personas[persona])
    url = reverse("api_study_rubric", args=[study.id])
    assert api.get(url).status_code == status
    response = api.put(url, {"criteria": [CHOICE]}, format="json")
    assert response.status_code == status
    keys = [c["key"] for c in Study.objects.get(id=study.id).rubric()]
    assert keys == (["advice"] if persona == "researcher" else ["empathy", "fluency"])


def test_rubric_api_refuses_a_bad_rubric_and_keeps_the_old_one(study, researcher):
    api = api_for(researcher)
    url = reverse("api_study_rubric", args=[study.id])
    bad = api.put(url, {"criteria": [{**CHOICE, "options": [{"key": "only"}]}]}, format="json")
    assert bad.status_code == 400 and "2 to 8 options" in bad.json()["detail"]
    assert [c["key"] for c in api.get(url).json()["criteria"]] == ["empathy", "fluency"]


def test_rubric_is_frozen_once_open_on_the_api_and_the_page(client, study, researcher):
    Study.objects.filter(id=study.id).update(status=Study.Status.RATING)
    response = api_for(researcher).put(reverse("api_study_rubric", args=[study.id]), {"criteria": [CHOICE]},
                                       format="json")
    assert response.status_code == 409 and "frozen" in response.json()["detail"]
    client.force_login(researcher)
    page = client.post(reverse("study_rubric", args=[study.id]), {"criteria": json.dumps([CHOICE])}, follow=True)
    assert "frozen" in page.content.decode()
    assert [c["key"] for c in Study.objects.get(id=study.id).rubric()] == ["empathy", "fluency"]


def test_page_edits_the_rubric_as_json_or_from_a_preset(client, study, researcher, personas):
    client.force_login(researcher)
    url = reverse("study_rubric", args=[study.id])
    broken = client.post(url, {"criteria": "[{"})
    assert broken.status_code == 400 and "not valid JSON" in broken.content.decode()
    client.post(url, {"criteria": json.dumps([CHOICE, {"key": "warmth", "question": "Warmth", "kind": "likert",
                                                       "min": 0, "max": 2, "level": "ordinal"}])})
    assert [c["key"] for c in Study.objects.get(id=study.id).rubric()] == ["advice", "warmth"]
    assert "A rubric of the researcher" not in client.get(reverse("study_detail", args=[study.id])).content.decode()
    assert Study.objects.get(id=study.id).rubric_source()["edited"]  # started from the default preset
    client.post(url, {"preset": "mentalchat16k", "criteria": ""})
    assert len(Study.objects.get(id=study.id).rubric()) == 7
    source = Study.objects.get(id=study.id).rubric_source()
    assert source["name"] == "MentalChat16K" and not source["edited"]
    assert AuditEvent.objects.filter(study=study, action="study.rubric").count() == 2
    page = client.get(reverse("study_detail", args=[study.id])).content.decode()
    assert "Active listening" in page and PRESETS["epitome"]["citation"] in page
    assert 'id="rubric-source">The <strong>MentalChat16K</strong>' in page
    for persona in ("rater", "adjudicator", "outsider"):
        client.force_login(personas[persona])
        assert client.post(url, {"preset": "epitome"}).status_code in (403, 404)
    assert len(Study.objects.get(id=study.id).rubric()) == 7


def test_create_from_a_preset_and_with_consent_on_the_api(researcher):
    rater_services.researcher_add(user=researcher)
    api = api_for(researcher)
    made = api.post(reverse("api_studies"), {"title": "EPITOME replication", "preset": "epitome",
                                             "consent_text": "Your answers are research data.",
                                             "withdrawal_policy": "exclude"}, format="json")
    assert made.status_code == 201, made.json()
    body = made.json()
    assert [c["key"] for c in body["rubric"]] == ["emotional_reactions", "interpretations", "explorations"]
    study = Study.objects.get(id=body["id"])
    assert study.disagreement_threshold == 2 and study.calibration_max_mae == 0.5  # the preset's
    assert study.consent_versions.get().withdrawal_policy == "exclude"
    custom = api.post(reverse("api_studies"), {"title": "Own", "rubric": [CHOICE]}, format="json")
    assert custom.status_code == 201 and custom.json()["rubric"][0]["options"][1]["key"] == "no"
    assert custom.json()["rubric_preset"] == "" and body["rubric_preset"] == "epitome"
    bad = api.post(reverse("api_studies"), {"title": "Bad", "rubric": [{"key": "x"}]}, format="json")
    assert bad.status_code == 400 and "question" in bad.json()["detail"]
    no_policy = api.post(reverse("api_studies"), {"title": "C", "consent_text": "Hi"}, format="json")
    assert no_policy.status_code == 400 and "withdraw" in no_policy.json()["detail"]
    assert not Study.objects.filter(title__in=["Bad", "C"]).exists()
    presets = api.get(reverse("api_presets")).json()
    assert set(presets) == set(PRESETS) and presets["counselbench"]["citation"]


def test_clone_copies_the_rubric(client, study, researcher):
    rater_services.researcher_add(user=researcher)
    api_for(researcher).put(reverse("api_study_rubric", args=[study.id]), {"criteria": [CHOICE]}, format="json")
    copy = api_for(researcher).post(reverse("api_study_clone", args=[study.id]), {}, format="json").json()
    assert copy["rubric"] == Study.objects.get(id=study.id).rubric()


def test_a_rubric_change_drops_references_that_no_longer_fit_and_opening_says_so(study, researcher):
    CalibrationItem.objects.create(study=study, messages=[{"role": "user", "content": "Hi"}], response_text="Hello",
                                   references={"empathy": 7, "fluency": 8}, rationale="Warm.", created_by=researcher)
    done = api_for(researcher).put(reverse("api_study_rubric", args=[study.id]),
                                   {"criteria": [{**PRESETS["empatheval"]["criteria"][0], "max": 5, "labels": {}}]},
                                   format="json")
    assert done.status_code == 200, done.json()
    assert CalibrationItem.objects.get().references == {}  # 7 is outside the new 1-5, fluency is gone
    ResponseFactory(prompt__study=study)
    with pytest.raises(rater_services.RatingError, match="lack a reference answer"):
        rater_services.study_open_for_rating(study=study)
    assert Study.objects.get(id=study.id).status == Study.Status.DRAFT


def test_a_stale_calibration_item_can_be_removed_until_answered(client, study, researcher, rater):
    item = CalibrationItem.objects.create(study=study, messages=[{"role": "user", "content": "Hi"}],
                                          response_text="Hello", references={}, rationale="r", created_by=researcher)
    client.force_login(rater)
    assert client.post(reverse("calibration_item_remove", args=[study.id, item.public_id])).status_code in (403, 404)
    client.force_login(researcher)
    client.post(reverse("calibration_item_remove", args=[study.id, item.public_id]))
    assert not CalibrationItem.objects.exists()


def test_removing_the_last_unanswered_item_scores_a_waiting_attempt(study, researcher, rater):
    first, second = (CalibrationItem.objects.create(study=study, messages=[{"role": "user", "content": "Hi"}],
                                                    response_text=f"Hello {i}", references={"empathy": 7, "fluency": 8},
                                                    rationale="r", created_by=researcher) for i in range(2))
    attempt = rater_services.calibration_attempt_start(study=study, rater=rater)
    rater_services.calibration_answer(attempt=attempt, item=first, answers={"empathy": 7, "fluency": 8})
    rater_services.calibration_item_remove(study=study, item=second)
    attempt.refresh_from_db()
    assert attempt.finished_at and attempt.passed  # not left waiting on an item that is gone
    with pytest.raises(rater_services.RatingError, match="already answered"):
        rater_services.calibration_item_remove(study=study, item=first)


def test_quality_flags_mean_the_same_on_a_narrow_scale(researcher):
    from raters.models import Assignment, GoldAnswer, Role
    from raters.quality import study_rater_quality

    from ..factories import MembershipFactory, StudyFactory

    study = StudyFactory(owner=researcher, rubric__preset="epitome")
    rater = MembershipFactory(study=study, role=Role.RATER).user
    gold = CalibrationItem.objects.create(study=study, messages=[{"role": "user", "content": "Hi"}], response_text="x",
                                          references={"emotional_reactions": 2, "interpretations": 2,
                                                      "explorations": 2}, rationale="r", created_by=researcher)
    slot = Assignment.objects.create(study=study, rater=rater, position=0, gold_item=gold, design_seed=1)
    GoldAnswer.objects.create(assignment=slot, values={"emotional_reactions": 0, "interpretations": 0,
                                                       "explorations": 0})
    [quality] = study_rater_quality(study=study)
    assert quality.gold_mae == 1.0 and "misses gold items" in quality.flags  # the far end of a 0-2 scale
