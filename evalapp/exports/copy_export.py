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

from ..models import Adjudication, Arm, Criterion, Prompt, Rating, Response, SafetyDecision, Score, ScorePolicy, Study
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
    mean = _float("round(x.mean::numeric, 4)")
    # Cells that are the same for every row of a response (its ids, topic, arm) or of a rater (pseudonym,
    # group, why they are left out) are formatted once per response and per rater in MATERIALIZED CTEs,
    # not once per score row: a million-row export has 55,000 responses and 200 raters.
    template = f"""
COPY (
WITH resp AS MATERIALIZED (
  SELECT resp.id, {_neutral("resp.public_id")} AS public_id, {_neutral("p.external_id")} AS external_id,
         {_neutral("p.topic")} AS topic, {_neutral("a.label")} AS arm, {_neutral("a.blind_code")} AS blind_code,
         resp.sample_index::text AS sample_index,
         CASE WHEN sd.excluded THEN 'response excluded after safety review: ' || sd.exclusion_reason END
           AS response_reason
  FROM {{response}} resp
  JOIN {{prompt}} p ON p.id = resp.prompt_id AND p.study_id = {{study}}
  LEFT JOIN {{arm}} a ON a.id = resp.arm_id
  LEFT JOIN {{decision}} sd ON sd.response_id = resp.id
),
rater AS MATERIALIZED (
  SELECT m.user_id, {_neutral("m.pseudonym")} AS pseudonym, {_neutral('m."group"')} AS rater_group,
         CASE WHEN m.withdrawn_at IS NOT NULL THEN 'rater withdrew'
              WHEN m.excluded_at IS NOT NULL THEN 'rater excluded: ' || m.excluded_reason END AS rater_reason
  FROM {{membership}} m WHERE m.study_id = {{study}} AND m.role = {{rater_role}}
),
x AS (
  SELECT s.rating_id, r.response_id, resp.public_id, resp.external_id, resp.topic, resp.arm, resp.blind_code,
         resp.sample_index, r.rater_id, c.key, c.level, c.kind, c.position, s.value, s.not_sure, s.rationale,
         r.unsafe, r.unsafe_category, r.comment, r.seconds_on_item, r.created_at, r.updated_at, r.simulated,
         rater.user_id IS NOT NULL AS member, rater.pseudonym, rater.rater_group, rater.rater_reason,
         resp.response_reason, adj.final_score,
         avg(s.value) FILTER (WHERE rater.rater_reason IS NULL AND s.value IS NOT NULL)
           OVER (PARTITION BY r.response_id, s.criterion_id) AS mean,
         CASE WHEN c.kind = 'choice' THEN c.options -> s.value::int ->> 'key' ELSE c.labels ->> s.value::text END
           AS label, rv.rating_id IS NOT NULL AS revised
  FROM {{score}} s
  JOIN {{rating}} r ON r.id = s.rating_id
  JOIN resp ON resp.id = r.response_id
  JOIN {{criterion}} c ON c.id = s.criterion_id
  LEFT JOIN rater ON rater.user_id = r.rater_id
  LEFT JOIN {{adjudication}} adj ON adj.response_id = r.response_id AND adj.scale = c.key
                                 AND adj.action = {{resolved}}
  LEFT JOIN (SELECT DISTINCT rating_id FROM {{revision}}) rv ON rv.rating_id = s.rating_id
)
SELECT {{study}}::text, x.rating_id::text, x.public_id, x.external_id, x.topic, x.arm, x.blind_code, x.sample_index,
       CASE WHEN x.member THEN x.pseudonym ELSE x.rater_id::text END, x.rater_group,
       x.key, x.level, x.value::text,
       {_neutral(f"CASE WHEN x.not_sure THEN {{not_sure}} WHEN x.value IS NULL THEN '' ELSE COALESCE(x.label, '') END")},
       {_bit("x.not_sure")}, {_neutral("x.rationale")}, x.final_score::text,
       CASE WHEN {{policy}} = {{adjudicated}} AND x.final_score IS NOT NULL THEN x.final_score::text
            WHEN x.kind = 'likert' THEN {mean} END,
       {{policy}}, {_bit("x.unsafe")}, NULLIF(x.unsafe_category, ''), {_neutral("x.comment")},
       {_float("x.seconds_on_item")},
       {_iso("x.created_at")}, CASE WHEN x.revised THEN {_iso("x.updated_at")} END,
       {_bit("x.rater_reason IS NOT NULL OR x.response_reason IS NOT NULL")},
       NULLIF(concat_ws('; ', x.rater_reason, x.response_reason), ''), {_bit("x.simulated")}
FROM x ORDER BY x.response_id, x.rating_id, x.position
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
