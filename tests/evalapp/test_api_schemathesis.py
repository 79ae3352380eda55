"""schemathesis against the OpenAPI schema the site serves: bounded examples of every operation, sent as a
researcher, an adjudicator and a rater of one study; no 5xx and no response that breaks its own schema."""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from raters import services as rater_services
from raters.models import Role

from ..factories import ArmFactory, MembershipFactory, PromptFactory, ResponseFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def api_schema(db):
    # Loaded inside the test (the WSGI app answers from the test database), not at import time. As
    # Django's test client does, keep the request signals from closing the test's connection.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def tokens(study, researcher):
    rater_services.researcher_add(user=researcher)
    arms = [ArmFactory(study=study, label="fine-tuned"), ArmFactory(study=study, label="baseline")]
    for prompt in PromptFactory.create_batch(3, study=study):
        for arm in arms:
            ResponseFactory(prompt=prompt, arm=arm)
    people = {"researcher": researcher}
    for role in (Role.ADJUDICATOR, Role.RATER):
        people[role] = MembershipFactory(study=study, user=UserFactory(), role=role).user
    return {name: Token.objects.create(user=user).key for name, user in people.items()}


def test_every_operation_answers_within_its_schema(api_schema, tokens, study):
    # One hypothesis run per operation, bounded and derandomized (schemathesis' lazy pytest fixture does
    # not work with this pytest, so the operations are walked here). Mostly the study that exists is
    # named, so that operations get past the access check and into their bodies.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 10
    for operation in operations:
        @settings(max_examples=4, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            if "study_id" in (case.path_parameters or {}):
                case.path_parameters["study_id"] = study.id
            for key in tokens.values():
                case.call_and_validate(headers={"Authorization": f"Token {key}"},
                                       checks=[not_a_server_error, response_schema_conformance])

        check()
