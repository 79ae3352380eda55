"""Everything a rater can reach carries nothing about which model wrote a response."""

import re

import pytest
from django.contrib.staticfiles import finders
from django.urls import reverse

from raters import services
from raters.models import Assignment, CalibrationItem, GoldAnswer, Role

from ..factories import ArmFactory, MembershipFactory, PromptFactory, ResponseFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def blinded(study):
    arms = [
        ArmFactory(study=study, label="fine-tuned", base_model="bundled", adapter="adapters/counselchat-lora-r8"),
        ArmFactory(study=study, label="baseline", base_model="bundled"),
    ]
    for prompt in PromptFactory.create_batch(5, study=study):
        for arm in arms:
            ResponseFactory(prompt=prompt, arm=arm, provenance={"base_sha256": "ab" * 32, "adapter": "arm1"})
    study.ratings_per_response = 1
    study.gold_rate = 0.5
    study.save()
    CalibrationItem.objects.create(
        study=study, messages=[{"role": "user", "content": "Gold question"}], response_text="Gold answer",
        references={"empathy": 5, "fluency": 5}, rationale="r", created_by=study.owner, use_as_gold=True,
    )
    services.consent_publish(study=study, text="Please rate honestly.", withdrawal_policy="exclude")
    rater = MembershipFactory(study=study, user=UserFactory(username="blind-rater"), role=Role.RATER).user
    services.consent_accept(study=study, user=rater, version=study.consent_versions.first())
    services.calibration_decide(study=study, rater=rater, approve=True)
    services.study_open_for_rating(study=study)
    return study, arms, rater


def forbidden_terms(study, arms):
    terms = {"fine-tuned", "finetuned", "baseline", "adapter", "lora", "smollm", "bundled", "sha256", "provenance"}
    for arm in arms:
        terms |= {arm.label.lower(), arm.blind_code.lower(), arm.adapter.lower()} - {""}
    return terms


def test_every_byte_a_rater_reaches_is_blind(client, blinded):
    study, arms, rater = blinded
    client.force_login(rater)
    bodies = {}
    for name, args in [("study_list", []), ("study_detail", [study.id]), ("consent", [study.id]),
                       ("calibration", [study.id]), ("rate", [study.id])]:
        response = client.get(reverse(name, args=args), follow=True)
        assert response.status_code == 200, name
        bodies[name] = response.content.decode()
    for path in ["raters/rate.js", "raters/rate.css", "evalapp/poll.js"]:
        with open(finders.find(path), encoding="utf-8") as handle:
            bodies[path] = handle.read()
    # Submit every item through the no-reload path and keep each fragment it returns.
    for step in range(Assignment.objects.filter(rater=rater).count()):
        public_id = re.search(r'action="/studies/\d+/rate/([\w-]+)/"', bodies.get(f"fragment{step - 1}", bodies["rate"])).group(1)
        response = client.post(reverse("rate_submit", args=[study.id, public_id]), {"score-empathy": 5, "score-fluency": 5},
                               headers={"X-Requested-With": "fetch"})
        assert response.status_code == 200
        bodies[f"fragment{step}"] = response.content.decode()
    assert "All done" in bodies[f"fragment{step}"]
    assert GoldAnswer.objects.filter(assignment__rater=rater).count() == 1  # the gold item looked like any other

    terms = forbidden_terms(study, arms)
    response_pks = {str(pk) for pk in study.prompts.values_list("responses__id", flat=True)}
    for where, body in bodies.items():
        lowered = body.lower()
        for term in terms:
            assert term not in lowered, f"{term!r} leaks in {where}"
        assert not re.search(r"\barms?\b", lowered), f"the word 'arm' appears in {where}"
        # Items are addressed by opaque public ids, never by sequential database ids.
        for match in re.findall(r"/rate/([^/\"']+)/", body):
            assert match not in response_pks and not match.isdigit(), (where, match)
