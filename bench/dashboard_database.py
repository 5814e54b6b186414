"""The bench database of bench/dashboard.py: created and dropped, Django set up against it,
migrated and routed, filled with the synthetic records of bench/dashboard_synthetic.py, and its
rollups rebuilt (and checked against monitoring.rollups' own arithmetic) and analysed.
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import secrets
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dashboard_synthetic import (
    DASHBOARD_TABLE,
    MODELS,
    RECORD_TABLE,
    dashboard_rollups_sql,
    records_sql,
)
from django.db import connection

REPO = Path(__file__).resolve().parent.parent
CHUNK = 1_000_000


def _execute(sql: str, params: dict[str, Any] | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def scalar(sql: str, params: Any = None) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def record_count() -> int:
    return int(scalar(f"SELECT count(*) FROM {RECORD_TABLE}"))


def add_records(
    count: int, *, anchor: datetime, days: float, bulk: bool = True, progress: Any = print
) -> dict[str, float]:
    """Add `count` records (ids after the current largest); in `bulk`, the secondary indexes
    are dropped first and built again after. Returns the seconds spent inserting, indexing."""
    from beastmode.lib.errors import KINDS

    tips = {name: list(kind.tips) for name, kind in KINDS.items()}
    statuses = {name: kind.status for name, kind in KINDS.items()}
    sql = records_sql(tips, statuses)
    first = int(scalar(f"SELECT coalesce(max(id), 0) FROM {RECORD_TABLE}")) + 1
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s "
            "AND indexname NOT LIKE %s",
            [RECORD_TABLE, "%_pkey"],
        )
        indexes = cursor.fetchall() if bulk else []
    for name, _ in indexes:
        _execute(f'DROP INDEX "{name}"')
    _execute("SET synchronous_commit = off")
    _execute("SET maintenance_work_mem = '512MB'")
    started = time.perf_counter()
    times = {
        "origin": first,
        "start": anchor - timedelta(days=days),
        "step": timedelta(days=days) / max(1, count),
    }
    last = first - 1
    for chunk_first in range(first, first + count, CHUNK):
        last = min(chunk_first + CHUNK, first + count) - 1
        _execute(sql, {"first": chunk_first, "last": last, **times})
        progress(f"  records {last:,} ({time.perf_counter() - started:.0f} s)")
    inserted = time.perf_counter()
    for name, definition in indexes:
        _execute(definition)
        progress(f"  index {name} ({time.perf_counter() - inserted:.0f} s)")
    _execute(f"SELECT setval(pg_get_serial_sequence('{RECORD_TABLE}', 'id'), %s)", [last])
    _execute("RESET synchronous_commit")
    return {"insert_s": inserted - started, "index_s": time.perf_counter() - inserted}


def rebuild_rollups(*, since: datetime) -> float:
    """Replace the DashboardRollup rows of every bucket that holds records from `since` on
    (from the start of since's minute, hour, day); returns the seconds spent."""
    started = time.perf_counter()
    _execute("SET work_mem = '256MB'")
    for bucket_s in (60, 3600, 86400):
        start = datetime.fromtimestamp(since.timestamp() // bucket_s * bucket_s, tz=UTC)
        _execute(
            f"DELETE FROM {DASHBOARD_TABLE} WHERE bucket_s = %(size)s "
            "AND bucket_start >= %(since)s",
            {"size": bucket_s, "since": start},
        )
        _execute(dashboard_rollups_sql(bucket_s), {"since": start})
    _execute("RESET work_mem")
    return time.perf_counter() - started


def vacuum_analyze() -> float:
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for table in (RECORD_TABLE, DASHBOARD_TABLE):
            cursor.execute(f"VACUUM ANALYZE {table}")
    return time.perf_counter() - started


def verify_rollups(*, hour: datetime) -> tuple[int, int]:
    """Aggregate one hour of records with monitoring.rollups' own code and compare with the
    minute and hour DashboardRollup rows made in SQL. Returns (rows compared, mismatches)."""
    from monitoring import rollups
    from monitoring.models import DashboardRollup

    fields = ["created_at", "model", "endpoint", "outcome", "cache_outcome", "cache_tier",
              "is_warming", "cost_usd", "cost_saved_usd", "latency_ms"]  # fmt: skip
    in_hour = {"bucket_start__gte": hour, "bucket_start__lt": hour + timedelta(hours=1)}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(fields)} "
            f"FROM {RECORD_TABLE} WHERE created_at >= %s AND created_at < %s",
            [hour, hour + timedelta(hours=1)],
        )
        records = [dict(zip(fields, row, strict=True)) for row in cursor.fetchall()]

    expected = {
        key: (*dash.counts.values(), rollups.dense_of(dash.histogram))
        for key, dash in rollups.dashboard_aggregate(records).items()
        if key[0] in (60, 3600)
    }
    stored = {
        rollups._dashboard_key(row): (
            *(getattr(row, name) for name in rollups.COUNTS), row.histogram,
        )
        for row in DashboardRollup.objects.filter(bucket_s__in=(60, 3600), **in_hour)
    }  # fmt: skip
    mismatches = len(set(expected) ^ set(stored))
    for key in set(expected) & set(stored):
        mismatches += not _same(expected[key], stored[key])
    return len(expected), mismatches


def _same(want: tuple[Any, ...], got: tuple[Any, ...]) -> bool:
    """Equal, floats to 1e-9 (SQL adds them up in another order)."""
    return all(
        math.isclose(w, g, rel_tol=1e-9, abs_tol=1e-9) if isinstance(w, float) else w == g
        for w, g in zip(want, got, strict=True)
    )


def admin_dsn(args: argparse.Namespace, database: str = "postgres") -> str:
    return f"postgresql://{args.db_user}@{args.db_host}:{args.db_port}/{database}"


def recreate_database(args: argparse.Namespace) -> None:
    import psycopg

    with psycopg.connect(admin_dsn(args), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.db_name}"')


def drop_database(args: argparse.Namespace) -> None:
    import psycopg

    connection.close()
    with psycopg.connect(admin_dsn(args), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')


def server_env(args: argparse.Namespace, var_dir: Path) -> dict[str, str]:
    """The environment of this process's Django and of the server it starts: same database,
    same secrets (the staff session made here must be valid there), no Redis."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CELERY_BROKER_URL")}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "beastmode.settings",
            "DATABASE_URL": admin_dsn(args, args.db_name).replace("postgresql://", "postgres://"),
            "BEASTMODE_VAR_DIR": str(var_dir),
            "BEASTMODE_SECRET_KEY": "bench-" + secrets.token_urlsafe(32),
            "BEASTMODE_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "BEASTMODE_MONITORING_PUSH_INTERVAL_S": "5",
            "LOG_LEVEL": "WARNING",
        }
    )
    return env


def setup_django(env: dict[str, str]) -> None:
    import django

    os.environ.update(env)
    for name in ("REDIS_URL", "CELERY_BROKER_URL"):
        os.environ.pop(name, None)
    sys.path.insert(0, str(REPO))
    django.setup()


def migrate_and_route() -> None:
    """Schema, and routes for the synthetic models (the endpoints panel lists them)."""
    from django.core.management import call_command

    from routing.importer import import_models

    call_command("migrate", verbosity=0)
    lines = ["models:"]
    for model in MODELS:
        lines += [f"  - name: {model.name}", "    endpoints:"]
        for endpoint in model.endpoints:
            lines += [
                f"      - name: {endpoint}",
                "        provider: openai",
                "        base_url: http://127.0.0.1:9/v1",  # never called
                f"        model: {model.name}",
                f"        input_cost_per_1m: {model.input_per_1m}",
                f"        output_cost_per_1m: {model.output_per_1m}",
            ]
    import_models("\n".join(lines) + "\n")


def table_sizes() -> str:
    sizes = []
    with connection.cursor() as cursor:
        for table in (RECORD_TABLE, DASHBOARD_TABLE):
            cursor.execute(
                f"SELECT pg_size_pretty(pg_total_relation_size(%s)), count(*) FROM {table}",
                [table],
            )
            size, rows = cursor.fetchone()
            sizes.append(f"{table.removeprefix('monitoring_')} {rows:,} rows, {size}")
    return "; ".join(sizes)
