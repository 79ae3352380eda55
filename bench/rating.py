"""Server time and query count of a rater's "next item" and "submit", against a trivial view.

    .venv/bin/python bench/rating.py [--responses 2000] [--raters 100] [--repeats 200]

Builds a throwaway PostgreSQL test database (DATABASE_URL's server, name prefixed
test_), fills a study of N responses rated 3 times by R raters (made by
evalapp.services.study_create, so it has EmpathEval's default rubric: two 1-10
criteria, posted as score-empathy and score-fluency), then times the
rating page (next item) and the no-reload submit through Django's test client
(full middleware, view, template) next to a trivial login-required view in the
same process: the floor. Also checks the query count stays the same for a study
ten times smaller. Prints a Markdown table for bench/RESULTS.md.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalapp.settings.test")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection, reset_queries  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.urls import reverse  # noqa: E402

from bench.testdb import throwaway_database  # noqa: E402
from evalapp import services as study_services  # noqa: E402
from evalapp.models import Arm, Prompt, Response, Score, Study  # noqa: E402
from raters import services  # noqa: E402
from raters.models import Assignment, Consent, Role, StudyMembership  # noqa: E402
from raters.selectors import next_item  # noqa: E402


def build_study(n_responses: int, n_raters: int, tag: str) -> tuple[Study, list]:
    User = get_user_model()
    owner = User.objects.create_user(f"owner-{tag}", password="x")
    # study_create gives the study its rubric (the default preset's two criteria); a bare
    # Study.objects.create would have none and could not open for rating.
    study = study_services.study_create(owner=owner, title=f"bench {tag}", ratings_per_response=3, gold_rate=0)
    assert [c["key"] for c in study.rubric()] == ["empathy", "fluency"], study.rubric()
    arms = [Arm.objects.create(study=study, label="a"), Arm.objects.create(study=study, label="b")]
    prompts = Prompt.objects.bulk_create(
        Prompt(study=study, external_id=f"q{i}", messages=[{"role": "user", "content": f"Question {i}?"}])
        for i in range(n_responses // 2)
    )
    Response.objects.bulk_create(
        Response(prompt=p, arm=a, text=f"Answer {p.external_id} {a.label} " * 20) for p in prompts for a in arms
    )
    version = services.consent_publish(study=study, text="bench", withdrawal_policy="exclude")
    raters = User.objects.bulk_create(User(username=f"rater-{tag}-{i}") for i in range(n_raters))
    raters = list(User.objects.filter(username__startswith=f"rater-{tag}-"))
    StudyMembership.objects.bulk_create(
        StudyMembership(study=study, user=u, role=Role.RATER, pseudonym=u.username) for u in raters
    )
    Consent.objects.bulk_create(Consent(study=study, user=u, version=version) for u in raters)
    services.study_open_for_rating(study=study)
    return study, raters


def timed(client: Client, method: str, url: str, data=None, headers=None) -> tuple[float, int, int]:
    # The query log keeps 9,000 entries: once full, CaptureQueriesContext counts 0 (earlier runs reported
    # "[0, 2]" queries for the smaller study). Emptied before each request, it counts right.
    reset_queries()
    # A POST is sent as rate.js sends it, urlencoded (the test client's default would be multipart).
    kwargs = {"content_type": "application/x-www-form-urlencoded"} if method == "post" else {}
    with CaptureQueriesContext(connection) as queries:
        start = time.perf_counter()
        response = getattr(client, method)(url, urlencode(data or {}) if method == "post" else data or {},
                                           headers=headers or {}, **kwargs)
        elapsed = time.perf_counter() - start
    return elapsed, len(queries), response.status_code


def measure(study: Study, raters: list, repeats: int) -> dict[str, list]:
    results = {"trivial": [], "next item": [], "submit": []}
    clients = []
    for rater in raters:
        client = Client()
        client.force_login(rater)
        clients.append(client)
    for i in range(repeats):
        client, rater = clients[i % len(clients)], raters[i % len(raters)]
        results["trivial"].append(timed(client, "get", "/trivial/"))
        results["next item"].append(timed(client, "get", reverse("rate", args=[study.id])))
        item = next_item(study=study, rater=rater).assignment
        if item is None:
            continue
        results["submit"].append(
            timed(
                client,
                "post",
                reverse("rate_submit", args=[study.id, item.response.public_id]),
                {"score-empathy": 1 + i % 10, "score-fluency": 1 + (i * 3) % 10, "seconds": "9"},
                {"X-Requested-With": "fetch"},
            )
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--responses", type=int, default=2000)
    parser.add_argument("--raters", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()

    with throwaway_database(), override_settings(ROOT_URLCONF="bench.floor", DEBUG=False):
        t0 = time.perf_counter()
        big, big_raters = build_study(args.responses, args.raters, "big")
        build_s = time.perf_counter() - t0
        small, small_raters = build_study(args.responses // 10, args.raters // 10, "small")
        assignments = Assignment.objects.filter(study=big).count()
        big_results = measure(big, big_raters, args.repeats)
        small_results = measure(small, small_raters, max(args.repeats // 4, 20))
        scores_written = Score.objects.filter(rating__response__prompt__study=big).count()

    floor = statistics.median(r[0] for r in big_results["trivial"])
    print(f"study: {args.responses} responses x 3 ratings, {args.raters} raters, {assignments} assignments "
          f"(built in {build_s:.1f} s); {args.repeats} requests each; "
          f"{scores_written} score rows written by {len(big_results['submit'])} submits\n")
    print("| request | median ms | p90 ms | x trivial view | queries (2,000-response study) | queries (10x smaller) |")
    print("|---|---|---|---|---|---|")
    for name in ("trivial", "next item", "submit"):
        times = sorted(r[0] for r in big_results[name])
        statuses = {r[2] for r in big_results[name]}
        queries = sorted({r[1] for r in big_results[name]})
        small_queries = sorted({r[1] for r in small_results[name]})
        p90 = times[int(0.9 * (len(times) - 1))]
        print(f"| {name} | {1000 * statistics.median(times):.2f} | {1000 * p90:.2f} | "
              f"{statistics.median(times) / floor:.2f}x | {queries} | {small_queries} |"
              + ("" if statuses <= {200} else f" statuses {statuses}"))


if __name__ == "__main__":
    main()
