"""Results off the request path: a task computes them into a row per state of the data; pages read rows.

Where a test needs the request to be unable to compute, it turns eager tasks off and stands in for the
broker (apply_async recorded), then runs the task itself as a worker would (compute_results.apply).
"""

import math
from datetime import timedelta
from unittest import mock

import numpy as np
import pytest
from django.urls import reverse
from django.utils import dateformat, timezone

from evalapp import results
from evalapp.results import compute_results, results_state
from evalapp.results_models import ComputationStatus, ResultsComputation, decode_entry, encode_entry
from raters.models import Role, StudyMembership

from ..factories import MembershipFactory, RatingFactory
from .test_results_exports import _two_arm_study

pytestmark = pytest.mark.django_db


@pytest.fixture
def rated(researcher):
    return _two_arm_study(researcher, 4, 2)


@pytest.fixture
def no_broker_in_request(settings):
    """Eager tasks off, as with a worker: the request can only queue. Yields the recorded publishes."""
    settings.CELERY_TASK_ALWAYS_EAGER = False
    with mock.patch.object(compute_results, "apply_async") as publish:
        yield publish


def shown_time(when) -> str:
    return dateformat.format(timezone.localtime(when), "Y-m-d H:i:s T")


def refuse_analysis(*args, **kwargs):
    raise AssertionError("the analysis ran inside the request")


def test_the_pages_only_queue_and_then_read_the_stored_row(client, researcher, rated, no_broker_in_request,
                                                           django_capture_on_commit_callbacks):
    client.force_login(researcher)
    page_url, json_url = reverse("results", args=[rated.id]), reverse("results_json", args=[rated.id])
    with mock.patch("evalapp.analysis.analyze_long", refuse_analysis), \
            django_capture_on_commit_callbacks(execute=True):
        first = client.get(page_url)
        # A second tab, the JSON and the API: the same data, so the same row and no second message.
        waiting = client.get(json_url)
        api = client.get(f"/api/studies/{rated.id}/results/")
        plot = client.get(reverse("results_plot", args=[rated.id, "agreement", "png"]))
        again = client.get(page_url)
    row = ResultsComputation.objects.get(study=rated)
    assert no_broker_in_request.call_args_list == [mock.call(args=(row.pk,), retry=False)]
    assert first.status_code == again.status_code == 200
    assert "Computing the results" in first.content.decode() and 'id="result-empathy"' not in first.content.decode()
    assert waiting.status_code == api.status_code == plot.status_code == 202
    assert waiting.json() == {"status": "queued", "progress": row.progress()} and api.json()["status"] == "queued"

    compute_results.apply(args=(row.pk,))  # the worker

    with mock.patch("evalapp.analysis.analyze_long", refuse_analysis), \
            django_capture_on_commit_callbacks(execute=True):
        page = client.get(page_url).content.decode()
        body = client.get(json_url).json()
        api = client.get(f"/api/studies/{rated.id}/results/").json()
        plot = client.get(reverse("results_plot", args=[rated.id, "agreement", "png"]))
        progress = client.get(reverse("results_progress", args=[rated.id])).json()
    row.refresh_from_db()
    assert 'id="result-empathy"' in page and f"Computed at <time datetime=" in page and "Stale" not in page
    assert body["stale"] is False and body["computed_at"] == row.finished_at.isoformat()
    assert body["agreement"]["scales"]["empathy"]["n_raters"] == 2 and api["agreement"] == body["agreement"]
    assert plot.status_code == 200 and plot["Content-Type"] == "image/png"
    assert progress["computed"] is True and progress["progress"]["status"] == "done"
    assert len(no_broker_in_request.call_args_list) == 1  # nothing more was queued


def test_a_new_rating_marks_the_results_stale_with_their_time(client, researcher, rated, settings,
                                                              django_capture_on_commit_callbacks):
    client.force_login(researcher)
    assert 'id="result-empathy"' in client.get(reverse("results", args=[rated.id])).content.decode()  # eager
    done = ResultsComputation.objects.get(study=rated)
    response = rated.prompts.first().responses.first()
    rater = MembershipFactory(study=rated, role=Role.RATER)  # a new rater: every rater rated every response
    RatingFactory(response=response, rater=rater.user, empathy=3, fluency=3)

    settings.CELERY_TASK_ALWAYS_EAGER = False
    with mock.patch.object(compute_results, "apply_async"), mock.patch("evalapp.analysis.analyze_long", refuse_analysis), \
            django_capture_on_commit_callbacks(execute=True):
        page = client.get(reverse("results", args=[rated.id])).content.decode()
        body = client.get(reverse("results_json", args=[rated.id])).json()
    assert "Stale: computed at" in page and shown_time(done.finished_at) in page and "recomputing (" in page
    assert 'id="result-empathy"' in page  # the last results stay on the page
    assert body["stale"] is True and body["computed_at"] == done.finished_at.isoformat()
    assert body["progress"]["status"] == "queued"
    assert ResultsComputation.objects.filter(study=rated).count() == 2


def test_a_failed_computation_stores_no_entry_and_the_page_keeps_the_last_results(client, researcher, rated):
    client.force_login(researcher)
    client.get(reverse("results", args=[rated.id]))
    done = ResultsComputation.objects.get(study=rated, status=ComputationStatus.DONE)
    rated.score_policy = "mean" if rated.score_policy != "mean" else "adjudicated"
    rated.save(update_fields=["score_policy"])
    with mock.patch("evalapp.analysis.analyze_long", side_effect=ValueError("a singular matrix")):
        page = client.get(reverse("results", args=[rated.id])).content.decode()  # eager: it runs, and fails
    failed = ResultsComputation.objects.exclude(pk=done.pk).get(study=rated)
    assert failed.status == ComputationStatus.FAILED and failed.entry is None and failed.finished_at
    assert failed.error == "ValueError: a singular matrix" and failed.stage == "agreement"
    assert "recomputing failed" in page and "ValueError: a singular matrix" in page
    assert shown_time(done.finished_at) in page and 'id="result-empathy"' in page


def test_a_first_computation_that_fails_shows_its_error_and_no_numbers(client, researcher, rated):
    client.force_login(researcher)
    with mock.patch("evalapp.analysis.analyze_long", side_effect=RuntimeError("out of memory")):
        page = client.get(reverse("results", args=[rated.id])).content.decode()
        body = client.get(reverse("results_json", args=[rated.id]))
    assert "Computing the results failed: RuntimeError: out of memory" in page and "result-empathy" not in page
    assert 'data-poll' not in page  # nothing under way: the page does not poll a failure
    assert body.status_code == 202 and body.json()["status"] == "failed"


def test_the_stages_are_written_as_the_computation_goes(rated):
    row = ResultsComputation.objects.create(study=rated, fingerprint="x", n_boot=50, queued_at=timezone.now())
    seen = []

    def record(real):
        def wrapper(*args, **kwargs):
            stored = ResultsComputation.objects.get(pk=row.pk)
            seen.append((stored.status, stored.stage, stored.percent))
            return real(*args, **kwargs)
        return wrapper

    from evalapp import analysis, plots
    with mock.patch("evalapp.analysis.analyze_long", record(analysis.analyze_long)), \
            mock.patch("evalapp.plots.summarize", record(plots.summarize)), \
            mock.patch("evalapp.results.text_report", record(results.text_report)):
        compute_results.apply(args=(row.pk,))
    assert seen[0] == ("running", "agreement", 20)
    assert ("running", "plots", 80) in seen and seen[-1] == ("running", "text measures", 90)
    row.refresh_from_db()
    assert (row.status, row.stage, row.percent, row.error) == ("done", "done", 100, "")
    assert row.started_at <= row.finished_at and row.task_id and row.entry["results"]["n_rows"] == 4 * 2 * 2 * 2


def test_a_row_held_by_a_live_worker_is_not_run_twice_and_a_lapsed_one_is_taken_over(rated):
    now = timezone.now()
    held = ResultsComputation.objects.create(study=rated, fingerprint="held", n_boot=50, queued_at=now,
                                             status=ComputationStatus.RUNNING, claim="other", heartbeat_at=now)
    with mock.patch("evalapp.analysis.analyze_long", refuse_analysis):
        compute_results.apply(args=(held.pk,))
    held.refresh_from_db()
    assert (held.status, held.claim, held.entry) == ("running", "other", None)

    ResultsComputation.objects.filter(pk=held.pk).update(heartbeat_at=now - results.LEASE - timedelta(seconds=1))
    compute_results.apply(args=(held.pk,))
    held.refresh_from_db()
    assert held.status == ComputationStatus.DONE and held.claim != "other" and held.entry


def test_a_worker_whose_claim_was_taken_over_writes_nothing(rated):
    row = ResultsComputation.objects.create(study=rated, fingerprint="x", n_boot=50, queued_at=timezone.now())
    from evalapp import analysis
    real = analysis.analyze_long

    def taken_over(*args, **kwargs):
        ResultsComputation.objects.filter(pk=row.pk).update(claim="another worker")
        return real(*args, **kwargs)

    with mock.patch("evalapp.analysis.analyze_long", taken_over):
        compute_results.apply(args=(row.pk,))
    row.refresh_from_db()
    assert (row.status, row.claim, row.entry) == ("running", "another worker", None)


def test_a_queued_row_whose_message_was_lost_is_sent_again_once(client, researcher, rated, no_broker_in_request,
                                                                django_capture_on_commit_callbacks):
    client.force_login(researcher)
    with django_capture_on_commit_callbacks(execute=True):
        client.get(reverse("results", args=[rated.id]))
    row = ResultsComputation.objects.get(study=rated)
    ResultsComputation.objects.filter(pk=row.pk).update(queued_at=timezone.now() - results.LEASE - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        client.get(reverse("results", args=[rated.id]))
        client.get(reverse("results", args=[rated.id]))
    assert no_broker_in_request.call_count == 2  # the first message, and one more for the lapse


def test_the_demo_path_shows_results_in_one_request(client, researcher, rated, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True  # no REDIS_URL: what settings/base.py sets for the demo
    settings.CELERY_TASK_EAGER_PROPAGATES = False
    client.force_login(researcher)
    page = client.get(reverse("results", args=[rated.id])).content.decode()
    assert 'id="result-empathy"' in page and "Computed at" in page and "Computing the results" not in page


def test_only_the_newest_finished_rows_are_kept(rated):
    now = timezone.now()
    rows = [ResultsComputation.objects.create(study=rated, fingerprint=f"f{i}", n_boot=50, queued_at=now,
                                              status=ComputationStatus.DONE, entry={}, finished_at=now + timedelta(i))
            for i in range(5)]
    old_failure = ResultsComputation.objects.create(study=rated, fingerprint="bad", n_boot=50, queued_at=now,
                                                    status=ComputationStatus.FAILED, finished_at=now)
    running = ResultsComputation.objects.create(study=rated, fingerprint="now", n_boot=50, queued_at=now,
                                                status=ComputationStatus.RUNNING)
    results._prune(rated.id)
    left = set(ResultsComputation.objects.filter(study=rated).values_list("pk", flat=True))
    assert left == {rows[2].pk, rows[3].pk, rows[4].pk, running.pk} and old_failure.pk not in left


def test_the_fingerprint_follows_what_the_numbers_depend_on(rated):
    first = results._fingerprint(rated)
    assert results._fingerprint(rated) == first and results._fingerprint(rated, 50) != first
    member = StudyMembership.objects.filter(study=rated, role=Role.RATER).first()
    member.excluded_at = timezone.now()
    member.save(update_fields=["excluded_at"])
    excluded = results._fingerprint(rated)
    assert excluded != first
    criterion = rated.criteria.get(key="empathy")
    criterion.level = "ordinal" if criterion.level != "ordinal" else "interval"  # how it is analysed
    criterion.save(update_fields=["level"])
    rated = type(rated).objects.get(pk=rated.pk)  # rubric() is read once per instance
    assert results._fingerprint(rated) != excluded


def test_the_stored_entry_reads_back_as_computed():
    entry = {"scores": {"empathy": {"a": {3: 2, 4.5: 1}}}, "p": float("nan"), "inf": float("inf"),
             "numpy": np.float64(0.25), "ints": np.array([1, 2]), "pair": (1, None), "ok": True}
    back = decode_entry(encode_entry(entry))
    assert back["scores"] == {"empathy": {"a": {3: 2, 4.5: 1}}} and math.isnan(back["p"]) and back["inf"] == math.inf
    assert back["numpy"] == 0.25 and type(back["numpy"]) is float and back["ints"] == [1, 2]
    assert back["pair"] == [1, None] and back["ok"] is True


def test_deleting_the_study_deletes_its_computations(client, researcher, rated):
    from evalapp.services import study_delete
    client.force_login(researcher)
    client.get(reverse("results", args=[rated.id]))
    assert ResultsComputation.objects.filter(study=rated).exists()
    study_id = rated.id
    study_delete(study=rated, actor=researcher)
    assert not ResultsComputation.objects.filter(study_id=study_id).exists()


def test_results_state_reads_the_latest_done_row(rated):
    state = results_state(rated, n_boot=50)
    assert state.shown == state.current and not state.stale and state.data["n_rows"] == 32
