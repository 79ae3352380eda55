"""The PostgreSQL COPY ratings export writes what the Python export writes, byte for byte."""

import csv
import io

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from evalapp.exports.copy_export import copy_available, rating_csv_chunks
from evalapp.exports.csv import csv_lines
from evalapp.exports.tables import RATING_HEADER, rating_rows
from evalapp.models import Adjudication, Criterion, SafetyDecision, ScorePolicy
from evalapp.rubric import normalise
from raters.models import RatingRevision, Role

from ..factories import ArmFactory, MembershipFactory, PromptFactory, RatingFactory, ResponseFactory, UserFactory

pytestmark = [pytest.mark.django_db,
              pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY needs PostgreSQL (DATABASE_URL)")]

NASTY = ["=SUM(A1)", "+1", "-2", "@me", "\tx", "\rx", 'say "hi", ok', "line\nbreak", "", " padded ", "ünï ☃",
         "'quoted", "\\.", "a,b"]


def python_csv(study) -> str:
    return "".join(csv_lines(RATING_HEADER, rating_rows(study)))


def copy_csv(study) -> str:
    return b"".join(rating_csv_chunks(study)).decode()


def build(study, policy=ScorePolicy.MEAN):
    study.score_policy = policy
    study.save(update_fields=["score_policy"])
    empathy = study.criteria.get(key="empathy")
    empathy.labels = {"1": "=cold", "5": "-neutral", "10": "warm"}
    empathy.save(update_fields=["labels"])
    tone = normalise({"key": "tone", "question": "Tone?", "kind": "choice",
                      "options": [{"key": "warm", "label": "Warm"}, {"key": "flat", "label": "Flat"}]})
    Criterion.from_spec(study, study.criteria.count(), tone).save()
    members = [MembershipFactory(study=study, role=Role.RATER, group=g) for g in ("", "students", "=x", "experts")]
    members[1].withdrawn_at = timezone.now()
    members[1].save()
    members[2].excluded_at, members[2].excluded_reason = timezone.now(), "-speeder, \"fast\""
    members[2].save()
    no_membership = UserFactory()
    raters = [m.user for m in members] + [no_membership]
    arms = [ArmFactory(study=study, label="=fine-tuned"), ArmFactory(study=study, label="base, line")]
    seconds = [None, 5.0, 12.25, 0.1, 1e-05, 123456.5, 3.0, 1e16]
    k = 0
    for i, prompt in enumerate(PromptFactory.create_batch(6, study=study, topic=NASTY[i % len(NASTY)] if False else "")):
        prompt.topic = NASTY[i % len(NASTY)]
        prompt.external_id = NASTY[(i + 3) % len(NASTY)] or f"q{i}"
        prompt.save()
        for arm in arms:
            response = ResponseFactory(prompt=prompt, arm=arm, sample_index=i % 2)
            for j, rater in enumerate(raters):
                k += 1
                scores = {"empathy": None if (k % 7 == 0) else 1 + (k * 3) % 10, "fluency": 1 + k % 10,
                          "tone": k % 2}
                rating = RatingFactory(response=response, rater=rater, scores=scores,
                                       comment=NASTY[k % len(NASTY)], seconds_on_item=seconds[k % len(seconds)],
                                       unsafe=k % 5 == 0, unsafe_category="harmful_advice" if k % 5 == 0 else "")
                rating.scores.filter(criterion__key="fluency").update(rationale=NASTY[(k + 1) % len(NASTY)])
                if k % 6 == 0:
                    RatingRevision.objects.create(rating=rating, changed_by=rater, before={}, after={})
            if i == 1:
                SafetyDecision.objects.create(response=response, classification="harmful", excluded=True,
                                              exclusion_reason="=unsafe, advice", n_reviews=1)
            if i in (2, 3):
                adjudicator = UserFactory()
                Adjudication.objects.create(response=response, scale="empathy", adjudicator=adjudicator,
                                            action="resolved", final_score=4, rationale="x", n_ratings_seen=5)
                Adjudication.objects.create(response=response, scale="tone", adjudicator=adjudicator,
                                            action="resolved", final_score=1, rationale="x", n_ratings_seen=5)
    return study


@pytest.mark.parametrize("policy", [ScorePolicy.MEAN, ScorePolicy.ADJUDICATED, ScorePolicy.BOTH])
def test_copy_export_equals_the_python_export_row_by_row(study, policy):
    build(study, policy)
    python, copied = python_csv(study), copy_csv(study)
    python_rows = list(csv.reader(io.StringIO(python)))
    copy_rows = list(csv.reader(io.StringIO(copied)))
    assert len(python_rows) == len(copy_rows) == 1 + 6 * 2 * 5 * 3
    for number, (ours, theirs) in enumerate(zip(copy_rows, python_rows, strict=True)):
        assert ours == theirs, f"row {number}: " + ", ".join(
            f"{name}: {a!r} != {b!r}" for name, a, b in zip(RATING_HEADER, ours, theirs, strict=True) if a != b)
    # And the same text, quoting included (a spreadsheet reads the bytes, not our parse of them), but for
    # one cell: COPY quotes a value that is exactly \. (its own end-of-data marker); Python's csv does not.
    assert copied.replace('"\\."', "\\.") == python


def test_the_download_uses_copy_on_postgresql(client, researcher, study):
    assert copy_available()
    build(study)
    client.force_login(researcher)
    response = client.get(reverse("export_csv", args=[study.id, "ratings"]))
    assert response.status_code == 200
    assert list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode()))) == list(
        csv.reader(io.StringIO(python_csv(study))))


def test_a_carriage_return_in_a_cell_is_quoted_by_both_paths():
    text = "".join(csv_lines(["a", "b"], [["x\ry", "z"], ["\r", "ok"], ["plain", "w"]]))
    assert text == 'a,b\n"x\ry",z\n"\'\r",ok\nplain,w\n'
    assert list(csv.reader(io.StringIO(text))) == [["a", "b"], ["x\ry", "z"], ["'\r", "ok"], ["plain", "w"]]


def test_an_empty_study_is_the_header_alone(study):
    assert copy_csv(study) == python_csv(study) == ",".join(RATING_HEADER) + "\n"


def test_the_bundle_writes_the_copy_export_and_counts_its_rows(study, researcher):
    import zipfile

    from evalapp.exports.bundle import write_bundle

    build(study)
    spool = io.BytesIO()
    manifest = write_bundle(study, spool, actor=researcher)
    with zipfile.ZipFile(spool) as archive:
        text = archive.read("ratings.csv").decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == list(csv.reader(io.StringIO(python_csv(study))))
    assert manifest["files"]["ratings.csv"]["rows"] == len(rows) - 1 == 6 * 2 * 5 * 3


def test_a_mean_on_a_half_rounds_alike_in_both_paths(study):
    """31 raters give 5 and one gives 6: the mean is 5.03125, which both paths write as 5.0313 (halves away
    from zero, from the exact quotient), not 5.0312 (the float's round-half-even)."""
    response = ResponseFactory(prompt=PromptFactory(study=study), arm=ArmFactory(study=study))
    for i in range(32):
        rater = MembershipFactory(study=study, role=Role.RATER).user
        RatingFactory(response=response, rater=rater, scores={"empathy": 6 if i == 0 else 5, "fluency": 3})
    rows = list(csv.DictReader(io.StringIO(copy_csv(study))))
    assert {row["score_used"] for row in rows if row["scale"] == "empathy"} == {"5.0313"}
    assert copy_csv(study) == python_csv(study)
