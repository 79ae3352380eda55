"""raters.compiled: a read compiled once answers as the queryset it was built from, or falls back to it."""

import pytest
from django.db import connection

from evalapp.models import Study
from raters import services
from raters.compiled import STAND_IN_ID, STAND_IN_TIME, Compiled
from raters.models import Assignment
from raters.selectors import next_item
from raters.services import Submission
from raters.services.welfare import _RECENT, _recent
from raters.timing import _LAST_ACTIVITY, last_activity_at, last_activity_query

from .conftest import add_rater

pytestmark = pytest.mark.django_db


def test_the_hot_reads_answer_as_their_querysets(rating_study, clock):
    raters = [add_rater(rating_study, f"r{i}") for i in range(3)]
    services.study_open_for_rating(study=rating_study)
    for n, rater in enumerate(raters):
        for _ in range(n):
            clock.advance(30)
            item = next_item(study=rating_study, rater=rater).assignment.response.public_id
            services.rating_submit(study=rating_study, rater=rater, item_public_id=item,
                                   submission=Submission({"empathy": 5, "fluency": 5}))
    services.break_taken(study=rating_study, rater=raters[2])
    since = clock.now.replace(year=clock.now.year - 1)
    for rater in [*raters, rating_study.owner]:  # the owner is no rater: no row
        ids = {"study_id": rating_study.id, "rater_id": rater.id}
        assert _LAST_ACTIVITY.rows(**ids) == [tuple(r) for r in last_activity_query(**ids)]
        assert sorted(_RECENT.rows(**ids, since=since)) == sorted(tuple(r) for r in _recent(**ids, since=since))
    assert len(_RECENT.rows(study_id=rating_study.id, rater_id=raters[2].id, since=since)) == 3  # 2 items, 1 break
    assert last_activity_at(study=rating_study, rater=rating_study.owner) is None
    for rater in raters:  # the next item's models, as select_related makes them
        made = next_item(study=rating_study, rater=rater).assignment
        orm = (Assignment.objects.filter(study=rating_study, rater=rater, completed_at__isnull=True)
               .select_related("response__prompt", "gold_item").order_by("position").first())
        assert made == orm and made.response == orm.response and made.gold_item is None
        assert (made.response.text, made.response.prompt.messages) == (orm.response.text, orm.response.prompt.messages)
    if connection.vendor == "postgresql":  # where the compiled SQL is kept (SQLite converts datetimes)
        assert _LAST_ACTIVITY._plans["postgresql"] is not None and _RECENT._plans["postgresql"] is not None


def test_a_stand_in_the_compiler_changes_falls_back_to_compiling_each_time(study):
    # __contains sends "%text%", not the stand-in: the SQL cannot be reused, and the answers stay right.
    by_title = Compiled(lambda text: Study.objects.filter(title__contains=text).values_list("id"), text="\x00stand-in")
    assert by_title.rows(text="Alice") == [(study.id,)] and by_title.rows(text="Bob") == []
    assert by_title._plans[connection.vendor] is None
    by_id = Compiled(lambda pk: Study.objects.filter(id=pk).values_list("title"), pk=STAND_IN_ID)
    assert by_id.rows(pk=study.id) == [(study.title,)] and by_id.rows(pk=study.id + 1) == []


def test_two_values_cannot_share_a_stand_in():
    with pytest.raises(ValueError, match="stand-in of its own"):
        Compiled(lambda a, b: None, a=STAND_IN_ID, b=STAND_IN_ID)
    Compiled(lambda a, b: None, a=STAND_IN_ID, b=STAND_IN_TIME)
