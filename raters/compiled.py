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

On PostgreSQL the statements are also planned once per connection (prepared_cursor): the ORM's SQL is
the same text at every call, and planning the item's read with its subqueries took PostgreSQL longer
than running it.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from contextlib import ExitStack, contextmanager
from functools import cache
from datetime import UTC, datetime

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
        return [tuple(row) for row in self.build(**values)]

    def _plan(self, connection):
        compiler = self.build(**self.stand_ins).query.get_compiler(connection=connection)
        sql, params = compiler.as_sql()
        by_value = {_key(v): name for name, v in self.stand_ins.items()}
        slots = [_Slot(by_value[_key(p)]) if _key(p) in by_value else p for p in params]
        if {s.name for s in slots if isinstance(s, _Slot)} != set(self.stand_ins):
            return None
        return sql, slots, list(compiler.get_converters([col for col, _, _ in compiler.select[:compiler.col_count]]).items())


@contextmanager
def prepared_cursor(connection=None) -> Iterator:
    """A cursor of `connection` (the default one) whose statements PostgreSQL plans once per connection
    and then only runs; a plain cursor elsewhere, or where settings.PREPARED_STATEMENTS is off.

    Django's cursors bind values into the SQL text on the client (psycopg's ClientCursor), so that each
    statement is parsed and planned anew. This one binds them on the server and asks psycopg to prepare
    (prepare=True: Django turns psycopg's automatic preparing off, for poolers); it is wrapped as Django
    wraps its own, so the statements are logged, counted by the tests and seen by execute wrappers.
    Only for SQL that is the same text at every call, as a Compiled read's is: psycopg keeps a bounded
    number of prepared statements per connection."""
    connection = connection or connections[DEFAULT_DB_ALIAS]
    if connection.vendor != "postgresql" or not settings.PREPARED_STATEMENTS:
        with connection.cursor() as cursor:
            yield cursor
        return
    connection.ensure_connection()
    if connection.connection.prepare_threshold is None:
        # Django sets None, which turns preparing off even where asked. A threshold no count reaches
        # keeps psycopg from preparing anything unasked; Django's own cursors never prepare (client binding).
        connection.connection.prepare_threshold = 2**62
    preparing_cursor, debug_wrapper = _cursor_classes()
    with connection.wrap_database_errors:
        raw = preparing_cursor(connection.connection)
    connection.validate_thread_sharing()
    cursor = debug_wrapper(raw, connection) if connection.queries_logged else connection.make_cursor(raw)
    with cursor:
        yield cursor


@cache
def _cursor_classes():
    # Imported here: psycopg and the postgresql backend are there only where PostgreSQL is configured.
    from django.db.backends.postgresql.base import CursorDebugWrapper, ServerBindingCursor
    from django.db.backends.utils import CursorWrapper

    class PreparingCursor(ServerBindingCursor):
        def execute(self, query, params=None, *, prepare=None, binary=None):
            return super().execute(query, params, prepare=True, binary=binary)

    class DebugWrapper(CursorDebugWrapper):
        def execute(self, sql, params=None):
            # Logged as Django logs its own statements, the SQL with its values in it: Django reads the
            # text psycopg sent, which for a server-bound statement has none (or is None once prepared).
            with self.debug_sql(self.db.ops.compose_sql(sql, params), params):
                return CursorWrapper.execute(self, sql, params)

    return PreparingCursor, DebugWrapper


class RawRead:
    """A read written in SQL (one the ORM can't spell, PostgreSQL's LATERAL say), to run with
    rows_together; `names` are its values in the order of its placeholders. PostgreSQL only."""

    def __init__(self, sql: str, *names: str):
        self.sql, self.names = sql, names

    def rows(self, **values) -> list[tuple]:
        return rows_together((self, values))[0]

    def statement(self, connection, values: dict) -> tuple[str, list, list]:
        return self.sql, [values[name] for name in self.names], []

    def built_rows(self, values: dict) -> list[tuple]:
        raise NotImplementedError("A RawRead is PostgreSQL's; it has no ORM spelling to build.")


class Sql:
    """A statement written in SQL with its parameters in order (`values` unused), for rows_together: a
    write whose RETURNING rows are its answer, sent with the reads that must see it. PostgreSQL only."""

    def __init__(self, sql: str, params: list):
        self.sql, self.params = sql, params

    def statement(self, connection, values: dict) -> tuple[str, list, list]:
        return self.sql, self.params, []

    def built_rows(self, values: dict) -> list[tuple]:
        raise NotImplementedError("Sql is PostgreSQL's; it has no ORM spelling to build.")


def rows_together(*reads: tuple) -> list[list[tuple]]:
    """The rows of each (read, values), a Compiled or a RawRead: on PostgreSQL sent together and
    answered in one round trip (psycopg's pipeline mode), each a prepared statement; elsewhere, or
    with PREPARED_STATEMENTS off, one after another. A round trip cost more than most of these reads
    took to run (PostgreSQL waking for each, bench/rating.py). They run in order, so a read sees a
    write sent before it; an error in one raises and its followers are not run (in autocommit the
    statements up to the pipeline's sync are one implicit transaction)."""
    connection = connections[DEFAULT_DB_ALIAS]
    statements = [read.statement(connection, values) for read, values in reads]
    pipelined = (len(reads) > 1 and connection.vendor == "postgresql" and settings.PREPARED_STATEMENTS
                 and None not in statements)
    if not pipelined:
        out = []
        for (read, values), statement in zip(reads, statements, strict=True):
            if statement is None:
                out.append(read.built_rows(values))
                continue
            with prepared_cursor(connection) as cursor:
                cursor.execute(statement[0], statement[1])
                out.append(_converted(cursor.fetchall(), statement[2], connection))
        return out
    connection.ensure_connection()
    with connection.wrap_database_errors, ExitStack() as stack:
        stack.enter_context(connection.connection.pipeline())
        cursors = [stack.enter_context(prepared_cursor(connection)) for _ in reads]
        for cursor, (sql, params, _) in zip(cursors, statements, strict=True):
            cursor.execute(sql, params)
        results = [cursor.fetchall() for cursor in cursors]
    return [_converted(rows, statement[2], connection) for rows, statement in zip(results, statements, strict=True)]


@dataclass(frozen=True)
class Query:
    """A read with its values and what its rows mean (`finish(rows)`), to run with others: run_together."""

    read: "Compiled | RawRead"
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
