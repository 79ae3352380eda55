"""The short version of bench/load.py: 10 raters for 10 s against a real gunicorn and the test database.
Counts only (the times are bench/RESULTS.md's, on a quiet machine): every acknowledged rating stored
once, nothing else stored, no response over its planned ratings, no request failed."""

import pytest

from bench.load import build_site, check, check_passed, gunicorn, run_load

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_ten_raters_for_ten_seconds_lose_and_double_nothing(tmp_path):
    site = build_site(n_raters=10, n_responses=600)
    with gunicorn(workers=2, log_path=tmp_path / "gunicorn.log") as server:
        load = run_load(base_url=server.base_url, site=site, seconds=10)
    counts = check(load=load, site=site)
    assert load.errors == [], (load.errors[:5], (tmp_path / "gunicorn.log").read_text()[-3000:])
    assert counts["acknowledged"] > 50, counts  # the load ran: each rater rated several items
    assert counts["acknowledged"] == counts["in the database"], counts
    assert check_passed(counts), counts
