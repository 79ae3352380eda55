"""ORM reads compiled once per process and then run with each call's values, for the rating hot path.

Building a statement through the ORM (resolving lookups, joins, subqueries, unions) cost more than
running it: raters.timing.last_activity_at's seven subqueries took several times longer to compile
than PostgreSQL took to answer them, on every submit. Writing such reads as SQL by hand would state
their rules twice (the SQL and an ORM spelling for SQLite, the demo's database); a Compiled read is
written once, with the ORM, and only its SQL is kept: compiled from stand-in values, whose places
among the parameters are then filled with the call's values.

What keeps this honest: a stand-in must come through to the parameters as it went in (each found, by
type and value), else the read is compiled every time, as a plain queryset would be: slower, never
different (SQLite turns datetimes into text while compiling). The columns are converted from the
database's values by the converters the first compilation chose, as the queryset's own iteration does
(JSON decoded, SQLite's datetimes parsed). `instance` makes model rows of such values, so that a read
whose callers want models (the next item with its response and prompt) is compiled once too.

On PostgreSQL the statements are also prepared once per connection and several sent in one round trip
(rows_together): the ORM's SQL is the same text at every call, and planning the item's read with its
subqueries took PostgreSQL longer than running it.
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from weakref import WeakKeyDictionary

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model, QuerySet

# Stand-ins no real value takes: ids below any sequence's, a moment before any data.
STAND_IN_ID = -7_340_013
STAND_IN_TIME = datetime(1901, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)


class _Slot:
    def __init__(self, name: str):
        self.name = name


class Compiled:
    """`build(**values)` returns a values_list queryset; `rows(**values)` its rows as tuples.

    `stand_ins` names each value and gives one of its type that no call passes (STAND_IN_ID, STAND_IN_TIME,
    or distinct ones of your own: two names with the same stand-in could not be told apart)."""

    def __init__(self, build: Callable[..., QuerySet], **stand_ins):
        if len({_key(v) for v in stand_ins.values()}) != len(stand_ins):
            raise ValueError("Each value needs a stand-in of its own.")
        self.build, self.stand_ins = build, stand_ins
        self._plans: dict[str, tuple[str, list, list] | None] = {}  # per database vendor; None: compile each time

    def rows(self, **values) -> list[tuple]:
        return rows_together((self, values))[0]

    def statement(self, connection, values: dict) -> tuple[str, list, list] | None:
        """(sql, params, converters) of a call, or None where the read must be built each time."""
        if connection.vendor not in self._plans:
            self._plans[connection.vendor] = self._plan(connection)
        plan = self._plans[connection.vendor]
        if plan is None:
            return None
        sql, slots, converters = plan
        return sql, [values[s.name] if isinstance(s, _Slot) else s for s in slots], converters

    def built_rows(self, values: dict) -> list[tuple]:
        """The rows as the queryset gives them, where statement() is None (only a Compiled's can be)."""
        return [tuple(row) for row in self.build(**values)]

    def _plan(self, connection):
        compiler = self.build(**self.stand_ins).query.get_compiler(connection=connection)
        sql, params = compiler.as_sql()
        by_value = {_key(v): name for name, v in self.stand_ins.items()}
        slots = [_Slot(by_value[_key(p)]) if _key(p) in by_value else p for p in params]
        if {s.name for s in slots if isinstance(s, _Slot)} != set(self.stand_ins):
            return None
        return sql, slots, list(compiler.get_converters([col for col, _, _ in compiler.select[:compiler.col_count]]).items())


class RawRead:
    """A read written in SQL (one the ORM can't spell, PostgreSQL's LATERAL say), to run with
    rows_together; `names` are its values in the order of its placeholders. PostgreSQL only."""

    def __init__(self, sql: str, *names: str):
        self.sql, self.names = sql, names

    def rows(self, **values) -> list[tuple]:
        return rows_together((self, values))[0]

    def statement(self, connection, values: dict) -> tuple[str, list, list]:
        return self.sql, [values[name] for name in self.names], []


class Sql:
    """A statement written in SQL with its parameters in order (`values` unused), for rows_together: a
    write whose RETURNING rows are its answer, sent with the reads that must see it. PostgreSQL only."""

    def __init__(self, sql: str, params: list):
        self.sql, self.params = sql, params

    def statement(self, connection, values: dict) -> tuple[str, list, list]:
        return self.sql, self.params, []


def rows_together(*reads: tuple) -> list[list[tuple]]:
    """The rows of each (read, values), a Compiled, RawRead or Sql. On PostgreSQL (PREPARED_STATEMENTS
    on) they go in one round trip as one query of EXECUTEs of statements prepared once per connection
    (the PREPAREs go first in the same query where the connection lacks them); elsewhere one after
    another, each planned anew.

    Why: a round trip cost more than most of these reads took to run (PostgreSQL waking for each,
    bench/rating.py), and planning the item's read with its subqueries cost more than running it.
    Django binds values on the client, so its SQL changes with every call and cannot be prepared by
    psycopg; EXECUTE name(values) can, and a query of several statements is one round trip (psycopg's
    pipeline mode did the same in twice the time). The statements run in order in one implicit
    transaction: a read sees a write before it, and an error leaves no row written. The query goes
    through Django's cursor, so it is logged, counted by the tests and seen by execute wrappers."""
    connection = connections[DEFAULT_DB_ALIAS]
    statements = [read.statement(connection, values) for read, values in reads]
    if connection.vendor != "postgresql" or not settings.PREPARED_STATEMENTS or None in statements:
        out = []
        for (read, values), statement in zip(reads, statements, strict=True):
            if statement is None:
                out.append(read.built_rows(values))
                continue
            with connection.cursor() as cursor:
                cursor.execute(statement[0], statement[1])
                out.append(_converted(cursor.fetchall(), statement[2], connection))
        return out
    connection.ensure_connection()
    raw = connection.connection
    prepared = _PREPARED.get(raw, set())
    # None: an error left unknown which PREPAREs ran (they outlive a rolled-back transaction); start
    # again from none, in the same query, so that a call is one query whatever came before.
    parts, params, fresh = ([("DEALLOCATE ALL", False)] if prepared is None else []), [], {}
    prepared = prepared or set()
    for sql, values, _ in statements:
        name = statement_name(sql)
        if name not in prepared and name not in fresh:
            types = ", ".join(_parameter_type(v) for v in values)
            fresh[name] = f"PREPARE {name}{f' ({types})' if values else ''} AS {_numbered(sql)}"
            parts.append((fresh[name], False))
        parts.append((f"EXECUTE {name}({', '.join(['%s'] * len(values))})" if values else f"EXECUTE {name}", True))
        params.extend(values)
    results = []
    try:
        with connection.cursor() as cursor:
            cursor.execute(";\n".join(text for text, _ in parts), params)
            for i, (_, has_rows) in enumerate(parts):
                if i:
                    cursor.nextset()
                if has_rows:
                    results.append(cursor.fetchall())
    except Exception:
        _PREPARED[raw] = None
        raise
    _PREPARED[raw] = prepared | set(fresh)
    return [_converted(rows, statement[2], connection) for rows, statement in zip(results, statements, strict=True)]


# Per psycopg connection, the names this module prepared on it (a new connection, after a reconnect,
# is a new session, which has none); None: unknown, after an error.
_PREPARED: "WeakKeyDictionary[object, set[str] | None]" = WeakKeyDictionary()


@lru_cache(maxsize=512)
def statement_name(sql: str) -> str:
    """The name a statement is prepared under on every connection (what watches for it may look for it)."""
    return "ee_" + hashlib.sha1(sql.encode(), usedforsecurity=False).hexdigest()[:20]


@lru_cache(maxsize=512)
def _numbered(sql: str) -> str:
    """Django's %s placeholders as PREPARE's $1, $2, ...; a literal %, written %%, stays %% (the whole
    query is still bound by the client cursor)."""
    pieces = sql.split("%%")
    n = 0
    out = []
    for piece in pieces:
        chunks = piece.split("%s")
        numbered = [chunks[0]]
        for chunk in chunks[1:]:
            n += 1
            numbered.append(f"${n}{chunk}")
        out.append("".join(numbered))
    return "%%".join(out)


def _parameter_type(value) -> str:
    """A parameter's type as PREPARE declares it: from the Python value where SQL could not infer it (a
    value in the select list is text otherwise), else unknown (inferred from the statement: a column it
    is compared with, a cast), as for a string, a list or None."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "double precision"
    if isinstance(value, datetime):
        return "timestamptz" if value.tzinfo else "timestamp"
    return "unknown"


@dataclass(frozen=True)
class Query:
    """A read with its values and what its rows mean (`finish(rows)`), to run with others: run_together."""

    read: "Compiled | RawRead | Sql"
    values: dict
    finish: Callable[[list[tuple]], Any]


def run_together(*queries: Query) -> list:
    """Each query's finish(rows), the reads in one round trip (rows_together)."""
    rows = rows_together(*((q.read, q.values) for q in queries))
    return [q.finish(r) for q, r in zip(queries, rows, strict=True)]


def _converted(rows: list, converters: list, connection) -> list[tuple]:
    if not converters:
        return rows
    # As SQLCompiler.apply_converters, with this thread's connection (the plan's may be another's).
    out = []
    for row in rows:
        row = list(row)
        for pos, (convert, expression) in converters:
            for converter in convert:
                row[pos] = converter(row[pos], expression, connection)
        out.append(tuple(row))
    return out


def columns(model: type[Model], prefix: str = "") -> list[str]:
    """The model's concrete columns as values_list names (under a relation's `prefix`, e.g. "response__")."""
    return [prefix + f.attname for f in model._meta.concrete_fields]


def instance(model: type[Model], values) -> Model | None:
    """The model row made of `values` (in columns(model) order) as a queryset would make it; None where
    the primary key is NULL (a LEFT JOIN that found no row)."""
    values = list(values)
    names = columns(model)
    if values[names.index(model._meta.pk.attname)] is None:
        return None
    return model.from_db(DEFAULT_DB_ALIAS, names, values)


def _key(value):
    """A parameter as the stand-ins are told apart: its type and value (True is not 1); None where it
    cannot be a stand-in (a list, say)."""
    try:
        hash(value)
    except TypeError:
        return None
    return type(value), value
