"""Issue 17, the welfare report an ethics board sees (the researcher's welfare page), and the time-out page's
title."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from evalapp.audit import audit
from evalapp.models import Response
from raters import services
from raters.models import DistressReport, PanelParticipant, WelfareBreak, WelfareNoticeSeen

from .conftest import add_rater
from .test_panel import PID2, enter, make_link, prolific
from .test_panel_review import time_out

pytestmark = pytest.mark.django_db


def test_the_timed_out_pages_title_holds_no_crisis_resources_and_its_body_still_does(client, open_study, researcher):
    services.welfare_save(study=open_study, actor=researcher, crisis_text="Call the helpline any time.")
    link = make_link(open_study, researcher, code_timed_out="CTIME")
    enter(client, link, **prolific(PID2))
    time_out(link)
    text = enter(client, link, **prolific(PID2)).content.decode()
    title = re.search(r"<title>(.*?)</title>", text, re.S).group(1)
    assert "crisis-resources" not in title and "helpline" not in title and "Session timed out" in title
    body = text.split("</title>", 1)[1]
    assert 'id="crisis-resources"' in body and "Call the helpline any time." in body


def _left(study, link, user, status, at, pid):
    return PanelParticipant.objects.create(study=study, link=link, participant_id=pid, user=user, status=status,
                                           outcome_at=at)


def _populate(study, researcher, link, prefix=""):
    """Six raters: r1 and r2 stay (r2 reported distress), r3 reported then withdrew (a pool participant, so
    also "returned"), r4 reported then timed out, r5 stopped early without a report, r6 stopped early
    before the report a late page recorded. Three breaks by two raters, one pool participant at a cap."""
    r = {n: add_rater(study, f"{prefix}r{n}") for n in range(1, 7)}
    for n in (1, 2):
        WelfareNoticeSeen.objects.create(study=study, user=r[n], consent_version=1, notice="n", topics=[])
    WelfareNoticeSeen.objects.create(study=study, user=r[1], consent_version=2, notice="n", topics=[])
    for user in (r[1], r[1], r[2]):
        WelfareBreak.objects.create(study=study, rater=user)
    audit(study=study, actor=r[1], action="panel.cap_reached", obj=study, after={"cap": "day"})
    responses = list(Response.objects.filter(prompt__study=study)[:4])
    for user, response, topic in ((r[2], responses[0], "Abuse and violence"), (r[3], responses[1], ""),
                                  (r[4], responses[2], "Abuse and violence"), (r[6], responses[3], "")):
        DistressReport.objects.create(study=study, rater=user, response=response, topic=topic)
    now = timezone.now()
    services.consent_withdraw(study=study, user=r[3])
    _left(study, link, r[3], "returned", now + timedelta(seconds=1), f"{prefix}p3")
    _left(study, link, r[4], "timed_out", now + timedelta(minutes=5), f"{prefix}p4")
    _left(study, link, r[5], "returned", now, f"{prefix}p5")
    _left(study, link, r[6], "returned", now - timedelta(minutes=5), f"{prefix}p6")
    return r


def test_the_report_counts_each_measure_and_who_left_after_reporting_distress(open_study, researcher):
    services.welfare_save(study=open_study, actor=researcher, break_every_items=10, break_every_minutes=0,
                          cap_per_day=30, topics=["abuse"], other_topics="Eating disorders",
                          crisis_links=[{"label": "Helpline", "url": "https://example.org/a/very/long/path"}])
    _populate(open_study, researcher, make_link(open_study, researcher))
    report = services.welfare_report(open_study)
    assert report["topics"] == ["Abuse and violence", "Eating disorders"]
    assert (report["notice_seen"], report["breaks"], report["break_raters"], report["caps_reached"]) == (2, 3, 2, 1)
    assert report["break_rule"] == "a break after 10 items of rating" and report["cap_rule"] == "30 items a day"
    # r3 withdrew (counted once, not also as stopped early); r5 and r6 stopped early; r4 timed out.
    assert (report["withdrew"], report["stopped_early"], report["timed_out"]) == (1, 2, 1)
    # r2 stayed, r6 had left before: r3 and r4 left after reporting.
    assert (report["reporters"], report["left_after_report"]) == (4, 2)


def test_the_welfare_page_shows_the_summary_above_the_form_in_a_fixed_number_of_queries(open_study, researcher):
    link = make_link(open_study, researcher)
    _populate(open_study, researcher, link)
    client = Client()
    client.force_login(researcher)
    url = reverse("welfare_page", args=[open_study.id])
    with CaptureQueriesContext(connection) as few:
        page = client.get(url).content.decode()
    assert page.index('id="welfare-measures"') < page.index('id="welfare-form"')
    assert "2 raters saw the notice" in page and "3 breaks taken at a prompt, by 2 raters" in page
    assert "1 withdrew, 2 stopped early, 1 timed out" in page
    assert "Of the 4 raters who reported distress, 2 later withdrew, stopped or timed out" in page
    assert "Abuse and violence: 2; (no topic given): 2" in page
    # The crisis links field is not wrapped by the browser (no address broken mid-URL).
    assert re.search(r'<textarea[^>]*name="crisis_links"[^>]*wrap="off"', page) or \
        re.search(r'<textarea[^>]*wrap="off"[^>]*name="crisis_links"', page)
    _populate(open_study, researcher, link, prefix="more")
    with CaptureQueriesContext(connection) as many:
        assert "Of the 8 raters who reported distress, 4 later" in client.get(url).content.decode()
    assert len(many) == len(few)


def test_an_outsider_and_a_rater_do_not_get_the_report(open_study, researcher):
    rater = Client()
    rater.force_login(add_rater(open_study, "r1"))
    assert rater.get(reverse("welfare_page", args=[open_study.id])).status_code == 404
