"""The study most rater tests share: six prompts, two arms, two ratings per response, a consent text."""

from datetime import timedelta

import pytest
from django.utils import timezone

from raters import services
from raters.models import Role

from ..factories import ArmFactory, MembershipFactory, PromptFactory, ResponseFactory, UserFactory


@pytest.fixture
def rating_study(study, researcher):
    arms = [ArmFactory(study=study, label="fine-tuned", adapter="adapters/secret-ft"), ArmFactory(study=study, label="baseline")]
    for prompt in PromptFactory.create_batch(6, study=study):
        for arm in arms:
            ResponseFactory(prompt=prompt, arm=arm, text=f"Reply from {arm.label} to {prompt.external_id}")
    study.ratings_per_response = 2
    study.gold_rate = 0
    study.save()
    services.consent_publish(study=study, text="Your scores are research data.", withdrawal_policy="exclude")
    return study


@pytest.fixture
def open_study(rating_study):
    """rating_study open for rating (test_welfare.py's own open_study also adds raters)."""
    services.study_open_for_rating(study=rating_study)
    return rating_study


def add_rater(study, name):
    """A rater joins the way a real one does: a membership, then consent to the current text."""
    user = MembershipFactory(study=study, user=UserFactory(username=name), role=Role.RATER).user
    services.consent_accept(study=study, user=user, version=study.consent_versions.first())
    return user


class Clock:
    """django.utils.timezone.now, standing still until a test moves it: the server's observed time on an
    item (raters.timing) is then exactly what the test says."""

    def __init__(self, start):
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch):
    # Patched on the module: every `timezone.now()` call (auto_now fields, completed_at, raters.timing) reads it.
    # An hour ahead: a field with default=timezone.now kept the real clock, which must stay behind this one.
    ticking = Clock(timezone.now() + timedelta(hours=1))
    monkeypatch.setattr(timezone, "now", ticking)
    return ticking
