"""Issue 17, the welfare report an ethics board sees (the researcher's welfare page), and the time-out page's
title."""

import re

import pytest

from raters import services

from .test_panel import PID2, enter, make_link, prolific
from .test_panel_review import time_out

pytestmark = pytest.mark.django_db


@pytest.fixture
def open_study(rating_study):
    services.study_open_for_rating(study=rating_study)
    return rating_study


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
