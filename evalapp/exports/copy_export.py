"""The ratings export built by PostgreSQL: one `COPY (SELECT ...) TO STDOUT WITH CSV`, streamed as it comes.

`evalapp.exports.tables.rating_rows` builds every row in Python (raters' means per response, the policy's
value, exclusions, labels) and `csv_lines` writes them: about 30,000 rows/s. Here the database does all
of it in one statement (a window function for the raters' means, joins for adjudications, exclusions
and labels) and writes the CSV itself, at COPY's own speed (bench/RESULTS.md). The columns and their
text are the Python path's to the byte (tests/evalapp/test_copy_export.py compares them row by row);
SQLite (the demo) keeps the Python path.

Formula cells are neutralised in the statement, per cell, before COPY quotes it: a filter over the
CSV bytes would have to re-parse the quoting to find where a cell starts. Text cells that begin with
= + - @ tab or CR get a leading single quote, as evalapp.exports.csv.neutralise does; numbers are
never text in the Python path, so they pass unchanged here too. Only cells that can hold such text
are checked: criterion keys, levels, the policy, unsafe categories, timestamps and the exclusion
reasons are the product's own words and start with a letter or a digit.
"""

from collections.abc import Iterator

from django.db import connection
from psycopg import sql

from raters.models import RatingRevision, Role, StudyMembership

from ..models import (Adjudication, Arm, Criterion, CriterionKind, Prompt, Rating, Response, SafetyDecision, Score,
                      ScorePolicy, Study)
from ..rubric import NOT_SURE_KEY
from .csv import DANGEROUS_PREFIXES, csv_lines
from .tables import RATING_HEADER, export_table

__all__ = ["copy_available", "export_chunks", "rating_csv_chunks"]


def copy_available() -> bool:
    return connection.vendor == "postgresql"


def _neutral(expression: str) -> str:
    """A text cell as csv_lines writes it: empty (not a quoted "") when empty or NULL, a formula quoted."""
    codes = ", ".join(str(ord(p)) for p in DANGEROUS_PREFIXES)  # ascii() of the first character
    return (f"(CASE WHEN ascii({expression}) IN ({codes}) THEN '''' || ({expression}) "
            f"ELSE NULLIF({expression}, '') END)")


def _float(expression: str) -> str:
    """A float as Python's repr writes it (7.0, 7.5, 1e-05): PostgreSQL's shortest form drops the '.0'."""
    return (f"(CASE WHEN {expression} = trunc({expression}) AND abs({expression}) < 1e16 "
            f"THEN trunc({expression})::bigint::text || '.0' ELSE ({expression})::float8::text END)")


def _bit(expression: str) -> str:
    return f"(CASE WHEN {expression} THEN '1' ELSE '0' END)"


def _iso(expression: str) -> str:
    # The Python path's timestamps on PostgreSQL come from the same to_char (tables._iso).
    return f"to_char({expression} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"


def _table(model) -> sql.Identifier:
    return sql.Identifier(model._meta.db_table)


def _statement(study: Study) -> sql.Composed:
    likert = list(study.criteria.filter(kind=CriterionKind.LIKERT).values_list("id", flat=True))
    # The raters' mean per response and criterion: one windowed aggregate per likert criterion over all
    # of a response's rows. The window is ordered as the export is (its frame is still the whole
    # response), so the rows the merge join delivers in that order need no sort for it or for ORDER BY.
    pick = " ".join(
        f"WHEN {cid} THEN avg(sx.value) FILTER (WHERE rt.counted AND sx.value IS NOT NULL "
        f"AND sx.criterion_id = {cid}) OVER w" for cid in likert)
    means = f"round((CASE sx.criterion_id {pick} END)::numeric, 4)::float8" if likert else "NULL::float8"
    # Plan (bench/RESULTS.md, "Export"): the cells of a rating (its response's ids, topic and arm, its
    # rater's pseudonym and group, its times, comment and flags) are formatted once per rating, not once
    # per score row (a million rows are 500,000 ratings). The ratings (rt) and the narrow score rows (sx)
    # are each sorted by (response, rating) and merged: sorting the joined wide rows instead, as a hash
    # join then ORDER BY would, cost twice as much. Both sides read base tables only (no CTE), so
    # PostgreSQL may scan, join and sort each in parallel workers (Gather Merge): 0.54x COPY's speed
    # without them, 0.62x with. OFFSET 0 keeps the planner from flattening rt and sx into one join and
    # losing their order; the final ORDER BY is what guarantees it, and costs nothing when the order is
    # already there.
    template = f"""
COPY (
WITH rt AS (
  SELECT r.id, r.response_id, {_neutral("resp.public_id")} AS public_id, {_neutral("p.external_id")} AS external_id,
         {_neutral("p.topic")} AS topic, {_neutral("a.label")} AS arm, {_neutral("a.blind_code")} AS blind_code,
         resp.sample_index::text AS sample_index,
         CASE WHEN m.user_id IS NOT NULL THEN {_neutral("m.pseudonym")} ELSE r.rater_id::text END AS rater,
         {_neutral('m."group"')} AS rater_group, {_bit("r.unsafe")} AS unsafe,
         NULLIF(r.unsafe_category, '') AS unsafe_category,
         {_neutral("r.comment")} AS comment, {_float("r.seconds_on_item")} AS seconds_on_item,
         {_iso("r.created_at")} AS rated_at,
         CASE WHEN r.id IN (SELECT rv.rating_id FROM {{revision}} rv) THEN {_iso("r.updated_at")} END
           AS revised_at,
         m.rater_reason IS NULL AS counted,
         {_bit("m.rater_reason IS NOT NULL OR sd.excluded")} AS excluded,
         NULLIF(concat_ws('; ', m.rater_reason,
                CASE WHEN sd.excluded THEN 'response excluded after safety review: ' || sd.exclusion_reason END), '')
           AS reasons,
         {_bit("r.simulated")} AS simulated
  FROM {{rating}} r
  JOIN {{response}} resp ON resp.id = r.response_id
  JOIN {{prompt}} p ON p.id = resp.prompt_id AND p.study_id = {{study}}
  LEFT JOIN {{arm}} a ON a.id = resp.arm_id
  LEFT JOIN {{decision}} sd ON sd.response_id = resp.id
  LEFT JOIN (SELECT m.user_id, m.pseudonym, m."group",
                    CASE WHEN m.withdrawn_at IS NOT NULL THEN 'rater withdrew'
                         WHEN m.excluded_at IS NOT NULL THEN 'rater excluded: ' || m.excluded_reason END AS rater_reason
             FROM {{membership}} m WHERE m.study_id = {{study}} AND m.role = {{rater_role}}) m ON m.user_id = r.rater_id
  ORDER BY r.response_id, r.id
  OFFSET 0
),
sx AS (
  SELECT r.response_id, s.rating_id, c.position, s.criterion_id, c.key, c.level, c.kind, s.value, s.not_sure,
         s.rationale, CASE WHEN c.kind = 'choice' THEN c.options -> s.value::int ->> 'key'
                           ELSE c.labels ->> s.value::text END AS label
  FROM {{score}} s
  JOIN {{rating}} r ON r.id = s.rating_id
  JOIN {{criterion}} c ON c.id = s.criterion_id
  JOIN {{response}} resp ON resp.id = r.response_id
  JOIN {{prompt}} p ON p.id = resp.prompt_id AND p.study_id = {{study}}
  ORDER BY r.response_id, s.rating_id, c.position
  OFFSET 0
),
adj AS MATERIALIZED (
  SELECT adj.response_id, adj.scale, adj.final_score FROM {{adjudication}} adj
  JOIN {{response}} resp ON resp.id = adj.response_id JOIN {{prompt}} p ON p.id = resp.prompt_id
  WHERE p.study_id = {{study}} AND adj.action = {{resolved}}
),
x AS (
  SELECT rt.*, sx.position, sx.criterion_id, sx.key, sx.level, sx.kind, sx.value, sx.not_sure, sx.rationale,
         sx.label, adj.final_score, {means} AS mean
  FROM sx
  JOIN rt ON rt.response_id = sx.response_id AND rt.id = sx.rating_id
  LEFT JOIN adj ON adj.response_id = sx.response_id AND adj.scale = sx.key
  WINDOW w AS (PARTITION BY sx.response_id ORDER BY sx.rating_id, sx.position
               ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
)
SELECT {{study}}::text, x.id::text, x.public_id, x.external_id, x.topic, x.arm, x.blind_code, x.sample_index,
       x.rater, x.rater_group, x.key, x.level, x.value::text,
       {_neutral(f"CASE WHEN x.not_sure THEN {{not_sure}} WHEN x.value IS NULL THEN '' ELSE COALESCE(x.label, '') END")},
       {_bit("x.not_sure")}, {_neutral("x.rationale")}, x.final_score::text,
       CASE WHEN {{policy}} = {{adjudicated}} AND x.final_score IS NOT NULL THEN x.final_score::text
            WHEN x.kind = 'likert' THEN {_float("x.mean")} END,
       {{policy}}, x.unsafe, x.unsafe_category, x.comment, x.seconds_on_item, x.rated_at, x.revised_at,
       x.excluded, x.reasons, x.simulated
FROM x ORDER BY x.response_id, x.id, x.position
) TO STDOUT WITH (FORMAT csv)"""
    return sql.SQL(template).format(
        study=sql.Literal(study.id), criterion=_table(Criterion),
        score=_table(Score), rating=_table(Rating), response=_table(Response), prompt=_table(Prompt),
        arm=_table(Arm), membership=_table(StudyMembership), decision=_table(SafetyDecision),
        adjudication=_table(Adjudication), revision=_table(RatingRevision), rater_role=sql.Literal(Role.RATER),
        resolved=sql.Literal(Adjudication.Action.RESOLVED), not_sure=sql.Literal(NOT_SURE_KEY),
        policy=sql.Literal(study.score_policy), adjudicated=sql.Literal(ScorePolicy.ADJUDICATED),
    )


def rating_csv_chunks(study: Study, rows: list[int] | None = None) -> Iterator[bytes]:
    """ratings.csv as bytes, header first, straight from COPY: memory stays flat (a block at a time).
    `rows`, if given, gets the number of data rows appended once the copy is done (the bundle's manifest)."""
    statement = _statement(study)
    yield (",".join(RATING_HEADER) + "\n").encode()
    with connection.cursor() as cursor:
        # JIT compiling the statement's expressions cost 2.8 s of 11 at a million rows, and the default
        # work_mem spilled the joins' sorts to disk; both are set for this statement only.
        cursor.execute("SET jit = off; SET work_mem = '256MB'")
        try:
            with cursor.cursor.copy(statement) as copy:
                for block in copy:
                    yield bytes(block)
            if rows is not None:
                rows.append(cursor.rowcount)
        finally:
            cursor.execute("RESET jit; RESET work_mem")


def export_chunks(*, study: Study, name: str, actor) -> Iterator[str | bytes]:
    """One export's CSV text (audited, as export_table is): the ratings from COPY on PostgreSQL, every
    other export (and the ratings on SQLite) written from Python rows."""
    header, rows = export_table(study=study, name=name, actor=actor)
    if name == "ratings" and copy_available():
        return rating_csv_chunks(study)
    return csv_lines(header, rows)
