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
"""

from collections.abc import Callable
from datetime import UTC, datetime

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
        connection = connections[DEFAULT_DB_ALIAS]
        if connection.vendor not in self._plans:
            self._plans[connection.vendor] = self._plan(connection)
        plan = self._plans[connection.vendor]
        if plan is None:
            return [tuple(row) for row in self.build(**values)]
        sql, slots, converters = plan
        with connection.cursor() as cursor:
            cursor.execute(sql, [values[s.name] if isinstance(s, _Slot) else s for s in slots])
            rows = cursor.fetchall()
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

    def _plan(self, connection):
        compiler = self.build(**self.stand_ins).query.get_compiler(connection=connection)
        sql, params = compiler.as_sql()
        by_value = {_key(v): name for name, v in self.stand_ins.items()}
        slots = [_Slot(by_value[_key(p)]) if _key(p) in by_value else p for p in params]
        if {s.name for s in slots if isinstance(s, _Slot)} != set(self.stand_ins):
            return None
        return sql, slots, list(compiler.get_converters([col for col, _, _ in compiler.select[:compiler.col_count]]).items())


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
