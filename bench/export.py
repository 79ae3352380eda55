"""The ratings export against PostgreSQL's own COPY ... TO STDOUT of the same rows.

    .venv/bin/python bench/export.py [--ratings 500000] [--no-analyze]

The study has EmpathEval's default rubric (two 1-10 criteria, empathy and fluency), so each
rating is two Score rows and two export rows: --ratings 500000 exports a million rows. Builds a
throwaway test database, fills ratings and their scores with COPY, then times (a) the product's
streamed export on PostgreSQL (evalapp.exports.copy_export.rating_csv_chunks: one COPY of the
export's own SELECT, means by window function, exclusions, adjudications, labels and formula
neutralising in SQL), drained as a client would read it, (b) the baseline: COPY of the same joined
rows (one per score) in CSV, no export logic, in the same process, and (c) the Python path SQLite
keeps (rating_rows -> csv_lines) at a tenth of the size (--python-full: at full size too); and
measures the Python heap peak (tracemalloc) of the export at a tenth and at the full size, to show
memory stays flat as rows grow.
"""

import argparse
import io
import os
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalapp.settings.test")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402

from bench.testdb import throwaway_database  # noqa: E402
from evalapp.exports.copy_export import rating_csv_chunks  # noqa: E402
from evalapp.exports.csv import csv_lines  # noqa: E402
from evalapp.exports.tables import RATING_HEADER, rating_rows  # noqa: E402
from evalapp.models import Arm, Criterion, Prompt, Rating, Response, Study  # noqa: E402
from evalapp.rubric_presets import preset  # noqa: E402
from raters.models import Role, StudyMembership  # noqa: E402

COPY_SQL = """
COPY (
  SELECT p.study_id, r.id, s.public_id, p.external_id, p.topic, a.label, a.blind_code, s.sample_index,
         m.pseudonym, m."group", c.key, c.level, sc.value, sc.not_sure, sc.rationale, r.unsafe, r.unsafe_category,
         r.comment, r.seconds_on_item, r.created_at, r.updated_at, r.simulated
  FROM evalapp_score sc
  JOIN evalapp_criterion c ON c.id = sc.criterion_id
  JOIN evalapp_rating r ON r.id = sc.rating_id
  JOIN evalapp_response s ON s.id = r.response_id
  JOIN evalapp_prompt p ON p.id = s.prompt_id
  JOIN evalapp_arm a ON a.id = s.arm_id
  LEFT JOIN raters_studymembership m ON m.user_id = r.rater_id AND m.study_id = p.study_id AND m.role = 'rater'
  WHERE p.study_id = %s ORDER BY r.id, c.position
) TO STDOUT WITH CSV HEADER
"""


def fill(n_ratings: int, tag: str) -> Study:
    User = get_user_model()
    owner = User.objects.create_user(f"owner-{tag}")
    study = Study.objects.create(owner=owner, title=f"export {tag}", rubric_preset="empatheval")
    criteria = Criterion.objects.bulk_create(
        Criterion.from_spec(study, i, spec) for i, spec in enumerate(preset("empatheval")["criteria"]))
    assert [c.key for c in criteria] == ["empathy", "fluency"], [c.key for c in criteria]
    raters = User.objects.bulk_create(User(username=f"r-{tag}-{i}") for i in range(200))
    raters = list(User.objects.filter(username__startswith=f"r-{tag}-").values_list("id", flat=True))
    StudyMembership.objects.bulk_create(
        StudyMembership(study=study, user_id=u, role=Role.RATER, pseudonym=f"R{u}") for u in raters)
    arms = [Arm.objects.create(study=study, label="fine-tuned"), Arm.objects.create(study=study, label="baseline")]
    n_responses = max(n_ratings // 3, 2)
    prompts = Prompt.objects.bulk_create(
        Prompt(study=study, external_id=f"q{i}", messages=[{"role": "user", "content": "?"}], topic="anxiety")
        for i in range(n_responses // 2))
    responses = Response.objects.bulk_create(
        Response(prompt=p, arm=a, text="reply") for p in prompts for a in arms)
    ids = [r.id for r in responses]
    buffer = io.StringIO()
    for i in range(n_ratings):
        response = ids[i // 3 % len(ids)]
        rater = raters[(i * 7 + i // 3) % len(raters)]
        buffer.write(f"{response}\t{rater}\tf\t\tnote {i}\t12.5\tf\t"
                     "2026-01-01 00:00:00+00\t2026-01-01 00:00:00+00\n")
    with connection.cursor() as cursor:
        with cursor.copy("COPY evalapp_rating (response_id, rater_id, unsafe, unsafe_category, "
                         "comment, seconds_on_item, simulated, created_at, updated_at) FROM STDIN") as copy:
            copy.write(buffer.getvalue())
    # COPY keeps the input order, so the i-th rating by id is the i-th line above.
    rating_ids = list(Rating.objects.filter(response__prompt__study=study).order_by("id").values_list("id", flat=True))
    assert len(rating_ids) == n_ratings, (len(rating_ids), n_ratings)
    empathy, fluency = criteria
    buffer = io.StringIO()
    for i, rating in enumerate(rating_ids):
        buffer.write(f"{rating}\t{empathy.id}\t{1 + i % 10}\tf\t{empathy.min_value}\t{empathy.max_value}\t\n"
                     f"{rating}\t{fluency.id}\t{1 + (i * 3) % 10}\tf\t{fluency.min_value}\t{fluency.max_value}\t\n")
    with connection.cursor() as cursor:
        with cursor.copy("COPY evalapp_score (rating_id, criterion_id, value, not_sure, min_value, max_value, "
                         "rationale) FROM STDIN") as copy:
            copy.write(buffer.getvalue())
    return study


def drain_export(study: Study) -> tuple[int, float]:
    start = time.perf_counter()
    counted: list[int] = []
    size = 0
    for chunk in rating_csv_chunks(study, rows=counted):
        size += len(chunk)
    return counted[0], time.perf_counter() - start


def drain_python(study: Study) -> tuple[int, float]:
    start = time.perf_counter()
    lines = 0
    for chunk in csv_lines(RATING_HEADER, rating_rows(study)):
        lines += chunk.count("\n")
    return lines - 1, time.perf_counter() - start


def drain_copy(study: Study) -> tuple[int, float]:
    start = time.perf_counter()
    total = 0
    with connection.cursor() as cursor:
        with cursor.copy(COPY_SQL.replace("%s", str(study.id))) as copy:
            for block in copy:
                total += bytes(block).count(b"\n")
    return total - 1, time.perf_counter() - start


def peak_heap(study: Study) -> float:
    tracemalloc.start()
    drain_export(study)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ratings", type=int, default=500_000)
    # A live database has statistics (autovacuum analyses a table soon after a big write); --no-analyze
    # times the fresh, unanalysed tables, as the figures before the COPY export did.
    parser.add_argument("--no-analyze", dest="analyze", action="store_false",
                        help="don't ANALYZE the tables after filling them")
    parser.add_argument("--python-full", action="store_true", help="also time the Python path at full size")
    args = parser.parse_args()
    with throwaway_database():
        connection.ensure_connection()
        connection.connection.autocommit = True
        small = fill(args.ratings // 10, "small")
        big = fill(args.ratings, "big")
        if args.analyze:
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        rows_export, t_export = drain_export(big)
        rows_copy, t_copy = drain_copy(big)
        rows_export2, t_export2 = drain_export(big)
        rows_copy2, t_copy2 = drain_copy(big)
        heap_small, heap_big = peak_heap(small), peak_heap(big)
        rows_py_small, t_py_small = drain_python(small)
        rows_small, t_small = drain_export(small)
        rows_py_big, t_py_big = drain_python(big) if args.python_full else (0, float("nan"))
    best_export, best_copy = min(t_export, t_export2), min(t_copy, t_copy2)
    assert rows_export == rows_copy == 2 * args.ratings, (rows_export, rows_copy)
    print(f"rows: {rows_export:,} (ratings {args.ratings:,} x 2 criteria = {rows_export:,} score rows)"
          + ("; tables ANALYZEd after the fill" if args.analyze else ""))
    print("| path | best of 2 (s) | rows/s |")
    print("|---|---|---|")
    print(f"| product export on PostgreSQL (copy_export.rating_csv_chunks) | {best_export:.2f} | "
          f"{rows_export / best_export:,.0f} |")
    print(f"| PostgreSQL COPY ... TO STDOUT (same join over evalapp_score) | {best_copy:.2f} | "
          f"{rows_copy / best_copy:,.0f} |")
    if args.python_full:
        print(f"| Python path (rating_rows -> csv_lines, SQLite's), one run | {t_py_big:.2f} | "
              f"{rows_py_big / t_py_big:,.0f} |")
    print(f"\nexport / COPY rows per second: {best_copy / best_export:.2f} (goal >= 0.5)")
    print(f"at {rows_small:,} rows, one run each: COPY export {t_small:.2f} s, Python path {t_py_small:.2f} s -> "
          f"{t_py_small / t_small:.1f}x")
    print(f"Python heap peak of the export: {heap_small:.1f} MiB at {rows_export // 10:,} rows, "
          f"{heap_big:.1f} MiB at {rows_export:,} rows")


if __name__ == "__main__":
    main()
