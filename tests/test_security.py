"""Secure by default: the Content-Security-Policy, nothing inline for it to block, and login throttling."""

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from .factories import UserFactory, log_in

pytestmark = pytest.mark.django_db

TEMPLATES = sorted(Path(settings.BASE_DIR, "templates").rglob("*.html"))


def test_every_page_carries_an_enforced_policy_without_unsafe_inline(client, researcher, study):
    client.force_login(researcher)
    for url in [reverse("login"), reverse("study_list"), reverse("study_detail", args=[study.id]), reverse("api_docs")]:
        response = client.get(url)
        policy = response["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "style-src 'self'" in policy, url
        assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy, url


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: str(p.relative_to(Path(settings.BASE_DIR, "templates"))))
def test_no_template_has_inline_script_or_style(template):
    # The browser test crawls the rendered pages and counts violations; this names the file at once.
    text = template.read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), "inline <script>: move it to a static file"
    assert not re.search(r"\son[a-z]+\s*=", text), "inline event handler: use a static script"
    assert not re.search(r"<style|\sstyle\s*=", text), "inline style: use a class in evalapp/static/evalapp/site.css"
    assert "javascript:" not in text


def test_lockout_after_the_failure_limit_with_a_page_that_says_why(client, researcher):
    limit = settings.AXES_FAILURE_LIMIT
    for _ in range(limit - 1):
        assert not log_in(client, researcher.username, "wrong")
    assert log_in(client, researcher.username, "pw-for-tests"), "a success before the limit clears the count"
    client.post(reverse("logout"))
    for _ in range(limit):
        response = client.post(reverse("login"), {"username": researcher.username, "password": "wrong"})
    assert response.status_code == 429
    # Now even the right password is refused, with a page that says why and for how long.
    response = client.post(reverse("login"), {"username": researcher.username, "password": "pw-for-tests"})
    page = response.content.decode()
    assert response.status_code == 429 and 'id="lockout"' in page
    assert f"{limit} failed attempts" in page and researcher.username in page and "15 minutes" in page
    assert client.get(reverse("study_list")).status_code == 302  # not logged in


def test_a_lockout_is_per_user_and_address_so_others_still_log_in(client, researcher):
    other = UserFactory(username="erin-rater")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(reverse("login"), {"username": researcher.username, "password": "wrong"})
    assert log_in(client, other.username, "pw-for-tests")
    client.post(reverse("logout"))
    # The same user from another address is not locked out either: a guesser can't lock a rater out.
    response = client.post(reverse("login"), {"username": researcher.username, "password": "pw-for-tests"},
                           REMOTE_ADDR="10.9.8.7")
    assert response.status_code == 302
