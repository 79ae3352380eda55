"""A bounded load on the rating flow: gunicorn and PostgreSQL on 127.0.0.1, N simulated raters at once.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/benchload .venv/bin/python bench/load.py \
        [--raters 50] [--seconds 60] [--workers 3] [--responses 3000]

Builds a throwaway PostgreSQL test database (DATABASE_URL's server, name prefixed test_) holding one study
open for rating (EmpathEval's default rubric, 3 ratings per response, consent published and accepted by
every rater, no calibration items, so every rater may rate at once, as `raters.selectors.rater_status`
requires), starts gunicorn as the Dockerfile does (`evalapp.wsgi`, sync workers) under the base settings
with DEBUG=false and the floor view of bench/floor.py, and lets each rater, one thread each, loop for the
given time: GET the trivial login-required view (the floor, measured under the same load), GET the
rating page (the next item) and POST the rating as rate.js does (X-Requested-With: fetch). Then it checks
the database against what the server acknowledged (a 200 to the POST): every acknowledged rating is
there once, nothing else is, no response has more ratings than the study plans, and every rating has
one score per criterion. Prints a Markdown table for bench/RESULTS.md and exits 1 if a check fails.

The client is a few threads with `requests` (already installed) rather than locust: a closed loop of
N raters, each waiting for its answer before the next request, is all this needs, and its counts are
checked against the database by the same process that kept them.

tests/integration/test_load.py runs the same functions, 10 raters for 10 s, and asserts the counts.
"""

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalapp.settings.test")

import django  # noqa: E402

django.setup()

import requests  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model  # noqa: E402
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Count  # noqa: E402

from evalapp import services as study_services  # noqa: E402
from evalapp.models import Arm, Prompt, Rating, Response, Score  # noqa: E402
from raters import services  # noqa: E402
from raters.models import Consent, Role, StudyMembership, WelfareSettings  # noqa: E402

KINDS = ("trivial", "next item", "submit")
_ITEM = re.compile(r'action="(/studies/\d+/rate/([^/"]+)/)"')
_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@dataclass
class Site:
    study_id: int
    ratings_per_response: int
    n_criteria: int
    sessions: list[str]  # one session key per rater, already logged in
    rater_ids: list[int]  # the rater of each session
    owner_id: int


def build_site(*, n_raters: int, n_responses: int, tag: str = "load") -> Site:
    """A study open for rating with n_raters raters who may rate now, each with a logged-in session."""
    User = get_user_model()
    owner = User.objects.create_user(f"owner-{tag}", password=None)
    study = study_services.study_create(owner=owner, title=f"load {tag}", ratings_per_response=3, gold_rate=0)
    # These raters rate as fast as the server answers for minutes: the welfare break prompt (by default every
    # 20 items) would stand in for their next item. The bench measures the rating path, so breaks are off.
    WelfareSettings.objects.create(study=study, break_every_items=0, break_every_minutes=0)
    arms = [Arm.objects.create(study=study, label="a"), Arm.objects.create(study=study, label="b")]
    prompts = Prompt.objects.bulk_create(
        Prompt(study=study, external_id=f"q{i}", messages=[{"role": "user", "content": f"Question {i}?"}])
        for i in range(n_responses // 2)
    )
    Response.objects.bulk_create(
        Response(prompt=p, arm=a, text=f"Answer {p.external_id} {a.label} " * 20) for p in prompts for a in arms
    )
    version = services.consent_publish(study=study, text="load", withdrawal_policy="exclude")
    User.objects.bulk_create(User(username=f"rater-{tag}-{i}") for i in range(n_raters))
    raters = list(User.objects.filter(username__startswith=f"rater-{tag}-").order_by("id"))
    StudyMembership.objects.bulk_create(
        StudyMembership(study=study, user=u, role=Role.RATER, pseudonym=u.username) for u in raters
    )
    Consent.objects.bulk_create(Consent(study=study, user=u, version=version) for u in raters)
    services.study_open_for_rating(study=study)
    return Site(study_id=study.id, ratings_per_response=study.ratings_per_response,
                n_criteria=study.criteria.count(), sessions=[_session_for(u) for u in raters],
                rater_ids=[u.id for u in raters], owner_id=owner.id)


def _session_for(user) -> str:
    # What a login writes (django.contrib.auth.login): logging 50 raters in through the login form would
    # time the password hasher and django-axes, not the rating flow.
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return session.session_key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url() -> str:
    """The URL of the database this process is connected to (a test database once one is made)."""
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@contextmanager
def gunicorn(*, workers: int = 3, env: dict | None = None, log_path: Path | None = None):
    """gunicorn on a free port of 127.0.0.1 serving this process's database; yields its base URL."""
    port = free_port()
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.floor_settings",
        "DATABASE_URL": database_url(),
        "DEBUG": "false",
        # The sessions were signed here; the server must check them with the same key.
        "SECRET_KEY": settings.SECRET_KEY,
        "LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    if "REDIS_URL" not in (env or {}):
        environment.pop("REDIS_URL", None)  # the rating flow needs none; a caller testing Redis names one
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "evalapp.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--chdir", str(ROOT)],
        cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}" + _tail(log_path))
            try:
                if requests.get(f"{base}/healthz", timeout=2).status_code in (200, 503):
                    break
            except (requests.ConnectionError, requests.Timeout):
                # A worker's first request imports the URL conf's views (numpy, scipy and the rest): on a
                # loaded machine that can take longer than the 2 s asked, and it is still starting.
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not answer within 60 s" + _tail(log_path))
            time.sleep(0.1)
        process.base_url = base
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log_path:
            log.close()


def _tail(log_path) -> str:
    return f"\n{Path(log_path).read_text(errors='replace')[-3000:]}" if log_path else ""


@dataclass
class Load:
    seconds: float = 0.0
    # (kind, seconds, status or the exception's name)
    requests: list = field(default_factory=list)
    acknowledged: list = field(default_factory=list)  # (session index, response public id) answered 200
    # Submits that got no 200 (a 503, a dropped connection): the server may have committed them before it
    # failed, so a fault test allows them in the database but never counts them as acknowledged.
    unconfirmed: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    finished_raters: int = 0  # raters who rated everything assigned to them before the time was up


def run_load(*, base_url: str, site: Site, seconds: float, floor: bool = True, rate: bool = True) -> Load:
    """Every rater in its own thread, in a closed loop until `seconds` have passed: the floor view (floor),
    the next item and its submit (rate), or both, one after another."""
    load = Load()
    lock = threading.Lock()
    start = threading.Barrier(len(site.sessions) + 1)
    deadline = [0.0]

    def rater(index: int, session_key: str):
        http = requests.Session()
        http.cookies.set(settings.SESSION_COOKIE_NAME, session_key, domain="127.0.0.1")
        mine, i = [], 0
        start.wait()
        while time.monotonic() < deadline[0]:
            i += 1
            if floor:
                call(http, mine, "trivial", "get", "/trivial/", expect=200)
            page = call(http, mine, "next item", "get", f"/studies/{site.study_id}/rate/", expect=200) if rate else None
            if not rate or page is None:
                continue
            item, token = _ITEM.search(page), _CSRF.search(page)
            if item is None:
                if 'id="all-done"' in page:
                    with lock:
                        load.finished_raters += 1
                    break
                record_error(mine, "next item", "no item and no all-done in the page")
                continue
            answers = {"csrfmiddlewaretoken": token.group(1), "score-empathy": str(1 + i % 10),
                       "score-fluency": str(1 + (i * 3) % 10), "seconds": "4"}
            if call(http, mine, "submit", "post", item.group(1), data=answers, expect=200,
                    headers={"X-Requested-With": "fetch"}) is not None:
                with lock:
                    load.acknowledged.append((index, item.group(2)))
            else:
                with lock:
                    load.unconfirmed.append((index, item.group(2)))
        with lock:
            load.requests.extend(mine)

    def record_error(mine, kind, what):
        with lock:
            load.errors.append((kind, what))

    def call(http, mine, kind, method, path, expect, **kwargs):
        t0 = time.perf_counter()
        try:
            response = getattr(http, method)(base_url + path, timeout=60, allow_redirects=False, **kwargs)
        except requests.RequestException as exc:
            mine.append((kind, time.perf_counter() - t0, type(exc).__name__))
            record_error(mine, kind, type(exc).__name__)
            return None
        mine.append((kind, time.perf_counter() - t0, response.status_code))
        if response.status_code != expect:
            record_error(mine, kind, f"{response.status_code} {response.text[:200]!r}")
            return None
        return response.text

    def guarded(index: int, session_key: str):
        # A rater thread that dies (a page without its CSRF token, say) is an error in the report, not a
        # thread that quietly stops rating.
        try:
            rater(index, session_key)
        except Exception as exc:  # noqa: BLE001
            record_error([], "rater", f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=guarded, args=(i, key), daemon=True) for i, key in enumerate(site.sessions)]
    for thread in threads:
        thread.start()
    t0 = time.monotonic()
    deadline[0] = t0 + seconds
    start.wait()
    for thread in threads:
        thread.join()
    load.seconds = time.monotonic() - t0
    return load


def check(*, load: Load, site: Site) -> dict:
    """The database against the acknowledgements: counts only, each the same or zero when all is well."""
    ratings = Rating.objects.filter(response__prompt__study_id=site.study_id)
    acknowledged = {(site.rater_ids[index], public_id) for index, public_id in load.acknowledged}
    stored = list(ratings.values_list("rater_id", "response__public_id"))
    per_response = ratings.values("response_id").annotate(n=Count("id"))
    per_rating_scores = Score.objects.filter(rating__in=ratings).values("rating_id").annotate(n=Count("id"))
    return {
        "acknowledged": len(load.acknowledged),
        "acknowledged twice": len(load.acknowledged) - len(acknowledged),
        "in the database": len(stored),
        "lost (acknowledged, not stored)": len(acknowledged - set(stored)),
        "extra (stored, not acknowledged)": len(set(stored) - acknowledged),
        "doubled (same rater and response)": len(stored) - len(set(stored)),
        "responses over their planned ratings": sum(1 for r in per_response if r["n"] > site.ratings_per_response),
        "ratings without one score per criterion":
            len(stored) - sum(1 for r in per_rating_scores if r["n"] == site.n_criteria),
        "errors": len(load.errors),
    }


def check_passed(counts: dict) -> bool:
    return counts["acknowledged"] == counts["in the database"] > 0 and all(
        value == 0 for name, value in counts.items() if name not in ("acknowledged", "in the database"))


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def table(load: Load) -> str:
    rows = ["| request | count | per second | p50 ms | p95 ms | p99 ms | p95 x trivial |", "|---|---|---|---|---|---|---|"]
    p95 = {}
    stats = {}
    for kind in KINDS:
        times = sorted(t for k, t, _ in load.requests if k == kind)
        if not times:
            continue
        stats[kind] = times
        p95[kind] = percentile(times, 0.95)
    for kind, times in stats.items():
        ratio = f"{p95[kind] / p95['trivial']:.2f}x" if "trivial" in p95 else "-"
        rows.append(f"| {kind} | {len(times)} | {len(times) / load.seconds:.1f} | {1000 * statistics.median(times):.1f} | "
                    f"{1000 * p95[kind]:.1f} | {1000 * percentile(times, 0.99):.1f} | {ratio} |")
    total = len(load.requests)
    rows.append(f"| all | {total} | {total / load.seconds:.1f} | | | | |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--raters", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers (the Dockerfile runs 3)")
    parser.add_argument("--responses", type=int, default=3000)
    parser.add_argument("--floor-seconds", type=float, default=20,
                        help="then the trivial view alone, same raters, for this long (0: not)")
    parser.add_argument("--log", type=Path, default=None, help="gunicorn's log file")
    args = parser.parse_args()

    from bench.testdb import throwaway_database

    with throwaway_database():
        t0 = time.perf_counter()
        site = build_site(n_raters=args.raters, n_responses=args.responses)
        build_s = time.perf_counter() - t0
        with gunicorn(workers=args.workers, log_path=args.log) as server:
            load_before = os.getloadavg()
            load = run_load(base_url=server.base_url, site=site, seconds=args.seconds)
            load_after = os.getloadavg()
            alone = (run_load(base_url=server.base_url, site=site, seconds=args.floor_seconds, rate=False)
                     if args.floor_seconds else None)
        counts = check(load=load, site=site)

    print(f"{args.raters} raters for {args.seconds:.0f} s (ran {load.seconds:.1f} s), gunicorn {args.workers} sync "
          f"workers, {args.responses} responses x 3 ratings (built in {build_s:.1f} s); "
          f"{load.finished_raters} raters ran out of items; load average before {load_before[0]:.2f}, "
          f"after {load_after[0]:.2f} (1 min)\n")
    print(table(load))
    if alone is not None:
        print(f"\nThe trivial view alone, the same {args.raters} raters for {alone.seconds:.1f} s "
              f"({len(alone.errors)} errors):\n")
        print(table(alone))
        floor_p95 = percentile(sorted(t for _, t, _ in alone.requests), 0.95)
        for kind in ("next item", "submit"):
            times = sorted(t for k, t, _ in load.requests if k == kind)
            if times:
                print(f"\n- p95 {kind} under the rating load / p95 of the trivial view alone: "
                      f"{percentile(times, 0.95) / floor_p95:.1f}x", end="")
        print()
    print()
    for name, value in counts.items():
        print(f"- {name}: {value}")
    for kind, what in load.errors[:10]:
        print(f"  error ({kind}): {what}")
    passed = check_passed(counts)
    print(f"\ncounts {'pass' if passed else 'FAIL'}")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
