"""Personas, after Healthchecks' alice/bob/charlie: an owner, members, an outsider."""

import pytest

from raters.models import Role

from .factories import MembershipFactory, StudyFactory, UserFactory


@pytest.fixture
def researcher(db):
    return UserFactory(username="alice-researcher")


@pytest.fixture
def study(researcher):
    return StudyFactory(owner=researcher, title="Alice's study")


@pytest.fixture
def rater(study):
    return MembershipFactory(study=study, user=UserFactory(username="bob-rater"), role=Role.RATER).user


@pytest.fixture
def adjudicator(study):
    return MembershipFactory(study=study, user=UserFactory(username="dana-adjudicator"), role=Role.ADJUDICATOR).user


@pytest.fixture
def outsider(db):
    """Charlie: a researcher with a study of his own, but no role in Alice's."""
    charlie = UserFactory(username="charlie-outsider")
    StudyFactory(owner=charlie, title="Charlie's study")
    return charlie


@pytest.fixture
def personas(researcher, rater, adjudicator, outsider):
    return {"researcher": researcher, "rater": rater, "adjudicator": adjudicator, "outsider": outsider}
