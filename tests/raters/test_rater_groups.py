"""Rater groups set by the researcher (the judge validation report's expert group reads them)."""

import pytest
from django.urls import reverse

from evalapp.models import AuditEvent
from raters.models import Role, StudyMembership

from ..factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_a_researcher_sets_rater_groups_all_at_once(study, researcher, client):
    a = MembershipFactory(study=study, user=UserFactory(username="a"), role=Role.RATER, pseudonym="R-a")
    b = MembershipFactory(study=study, user=UserFactory(username="b"), role=Role.RATER, pseudonym="R-b")
    client.force_login(researcher)
    url = reverse("rater_groups", args=[study.id])
    assert "R-a" in client.get(url).content.decode()
    page = client.post(url, {f"group-{a.user_id}": "  psychologists ", f"group-{b.user_id}": "students"}, follow=True)
    assert "2 rater groups changed" in page.content.decode()
    assert dict(StudyMembership.objects.filter(study=study).values_list("pseudonym", "group")) == {
        "R-a": "psychologists", "R-b": "students"}
    assert AuditEvent.objects.filter(study=study, action="rater.group").count() == 2
    # Too long a name: nothing written.
    page = client.post(url, {f"group-{a.user_id}": "x" * 65, f"group-{b.user_id}": "other"}, follow=True)
    assert "at most 64" in page.content.decode()
    assert StudyMembership.objects.get(id=b.id).group == "students"


def test_only_raters_have_groups(study, researcher, adjudicator):
    from raters import services

    with pytest.raises(services.RatingError, match="Only the study's raters"):
        services.rater_groups_set(study=study, groups={adjudicator.id: "psychologists"}, actor=researcher)
