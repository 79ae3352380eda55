"""Migrations 0006-0008 (evalapp) and 0004-0006 (raters): the two fixed columns become criteria
and score rows without losing a rating, a calibration reference, a calibration answer or a gold answer."""

import random

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("evalapp", "0005_rating_rating_response_id"), ("raters", "0003_studymembership_group")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_migration_moves_every_rating_value_into_score_rows():
    # Every app: going back to BEFORE also unapplies the migrations of other apps that depend on it
    # (modelserver 0006 on evalapp 0010), and later tests need those tables.
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    old = _migrate(BEFORE)
    try:
        User = old.get_model("auth", "User")
        Study, Prompt, Arm, Response, Rating = (old.get_model("evalapp", n) for n in
                                                ("Study", "Prompt", "Arm", "Response", "Rating"))
        Item, Attempt, Answer = (old.get_model("raters", n) for n in
                                 ("CalibrationItem", "CalibrationAttempt", "CalibrationAnswer"))
        Assignment, Gold = old.get_model("raters", "Assignment"), old.get_model("raters", "GoldAnswer")
        rng = random.Random(7)
        owner = User.objects.create(username="owner")
        raters = [User.objects.create(username=f"r{i}") for i in range(4)]
        expected, names = {}, {}
        for s in range(2):
            scales = [{"key": "empathy", "name": f"Warmth {s}", "min": 1, "max": 10,
                       "anchors": {"1": "cold", "5": "polite", "10": "warm"}},
                      {"key": "fluency", "name": "Fluency", "min": 1, "max": 10,
                       "anchors": {"1": "broken", "5": "ok", "10": "clear"}}]
            study = Study.objects.create(title=f"S{s}", owner=owner, scales=scales)
            names[study.id] = scales
            arm = Arm.objects.create(study=study, label="a", blind_code=f"C{s}")
            for p in range(5):
                prompt = Prompt.objects.create(study=study, external_id=f"p{p}",
                                               messages=[{"role": "user", "content": "hi"}])
                response = Response.objects.create(prompt=prompt, arm=arm, text="t", public_id=f"x{s}{p}")
                for rater in raters[: rng.randint(1, 4)]:
                    rating = Rating.objects.create(response=response, rater=rater, empathy=rng.randint(1, 10),
                                                   fluency=rng.randint(1, 10))
                    expected[rating.id] = {"empathy": rating.empathy, "fluency": rating.fluency}
            item = Item.objects.create(study=study, messages=[{"role": "user", "content": "q"}], response_text="r",
                                       reference_empathy=9, reference_fluency=2 + s, rationale="why",
                                       created_by=owner, public_id=f"cal{s}")
            attempt = Attempt.objects.create(study=study, rater=raters[0], number=1)
            Answer.objects.create(attempt=attempt, item=item, empathy=4, fluency=5 + s)
            slot = Assignment.objects.create(study=study, rater=raters[1], position=1, gold_item=item, design_seed=1)
            Gold.objects.create(assignment=slot, empathy=3 + s, fluency=6)
    finally:
        new = _migrate(latest)

    Score, Criterion = new.get_model("evalapp", "Score"), new.get_model("evalapp", "Criterion")
    got = {}
    for rating_id, key, value, not_sure in Score.objects.values_list("rating_id", "criterion__key", "value", "not_sure"):
        assert not not_sure
        got.setdefault(rating_id, {})[key] = value
    assert got == expected and len(expected) > 10
    for study_id, scales in names.items():
        criteria = list(Criterion.objects.filter(study_id=study_id).order_by("position"))
        assert [(c.key, c.question, c.min_value, c.max_value, c.labels, c.kind, c.level) for c in criteria] == [
            (s["key"], s["name"], 1, 10, s["anchors"], "likert", "interval") for s in scales]
    Item, Answer, Gold = (new.get_model("raters", n) for n in ("CalibrationItem", "CalibrationAnswer", "GoldAnswer"))
    assert sorted(i.references["fluency"] for i in Item.objects.all()) == [2, 3]
    assert all(i.references["empathy"] == 9 for i in Item.objects.all())
    assert sorted((a.values["empathy"], a.values["fluency"]) for a in Answer.objects.all()) == [(4, 5), (4, 6)]
    assert sorted((g.values["empathy"], g.values["fluency"]) for g in Gold.objects.all()) == [(3, 6), (4, 6)]


@pytest.mark.django_db(transaction=True)
def test_migrating_back_restores_the_two_columns():
    # Every app: going back to BEFORE also unapplies the migrations of other apps that depend on it
    # (modelserver 0006 on evalapp 0010), and later tests need those tables.
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    old = _migrate(BEFORE)
    try:
        User, Study = old.get_model("auth", "User"), old.get_model("evalapp", "Study")
        Prompt, Arm, Response, Rating = (old.get_model("evalapp", n) for n in ("Prompt", "Arm", "Response", "Rating"))
        owner = User.objects.create(username="owner")
        study = Study.objects.create(title="S", owner=owner, scales=[
            {"key": "empathy", "name": "E", "min": 1, "max": 10, "anchors": {"1": "a", "5": "b", "10": "c"}},
            {"key": "fluency", "name": "F", "min": 1, "max": 10, "anchors": {"1": "a", "5": "b", "10": "c"}}])
        arm = Arm.objects.create(study=study, label="a", blind_code="C")
        prompt = Prompt.objects.create(study=study, external_id="p", messages=[{"role": "user", "content": "hi"}])
        response = Response.objects.create(prompt=prompt, arm=arm, text="t", public_id="x")
        Rating.objects.create(response=response, rater=owner, empathy=4, fluency=9)
        _migrate(latest)
        back = _migrate(BEFORE)  # with a rating in the table: the columns come back filled
        assert list(back.get_model("evalapp", "Rating").objects.values_list("empathy", "fluency")) == [(4, 9)]
        assert [s["name"] for s in back.get_model("evalapp", "Study").objects.get().scales] == ["E", "F"]
    finally:
        _migrate(latest)
