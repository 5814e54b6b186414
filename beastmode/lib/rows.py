"""Writing many rows from the background writer threads (request records, rollups, L3):
multi-row INSERT statements of plain values, optionally upserting, or of JSON objects
that the database unpacks itself.

Not the ORM's bulk_create (it spends more CPU, under the GIL the requests need, compiling
SQL than the database spends writing) nor executemany (it hands the GIL over per row);
docs/PERFORMANCE.md has the measurements.
"""

import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from django.db import connection
from django.db.models import Model

from beastmode.lib import fastjson

# Parameters per statement: SQLite allows 32,766, Postgres 65,535.
_MAX_PARAMETERS = 10_000
# Postgres text and jsonb cannot hold NUL (U+0000), which clients can put in any string; a
# row holding one would fail its whole batch. It is stored as U+FFFD instead. In JSON text
# it is the escape \u0000 (after an even number of backslashes).
_REPLACEMENT = "\ufffd"
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def write_rows(
    model: type[Model],
    fields: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    conflict: Sequence[str] = (),
    update: Sequence[str] = (),
    encoded_json: bool = False,
) -> None:
    """Insert rows (Python values in `fields` order; JSON and datetimes are converted
    here, unless `encoded_json`: JSON fields hold JSON text already). With `conflict`, a
    row matching an existing one on those fields updates its `update` fields instead;
    conflict keys must then be unique within `rows`."""
    fields, conflict, update = tuple(fields), tuple(conflict), tuple(update)
    converters = _converters(model, fields, encoded_json)
    values: list[Any] = []
    for row in rows:
        if len(row) != len(fields):
            raise ValueError(f"a row of {len(row)} values for {len(fields)} fields")
        row = list(row)
        for at, convert in converters:
            row[at] = convert(row[at])
        values += row
    per_statement = _MAX_PARAMETERS // len(fields) * len(fields)
    with connection.cursor() as cursor:
        for start in range(0, len(values), per_statement):
            chunk = values[start : start + per_statement]
            sql = _sql(model, fields, conflict, update, len(chunk) // len(fields))
            cursor.execute(sql, chunk)


def insert_json_rows(model: type[Model], fields: Sequence[str], rows: Sequence[bytes]) -> None:
    """Insert rows given as JSON objects, one per row with a key per field's column
    (datetimes as `sqlite_datetime` writes them; every key present). The
    database unpacks the JSON itself, outside the GIL: the writer thread holds it only to
    hand over the bytes, where converting values and binding a parameter per column took
    20 µs of it per record (docs/PERFORMANCE.md)."""
    if not rows:
        return
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            payload = _json_without_nul((b"[" + b",".join(rows) + b"]").decode())
            cursor.execute(_json_insert_sql(model, tuple(fields)), [payload])
            return
        # SQLite: one parameter per row (json_each over one array costs 3x the CPU).
        insert = _json_insert_sql(model, tuple(fields))
        for start in range(0, len(rows), _MAX_PARAMETERS):
            chunk = [row.decode() for row in rows[start : start + _MAX_PARAMETERS]]
            cursor.execute(f"{insert} FROM (VALUES {', '.join(['(%s)'] * len(chunk))})", chunk)


@lru_cache(maxsize=16)
def _json_insert_sql(model: type[Model], fields: tuple[str, ...]) -> str:
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = [model._meta.get_field(name).column for name in fields]
    names = ", ".join(map(quote, columns))
    if connection.vendor == "postgresql":
        return (
            f"INSERT INTO {table} ({names}) SELECT {names} "
            f"FROM json_populate_recordset(NULL::{table}, %s::json)"
        )

    def value(name: str, column: str) -> str:  # SQLite 3.38+: JSON columns keep JSON text
        if model._meta.get_field(name).get_internal_type() == "JSONField":
            return f"column1 -> '$.{column}'"
        return f"json_extract(column1, '$.{column}')"

    values = ", ".join(value(name, column) for name, column in zip(fields, columns, strict=True))
    return f"INSERT INTO {table} ({names}) SELECT {values}"  # FROM (VALUES (row), ...)


@lru_cache(maxsize=64)
def _converters(
    model: type[Model], fields: tuple[str, ...], encoded_json: bool
) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
    """(position, converter) of the fields whose values the database driver cannot take
    as they are; the others pass untouched."""

    postgres = connection.vendor == "postgresql"

    def converter(kind: str) -> Callable[[Any], Any] | None:
        if kind == "JSONField":
            if encoded_json:
                return _json_without_nul if postgres else None
            if postgres:
                return lambda value: _json_without_nul(fastjson.dumps(value).decode())
            return lambda value: fastjson.dumps(value).decode()
        if kind in {"CharField", "TextField"} and postgres:
            return _text_without_nul
        if kind == "DateTimeField":
            return connection.ops.adapt_datetimefield_value if postgres else sqlite_datetime
        return None

    kinds = [model._meta.get_field(name).get_internal_type() for name in fields]
    return tuple((at, c) for at, kind in enumerate(kinds) if (c := converter(kind)) is not None)


def sqlite_datetime(value: datetime | None) -> str | None:
    """An aware datetime as Django's SQLite backend stores it (naive UTC text), without
    the checks it makes per value: they took 7 of the 12 µs an L3 row cost the writer."""
    return None if value is None else str(value.astimezone(UTC).replace(tzinfo=None))


@lru_cache(maxsize=256)
def _sql(
    model: type[Model],
    fields: tuple[str, ...],
    conflict: tuple[str, ...],
    update: tuple[str, ...],
    rows: int,
) -> str:
    quote = connection.ops.quote_name

    def column(name: str) -> str:
        return quote(model._meta.get_field(name).column)

    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(map(column, fields))}) "
        f"VALUES {', '.join([row] * rows)}"
    )
    if conflict:
        updates = ", ".join(f"{column(name)} = EXCLUDED.{column(name)}" for name in update)
        sql += f" ON CONFLICT ({', '.join(map(column, conflict))}) DO UPDATE SET {updates}"
    return sql


def _text_without_nul(value: str | None) -> str | None:
    return value.replace("\x00", _REPLACEMENT) if value and "\x00" in value else value


def _json_without_nul(text: str) -> str:
    return _JSON_NUL.sub(r"\1\\ufffd", text) if "\\u0000" in text else text
