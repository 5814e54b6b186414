"""Dashboard benchmark: snapshot computation at 1M and 10M request records, push jitter
and freshness against a live server.

Rerun (from the repository root; ~15 minutes with the defaults, most of it filling 10M
records; needs Postgres at 127.0.0.1:5432 as user postgres with trust auth, ~10 GB free):

    .venv/bin/python bench/dashboard.py                          # 1M then 10M records
    .venv/bin/python bench/dashboard.py --sizes 100000 --repeats 5 --pushes 3 --freshness 3
    .venv/bin/python bench/dashboard.py --keep                   # keep the database after

What it does:

1. creates the database ``--db-name`` (dropped first if it exists; dropped again at the
   end unless ``--keep``), migrates it and routes six models, each to a primary and a
   fallback endpoint;
2. for each size, adds records until the table holds that many (SQL, ``generate_series``;
   see "synthetic records" below), rebuilds the dashboard's rollups (DashboardRollup) in
   SQL exactly as the record writer would have written them (an hour of them is checked
   against ``monitoring.rollups``' own arithmetic), and runs VACUUM ANALYZE;
3. times ``monitoring.snapshot.compute(window)`` for every window, ``--repeats`` times after
   one warm-up, with the clock frozen at the moment the synthetic history ends (so every
   repetition sees the same rows), and separately the time spent in SQL;
4. times the record writer's flushes (DashboardRollup rows, the records INSERT) for
   batches of 25 and 250 records, in a transaction that is rolled back;
5. against the largest size (its history topped up to the present first): starts the fake
   upstream and BeastMode under daphne with the real 5 s push interval, logs a staff user
   in, and opens one websocket per window: records the arrival of ``--pushes`` pushes
   (interval mean / stdev / worst deviation from 5 s, and each push's age on arrival);
   meanwhile sends a trickle of requests, and ``--freshness`` times sends one request for
   a model nothing else uses and measures how long until a push counts it.

Figures are printed as tables; the machine is shared: the load average is printed too.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import itertools
import json
import math
import os
import platform
import random
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

from django.db import connection

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

# --------------------------------------------------------------------------- synthetic records
#
# Records: one INSERT ... SELECT over generate_series per million, every column drawn from
# the distributions below (six models with a primary and a fallback endpoint, 25 service
# keys by a Zipf law, outcomes, cache kinds and tiers, classified errors with their
# messages and tips, log-normal latencies), spread uniformly over the DAYS before an anchor.
# Fields follow what gateway/exchange.py records: a cache hit or a failed request has no
# answering endpoint (""), a rejected request no cache outcome, an error its attempt log.
#
# Rollups: what monitoring.rollups.update_from would have written for those records,
# grouped in SQL.

RECORD_TABLE = "monitoring_requestrecord"
DASHBOARD_TABLE = "monitoring_dashboardrollup"
CHUNK = 1_000_000


@dataclass(frozen=True)
class Model:
    name: str
    share: float
    endpoints: tuple[str, str]  # primary, fallback
    input_per_1m: float
    output_per_1m: float
    median_ms: float


MODELS = (
    Model("gpt-4o-mini", 0.35, ("openai-eu", "azure-eu-mini"), 0.15, 0.60, 650),
    Model("gpt-4o", 0.15, ("openai-us", "azure-eu-4o"), 2.50, 10.0, 1300),
    Model("claude-sonnet", 0.15, ("anthropic", "bedrock-us"), 3.0, 15.0, 1600),
    Model("llama-3.1-70b", 0.15, ("groq", "together"), 0.59, 0.79, 450),
    Model("mistral-large", 0.10, ("mistral", "azure-eu-mistral"), 2.0, 6.0, 900),
    Model("qwen-local", 0.10, ("vllm-a", "vllm-b"), 0.0, 0.0, 350),
)
UNKNOWN_MODELS = ("gpt-5", "gpt4", "claude-3-opus", "llama3")
KEYS = tuple(
    f"svc-{name}"
    for name in (
        "checkout", "search", "support-bot", "recs", "mail-summaries", "fraud", "catalog",
        "translate", "reviews", "analytics", "onboarding", "docs-qa", "crm", "billing",
        "ops-copilot", "hr-assist", "legal", "marketing", "mobile", "partner-api", "qa",
        "research", "sales", "security", "warehouse",
    )
)  # fmt: skip
KEY_SHARES = tuple(1 / (rank + 1) for rank in range(len(KEYS)))  # Zipf: a few big callers

OUTCOMES = (
    ("success", 0.935), ("client_error", 0.02), ("auth_error", 0.01), ("upstream_error", 0.02),
    ("client_disconnected", 0.005), ("accepted", 0.008), ("internal_error", 0.002),
)  # fmt: skip
CACHE_KINDS = (("miss", 0.55), ("shadow", 0.03), ("exact", 0.30), ("semantic", 0.12))
TIERS = (("L1", 0.5), ("L2", 0.3), ("L3", 0.2))
ERROR_CLASSES = {
    "upstream_error": (
        ("upstream_server_error", 0.35), ("upstream_rate_limited", 0.25),
        ("total_timeout", 0.12), ("first_byte_timeout", 0.08), ("connection_error", 0.10),
        ("circuit_open", 0.10),
    ),
    "client_error": (
        ("model_not_found", 0.35), ("invalid_request", 0.45), ("invalid_json", 0.15),
        ("body_too_large", 0.05),
    ),
    "auth_error": (
        ("invalid_api_key", 0.55), ("model_not_allowed", 0.30), ("expired_api_key", 0.10),
        ("missing_api_key", 0.05),
    ),
    "internal_error": (("internal_error", 1.0),),
}  # fmt: skip
# (median ms, log-normal sigma) of each error class's latency.
ERROR_LATENCY = {
    "upstream_server_error": (350, 0.8), "upstream_rate_limited": (40, 0.6),
    "total_timeout": (30000, 0.02), "first_byte_timeout": (10000, 0.02),
    "connection_error": (4, 0.8), "circuit_open": (0.4, 0.4), "internal_error": (60, 1.0),
}  # fmt: skip
ERROR_MESSAGES = {
    "upstream_server_error": "Endpoint '%s' answered HTTP 502: Bad Gateway (upstream said: "
    "'The server had an error while processing your request.').",
    "upstream_rate_limited": "Endpoint '%s' answered HTTP 429: rate limit reached for "
    "requests per minute; retry after 20 s.",
    "total_timeout": "Endpoint '%s' did not finish its answer within 30 s.",
    "first_byte_timeout": "Endpoint '%s' sent nothing within 10 s of the request.",
    "connection_error": "Could not talk to endpoint '%s': connection reset by peer.",
    "circuit_open": "Model '%s': every endpoint is failing and cooling down.",
    "internal_error": "Internal error while handling the request for '%s'.",
    "model_not_found": "Model '%s' does not exist or is not enabled in BeastMode.",
    "invalid_request": "'messages' must be a non-empty list (model '%s').",
    "invalid_json": "The request body is not valid JSON%s.",
    "body_too_large": "The request body is larger than 4194304 bytes (model '%s').",
    "invalid_api_key": "The service key is not valid%s.",
    "model_not_allowed": "This service key may not use model '%s'.",
    "expired_api_key": "The service key has expired%s.",
    "missing_api_key": "No service key: send 'Authorization: Bearer <key>'%s.",
}  # fmt: skip


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''").replace("%", "%%") + "'"  # psycopg placeholders
    return repr(value)


def _array(values: Any) -> str:
    return "ARRAY[" + ", ".join(_literal(v) for v in values) + "]"


def _thresholds(weights: Any) -> str:
    """Lower bounds for width_bucket(): a uniform draw picks index i with weight i."""
    total = sum(weights)
    bounds, seen = [], 0.0
    for weight in weights:
        bounds.append(seen / total)
        seen += weight
    return "ARRAY[" + ", ".join(f"{b:.6f}" for b in bounds) + "]::float8[]"


def _pick(draw: str, table: Any) -> str:
    names, weights = zip(*table, strict=True)
    return f"({_array(names)})[width_bucket({draw}, {_thresholds(weights)})]"


def _case(column: str, mapping: dict[str, str], default: str) -> str:
    arms = " ".join(f"WHEN {_literal(k)} THEN {v}" for k, v in mapping.items())
    return f"CASE {column} {arms} ELSE {default} END"


def records_sql(tips: dict[str, list[str]], statuses: dict[str, int]) -> str:
    """INSERT of the records with ids %(first)s to %(last)s; record %(origin)s is created
    at %(start)s and each one %(step)s after the one before (in order, as a table fills)."""
    models = _array(m.name for m in MODELS)
    primary = _array(m.endpoints[0] for m in MODELS)
    fallback = _array(m.endpoints[1] for m in MODELS)
    price_in = "ARRAY[" + ", ".join(str(m.input_per_1m) for m in MODELS) + "]::float8[]"
    price_out = "ARRAY[" + ", ".join(str(m.output_per_1m) for m in MODELS) + "]::float8[]"
    median = "ARRAY[" + ", ".join(str(m.median_ms) for m in MODELS) + "]::float8[]"
    error_class = _case(
        "outcome", {o: _pick("r_err", table) for o, table in ERROR_CLASSES.items()}, "''"
    )
    err_median = _case("error_class", {k: str(v[0]) for k, v in ERROR_LATENCY.items()}, "0.3")
    err_sigma = _case("error_class", {k: str(v[1]) for k, v in ERROR_LATENCY.items()}, "0.4")
    message_arg = _case(
        "error_class",
        {c: "primary_ep" for c in ERROR_MESSAGES if c in dict(ERROR_CLASSES["upstream_error"])}
        | {"circuit_open": "model", "invalid_json": "''", "invalid_api_key": "''",
           "expired_api_key": "''", "missing_api_key": "''"},
        "model",
    )  # fmt: skip
    messages = {c: f"format({_literal(t)}, {message_arg})" for c, t in ERROR_MESSAGES.items()}
    message = _case("error_class", messages, "''")
    tips_json = _case(
        "error_class", {c: _literal(json.dumps(t)) + "::jsonb" for c, t in tips.items()},
        "'[]'::jsonb",
    )  # fmt: skip
    status = _case(
        "outcome",
        {"success": "200", "accepted": "202", "client_disconnected": "499"},
        _case("error_class", {c: str(s) for c, s in statuses.items()}, "500"),
    )
    return f"""
INSERT INTO {RECORD_TABLE} (
    id, request_id, created_at, method, path, service_key_id, service_key_name, model,
    endpoint, stream, is_async_job, attempts, fallbacks, attempt_log, outcome, status_code,
    latency_ms, upstream_latency_ms, overhead_ms, tokens_in, tokens_out, cost_usd, is_warming,
    cache_outcome, cache_tier, cache_similarity, cache_entry_key, saved_tokens_in,
    saved_tokens_out, cost_saved_usd, error_class, error_message, error_tips)
SELECT
    id, 'req_' || md5(id::text || r_err::text), created_at, 'POST', '/v1/chat/completions',
    CASE WHEN key_name = '' THEN NULL ELSE k END, key_name, model, endpoint, stream,
    outcome = 'accepted', jsonb_array_length(attempt_log),
    CASE WHEN jsonb_array_length(attempt_log) > 1 THEN 1 ELSE 0 END, attempt_log, outcome,
    {status}, latency_ms,
    CASE WHEN served THEN round((latency_ms * 0.97)::numeric, 3) ELSE 0 END,
    CASE WHEN served THEN round((latency_ms * 0.03)::numeric, 3) ELSE latency_ms END,
    CASE WHEN served THEN tokens_in ELSE 0 END, CASE WHEN served THEN tokens_out ELSE 0 END,
    CASE WHEN served THEN (tokens_in * ({price_in})[m] + tokens_out * ({price_out})[m]) / 1e6
         ELSE 0 END,
    is_warming, cache_outcome, cache_tier,
    CASE WHEN cache_outcome = 'semantic' THEN 0.92 + r_tok2 * 0.08
         WHEN cache_outcome = 'shadow' THEN 0.90 + r_tok2 * 0.02 END,
    CASE WHEN hit THEN md5(model || (id %% 5000)::text) ELSE '' END,
    CASE WHEN hit THEN tokens_in ELSE 0 END, CASE WHEN hit THEN tokens_out ELSE 0 END,
    CASE WHEN hit THEN (tokens_in * ({price_in})[m] + tokens_out * ({price_out})[m]) / 1e6
         ELSE 0 END,
    error_class, {message}, {tips_json}
FROM (
    SELECT *,
        round((CASE
            WHEN hit THEN (CASE cache_tier WHEN 'L1' THEN 0.35 WHEN 'L2' THEN 1.4 ELSE 3.5 END
                           + CASE WHEN cache_outcome = 'semantic' THEN 5 ELSE 0 END)
                          * exp(0.35 * z)
            WHEN served THEN ({median})[m] * CASE WHEN fell_back THEN 2.5 ELSE 1 END * exp(0.55 * z)
            WHEN outcome = 'client_disconnected' THEN 2000 * exp(0.8 * z)
            WHEN outcome = 'accepted' THEN 1.5 * exp(0.3 * z)
            ELSE {err_median} * exp({err_sigma} * z)
        END)::numeric, 3)::float8 AS latency_ms,
        CASE
            WHEN served AND fell_back THEN jsonb_build_array(
                jsonb_build_object('endpoint', primary_ep, 'error_class',
                                   'upstream_server_error', 'upstream_status', 502,
                                   'latency_ms', 120),
                jsonb_build_object('endpoint', fallback_ep, 'error_class', NULL,
                                   'upstream_status', 200, 'latency_ms', 900))
            WHEN served THEN jsonb_build_array(
                jsonb_build_object('endpoint', primary_ep, 'error_class', NULL,
                                   'upstream_status', 200, 'latency_ms', 600))
            WHEN outcome = 'upstream_error' AND error_class <> 'circuit_open' THEN
                jsonb_build_array(
                    jsonb_build_object('endpoint', primary_ep, 'error_class', error_class,
                                       'upstream_status', 502, 'latency_ms', 300),
                    jsonb_build_object('endpoint', fallback_ep, 'error_class', error_class,
                                       'upstream_status', 502, 'latency_ms', 300))
            ELSE '[]'::jsonb
        END AS attempt_log
    FROM (
        SELECT *,
            outcome = 'success' AND cache_outcome IN ('miss', 'shadow') AS served,
            CASE WHEN outcome = 'success' AND cache_outcome IN ('miss', 'shadow')
                 THEN CASE WHEN fell_back THEN fallback_ep ELSE primary_ep END
                 ELSE '' END AS endpoint,
            CASE WHEN error_class = 'model_not_found'
                      THEN ({_array(UNKNOWN_MODELS)})[1 + floor(r_tok * {len(UNKNOWN_MODELS)})]
                 WHEN error_class = 'invalid_json' THEN ''
                 ELSE ({models})[m] END AS model,
            CASE WHEN error_class IN ('invalid_api_key', 'missing_api_key', 'invalid_json')
                      OR is_warming THEN ''
                 ELSE ({_array(KEYS)})[k] END AS key_name,
            CASE WHEN hit THEN {_pick("r_tier", TIERS)} ELSE '' END AS cache_tier
        FROM (
            SELECT *,
                cache_outcome IN ('exact', 'semantic') AS hit,
                outcome = 'success' AND cache_outcome = 'miss' AND r_warm < 0.005 AS is_warming,
                {error_class} AS error_class
            FROM (
                SELECT *,
                    ({primary})[m] AS primary_ep, ({fallback})[m] AS fallback_ep,
                    CASE WHEN outcome IN ('success', 'client_disconnected')
                              THEN {_pick("r_cache", CACHE_KINDS)}
                         WHEN outcome IN ('upstream_error', 'internal_error') THEN 'miss'
                         ELSE '' END AS cache_outcome,
                    40 + floor(r_tok * r_tok * 3000)::int AS tokens_in,
                    10 + floor(r_tok2 * 700)::int AS tokens_out
                FROM (
                    SELECT g AS id,
                        %(start)s::timestamptz + (g - %(origin)s + random()) * %(step)s::interval
                            AS created_at,
                        width_bucket(random(), {_thresholds([m.share for m in MODELS])}) AS m,
                        width_bucket(random(), {_thresholds(KEY_SHARES)}) AS k,
                        {_pick("random()", OUTCOMES)} AS outcome,
                        random() < 0.08 AS fell_back, random() < 0.3 AS stream,
                        random() AS r_cache, random() AS r_tier, random() AS r_err,
                        random() AS r_tok, random() AS r_tok2, random() AS r_warm,
                        sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS z
                    FROM generate_series(%(first)s, %(last)s) AS g
                ) AS draws
            ) AS with_cache
        ) AS with_errors
    ) AS with_names
) AS with_latency
"""


# monitoring.histogram.bucket_of in SQL: ceil(log_1.1(latency / 0.01) - 1e-9), 0 at or below.
_BIN = "CASE WHEN latency_ms <= 0.01 THEN 0 ELSE ceil(ln(latency_ms / 0.01) / ln(1.1) - 1e-9) END"


def _bucket(bucket_s: int) -> str:
    """monitoring.rollups.bucket_start in SQL."""
    return f"to_timestamp(floor(extract(epoch FROM created_at) / {bucket_s}) * {bucket_s})"


def dashboard_rollups_sql(bucket_s: int) -> str:
    """INSERT of the DashboardRollup rows (totals and pairs, dense histograms) of every
    record created at or after %(since)s: what monitoring.rollups.dashboard_aggregate makes."""
    counts = {
        "errors": "outcome IN ('internal_error', 'upstream_error')",
        "rejected": "outcome IN ('auth_error', 'client_error')",
        "looked_up": "cache_outcome <> ''",
        "exact_hits": "cache_outcome = 'exact'",
        "semantic_hits": "cache_outcome = 'semantic'",
        "l1_hits": "cache_tier = 'L1'",
        "l2_hits": "cache_tier = 'L2'",
        "l3_hits": "cache_tier = 'L3'",
    }
    names = ", ".join(counts)
    row = "bucket_start, is_total, model, endpoint"
    # A dense histogram as text: each bucket's count, preceded by a 0 for every empty
    # bucket since the previous one: [first, n_first, 0, 0, n_next, ...].
    return f"""
INSERT INTO {DASHBOARD_TABLE} (
    bucket_s, {row}, requests, {names}, cost_usd, cost_saved_usd, histogram)
SELECT {bucket_s}, {row}, sum(n), {", ".join(f"sum({name})" for name in counts)},
    sum(cost_usd), sum(cost_saved_usd),
    ('[' || min(bin) || ',' || string_agg(piece, ',' ORDER BY bin) || ']')::jsonb
FROM (
    SELECT *, repeat('0,', bin - coalesce(lag(bin) OVER (PARTITION BY {row} ORDER BY bin),
                                          bin - 1) - 1) || n AS piece
    FROM (
        SELECT bucket_start, GROUPING(model, endpoint) = 3 AS is_total,
            CASE WHEN GROUPING(model) = 1 THEN '' ELSE model END AS model,
            CASE WHEN GROUPING(endpoint) = 1 THEN '' ELSE endpoint END AS endpoint,
            bin, count(*) AS n,
            {", ".join(f"count(*) FILTER (WHERE {t}) AS {name}" for name, t in counts.items())},
            sum(cost_usd) AS cost_usd, sum(cost_saved_usd) AS cost_saved_usd
        FROM (
            SELECT *, {_bucket(bucket_s)} AS bucket_start, ({_BIN})::int AS bin
            FROM {RECORD_TABLE}
            WHERE created_at >= %(since)s AND NOT is_warming
        ) AS binned
        GROUP BY bucket_start, bin, GROUPING SETS ((model, endpoint), ())
    ) AS per_bin
) AS pieces
GROUP BY {row}
"""


def _execute(sql: str, params: dict[str, Any] | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _scalar(sql: str, params: Any = None) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def record_count() -> int:
    return int(_scalar(f"SELECT count(*) FROM {RECORD_TABLE}"))


def add_records(
    count: int, *, anchor: datetime, days: float, bulk: bool = True, progress: Any = print
) -> dict[str, float]:
    """Add `count` records (ids after the current largest); in `bulk`, the secondary indexes
    are dropped first and built again after. Returns the seconds spent inserting, indexing."""
    from beastmode.lib.errors import KINDS

    tips = {name: list(kind.tips) for name, kind in KINDS.items()}
    statuses = {name: kind.status for name, kind in KINDS.items()}
    sql = records_sql(tips, statuses)
    first = int(_scalar(f"SELECT coalesce(max(id), 0) FROM {RECORD_TABLE}")) + 1
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


# --------------------------------------------------------------------------- database


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


# --------------------------------------------------------------------------- snapshot timing


@dataclass
class WindowTiming:
    size: int
    window: str
    rollup_rows: int
    first_ms: float
    samples_ms: list[float]
    sql_ms: list[float]

    @property
    def p50_ms(self) -> float:
        return percentile(self.samples_ms, 0.50)

    @property
    def p95_ms(self) -> float:
        return percentile(self.samples_ms, 0.95)

    @property
    def max_ms(self) -> float:
        return max(self.samples_ms)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@contextmanager
def sql_timer() -> Iterator[list[float]]:
    """Seconds spent executing SQL (in the database and the driver) inside the block."""
    spent = [0.0]

    def timed(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            spent[0] += time.perf_counter() - started

    with connection.execute_wrapper(timed):
        yield spent


def time_snapshots(size: int, anchor: datetime, repeats: int) -> list[WindowTiming]:
    from django.utils import timezone

    from monitoring import snapshot

    results = []
    with mock.patch.object(timezone, "now", return_value=anchor):
        for window, (length_s, bucket_s) in snapshot.WINDOWS.items():
            since = anchor - timedelta(seconds=length_s)
            rows = snapshot.window_rows(since, anchor, bucket_s).count()
            started = time.perf_counter()
            snapshot.compute(window)
            first_ms = (time.perf_counter() - started) * 1000
            samples, sql = [], []
            for _ in range(repeats):
                with sql_timer() as spent:
                    started = time.perf_counter()
                    snapshot.compute(window)
                    samples.append((time.perf_counter() - started) * 1000)
                sql.append(spent[0] * 1000)
            timing = WindowTiming(size, window, rows, first_ms, samples, sql)
            results.append(timing)
            print(
                f"  {window:>3}: P50 {timing.p50_ms:8.1f} ms  P95 {timing.p95_ms:8.1f} ms  "
                f"max {timing.max_ms:8.1f} ms  (first {first_ms:.1f} ms, SQL P50 "
                f"{percentile(sql, 0.5):.1f} ms, {rows:,} rollup rows)",
                flush=True,
            )
    return results


# --------------------------------------------------------------------------- record flushes


@dataclass
class FlushTiming:
    batch: int
    dashboard_ms: list[float]
    records_ms: list[float]


def time_flushes(anchor: datetime, batch: int, flushes: int) -> FlushTiming:
    """What the record writer spends per flush on each table, for `flushes` batches of
    `batch` records 0.25 s apart (its default interval), all rolled back afterwards. The
    records are copies of stored ones, moved to just after the anchor."""
    from django.db import transaction

    from beastmode.lib.rows import write_rows
    from monitoring import recorder, rollups
    from monitoring.models import RequestRecord

    fields = [f.attname for f in RequestRecord._meta.concrete_fields if not f.primary_key]
    stored = list(RequestRecord.objects.order_by("-id").values(*fields)[: batch * flushes])
    timing = FlushTiming(batch, [], [])
    with transaction.atomic():
        for n in range(flushes):
            records = stored[n * batch : (n + 1) * batch]
            for i, record in enumerate(records):
                record["created_at"] = anchor + timedelta(seconds=60 + (n + i / batch) * 0.25)
            started = time.perf_counter()
            rollups.update_from(records)
            dashboard = time.perf_counter()
            columns = recorder._defaults()  # every column with its default, as the writer
            rows = [[r.get(name, default) for name, default in columns.items()] for r in records]
            write_rows(RequestRecord, list(columns), rows)
            done = time.perf_counter()
            timing.dashboard_ms.append((dashboard - started) * 1000)
            timing.records_ms.append((done - dashboard) * 1000)
        transaction.set_rollback(True)
    return timing


# --------------------------------------------------------------------------- live server

HOST = "127.0.0.1"
FRESH_MODEL = "bench-fresh"  # only the freshness probes use it: its count moves with them


class Processes:
    """Subprocesses started by this run, each leading its own session; stopped by group id."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str], port: int) -> None:
        log = (self.log_dir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.started[name] = process
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.log_tail(name)}")
            with suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not listen on :{port}: {self.log_tail(name)}")

    def log_tail(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop_all(self) -> None:
        for process in self.started.values():
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.started.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def chat(port: int, key: str, model: str, content: str) -> int:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": content}]})
        conn.request("POST", "/v1/chat/completions", body=body, headers={
            "Authorization": f"Bearer {key}", "Content-Type": "application/json",
        })  # fmt: skip
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@dataclass
class Push:
    arrived: float  # time.monotonic()
    age_s: float  # arrival (wall clock) minus the snapshot's generated_at
    fresh_requests: int  # requests of FRESH_MODEL in the snapshot


class Listener(threading.Thread):
    """One staff dashboard on one window: every push it receives, timestamped."""

    def __init__(self, port: int, session: str, window: str) -> None:
        super().__init__(daemon=True, name=f"ws-{window}")
        self.port, self.session, self.window = port, session, window
        self.pushes: list[Push] = []
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from websockets.sync.client import connect

        try:
            with connect(
                f"ws://{HOST}:{self.port}/ws/monitoring/", origin=f"http://{HOST}:{self.port}",
                proxy=None, additional_headers={"Cookie": f"sessionid={self.session}"},
            ) as connection:  # fmt: skip
                connection.send(json.dumps({"window": self.window}))
                self._receive(connection)
        except BaseException as exc:
            self.error = exc
            raise

    def _receive(self, connection: Any) -> None:
        first = True
        while not self.stopping.is_set():
            try:
                message = json.loads(connection.recv(timeout=0.5))
            except TimeoutError:
                continue
            arrived, now = time.monotonic(), time.time()
            if message["window"] != self.window or first:
                # The snapshots sent on connect and on switching are not pushes.
                first = first and message["window"] != self.window
                continue
            generated = datetime.fromisoformat(message["generated_at"]).timestamp()
            fresh = sum(r["requests"] for r in message["by_model"] if r["model"] == FRESH_MODEL)
            with self.changed:
                self.pushes.append(Push(arrived, now - generated, fresh))
                self.changed.notify_all()

    def wait_for(self, check: Any, timeout_s: float) -> Push | None:
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while True:
                found = next((p for p in self.pushes if check(p)), None)
                if found or time.monotonic() > deadline:
                    return found
                self.changed.wait(deadline - time.monotonic())


class Trickle(threading.Thread):
    """Background traffic on the demo model: records being written while pushes go out."""

    def __init__(self, port: int, key: str, rate_per_s: float) -> None:
        super().__init__(daemon=True, name="trickle")
        self.port, self.key, self.rate_per_s = port, key, rate_per_s
        self.stopping = threading.Event()
        self.sent = 0

    def run(self) -> None:
        while not self.stopping.wait(1 / self.rate_per_s):
            # One prompt in four repeats an earlier one: exact cache hits among the misses.
            n = self.sent // 4 if self.sent % 4 == 0 else self.sent
            with suppress(OSError):
                chat(self.port, self.key, "demo", f"trickle {n}")
            self.sent += 1


@dataclass
class LiveFigures:
    intervals_s: dict[str, list[float]]
    ages_s: dict[str, list[float]]
    freshness_s: list[float]
    in_next_push: int
    trickle_sent: int
    load: tuple[float, float]


def measure_live(args: argparse.Namespace, env: dict[str, str], work_dir: Path) -> LiveFigures:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from monitoring.snapshot import WINDOWS
    from routing.importer import import_models

    procs = Processes(work_dir)
    listeners: list[Listener] = []
    trickle = None
    try:
        upstream_port = free_port()
        procs.start(
            "upstream",
            [sys.executable, "-m", "devtools.fake_upstream", "--port", str(upstream_port)],
            env,
            upstream_port,
        )
        upstream_url = f"http://{HOST}:{upstream_port}/v1"
        done = subprocess.run(
            [sys.executable, "manage.py", "load_demo", "--upstream-url", upstream_url],
            cwd=REPO, env=env, capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
        key = done.stdout.strip().splitlines()[-1]
        import_models(
            f"models:\n  - name: {FRESH_MODEL}\n    endpoints:\n      - name: demo-upstream\n"
            f"        provider: openai\n        base_url: {upstream_url}\n"
            "        model: demo-echo\n"
        )
        browser = Client()
        browser.force_login(get_user_model().objects.get(username="admin"))
        session = browser.cookies["sessionid"].value

        port = free_port()
        procs.start(
            "beastmode",
            [str(VENV_BIN / "daphne"), "-v", "0", "-b", HOST, "-p", str(port),
             "beastmode.asgi:application"],
            env,
            port,
        )  # fmt: skip
        if chat(port, key, FRESH_MODEL, "warm-up") != 200:
            raise RuntimeError(f"gateway did not answer: {procs.log_tail('beastmode')}")
        trickle = Trickle(port, key, args.trickle_rate)
        trickle.start()
        listeners = [Listener(port, session, window) for window in WINDOWS]
        for listener in listeners:
            listener.start()
        freshness_listener = listeners[0]  # 15m: computed first in every tick
        load_before = os.getloadavg()[0]
        freshness, in_next = [], 0
        rng = random.Random(7)
        for trial in range(args.freshness):
            time.sleep(rng.uniform(0, 5))  # any phase of the push cycle
            before = (
                freshness_listener.pushes[-1].fresh_requests if freshness_listener.pushes else 0
            )
            status = chat(port, key, FRESH_MODEL, f"fresh {trial} {secrets.token_hex(4)}")
            answered = time.monotonic()
            if status != 200:
                raise RuntimeError(f"freshness probe answered {status}")
            push = freshness_listener.wait_for(
                lambda p, b=before, t=answered: p.arrived > t and p.fresh_requests > b, 30
            )
            if push is None:
                raise RuntimeError(
                    f"no push reflected a request within 30 s ({freshness_listener.error!r})"
                )
            first_after = next(p for p in freshness_listener.pushes if p.arrived > answered)
            in_next += first_after is push
            freshness.append(push.arrived - answered)
            print(f"  freshness probe {trial + 1}: {freshness[-1]:.2f} s", flush=True)
        wanted = args.pushes + 1  # intervals need one more push
        deadline = time.monotonic() + 5 * wanted + 15
        while any(len(lst.pushes) < wanted for lst in listeners) and time.monotonic() < deadline:
            if failed := next((lst for lst in listeners if lst.error), None):
                raise RuntimeError(f"dashboard {failed.window} failed: {failed.error!r}")
            time.sleep(0.5)
        load = (load_before, os.getloadavg()[0])
        intervals = {
            lst.window: [b.arrived - a.arrived for a, b in itertools.pairwise(lst.pushes)]
            for lst in listeners
        }
        ages = {lst.window: [p.age_s for p in lst.pushes] for lst in listeners}
        return LiveFigures(intervals, ages, freshness, in_next, trickle.sent, load)
    finally:
        if trickle is not None:
            trickle.stopping.set()
        for listener in listeners:
            listener.stopping.set()
        for listener in listeners:
            listener.join(timeout=5)
        procs.stop_all()


# --------------------------------------------------------------------------- report

TARGET_SNAPSHOT_MS = 50.0
PUSH_INTERVAL_S = 5.0


def print_snapshot_table(timings: list[WindowTiming], repeats: int) -> None:
    print(f"\nSnapshot computation (monitoring.snapshot.compute), {repeats} repetitions each:\n")
    print(
        "| records | window | rollup rows read | P50 ms | P95 ms | max ms | first ms | SQL P50 ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for t in timings:
        print(
            f"| {t.size:,} | {t.window} | {t.rollup_rows:,} | {t.p50_ms:.1f} | {t.p95_ms:.1f} | "
            f"{t.max_ms:.1f} | {t.first_ms:.1f} | {percentile(t.sql_ms, 0.5):.1f} |"
        )
    largest = max(t.size for t in timings)
    worst = max(t.p95_ms for t in timings if t.size == largest)
    verdict = "met" if worst <= TARGET_SNAPSHOT_MS else "NOT met"
    print(
        f"\nTarget ≤ {TARGET_SNAPSHOT_MS:.0f} ms at {largest:,} records: {verdict} "
        f"(worst window P95 {worst:.1f} ms)"
    )


def print_flushes(flushes: list[FlushTiming]) -> None:
    print("\nRecord writer, time per flush inside its transaction (P50 / max ms):\n")
    print("| records per flush | DashboardRollup | records INSERT |")
    print("|---|---|---|")
    for f in flushes:
        cells = [
            f"{percentile(ms, 0.5):.1f} / {max(ms):.1f}" for ms in (f.dashboard_ms, f.records_ms)
        ]
        print(f"| {f.batch} | {' | '.join(cells)} |")


def print_live(live: LiveFigures) -> None:
    print(
        f"\nLive server (daphne, one process, in-memory channel layer, push every "
        f"{PUSH_INTERVAL_S:g} s; trickle {live.trickle_sent} requests; load average "
        f"{live.load[0]:.2f} → {live.load[1]:.2f}):\n"
    )
    print("| window | pushes | interval mean s | stdev ms | max deviation from 5 s ms | "
          "age on arrival P50 / max ms |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for window, intervals in live.intervals_s.items():
        ages = live.ages_s[window]
        deviation = max(abs(i - PUSH_INTERVAL_S) for i in intervals) * 1000
        stdev = statistics.stdev(intervals) * 1000 if len(intervals) > 1 else 0.0
        print(
            f"| {window} | {len(intervals) + 1} | {statistics.mean(intervals):.3f} | "
            f"{stdev:.1f} | {deviation:.1f} | "
            f"{percentile(ages, 0.5) * 1000:.1f} / {max(ages) * 1000:.1f} |"
        )
    fresh = live.freshness_s
    print(
        f"\nFreshness (response received → first push counting the request), "
        f"{len(fresh)} probes: median {statistics.median(fresh):.2f} s, max {max(fresh):.2f} s; "
        f"in the first push after the response: {live.in_next_push}/{len(fresh)}"
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="record counts, ascending")
    parser.add_argument("--days", type=float, default=7.0, help="history the records span")
    parser.add_argument("--repeats", type=int, default=30, help="timed computations per window")
    parser.add_argument("--pushes", type=int, default=8, help="push intervals per window")
    parser.add_argument("--freshness", type=int, default=10, help="freshness probes")
    parser.add_argument("--trickle-rate", type=float, default=10.0, help="background req/s")
    parser.add_argument("--no-live", action="store_true", help="skip the live-server part")
    parser.add_argument("--db-name", default="beastmode_bench_dash")
    parser.add_argument("--db-host", default="127.0.0.1")
    parser.add_argument("--db-port", default="5432")
    parser.add_argument("--db-user", default="postgres")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", action="store_true",
                        help="use the kept database as it is (no fill; its newest record is "
                             "the anchor)")  # fmt: skip
    args = parser.parse_args(argv)
    args.sizes = sorted(int(size) for size in args.sizes.split(",") if size)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    given = list(argv) if argv is not None else sys.argv[1:]
    print(f"BeastMode dashboard benchmark: sizes {', '.join(f'{s:,}' for s in args.sizes)}, "
          f"{args.days:g} days")  # fmt: skip
    free_gib = shutil.disk_usage(REPO).free / 2**30
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, python "
          f"{platform.python_version()}; free disk {free_gib:.0f} GiB")  # fmt: skip
    work_dir = Path(tempfile.mkdtemp(prefix="beastmode-bench-dash-"))
    env = server_env(args, work_dir)
    if not args.reuse:
        recreate_database(args)
    setup_django(env)
    timings: list[WindowTiming] = []
    try:
        if args.reuse:
            anchor = _scalar(f"SELECT max(created_at) FROM {RECORD_TABLE}")
            size = record_count()
            print(f"\n== {size:,} records (kept database; {table_sizes()}) ==", flush=True)
            timings += time_snapshots(size, anchor, args.repeats)
        else:
            migrate_and_route()
            anchor = datetime.now(UTC).replace(microsecond=0)
            for size in args.sizes:
                print(f"\n== {size:,} records ==", flush=True)
                spent = add_records(size - record_count(), anchor=anchor, days=args.days)
                since = anchor - timedelta(days=args.days + 1)
                rollup_s = rebuild_rollups(since=since)
                vacuum_s = vacuum_analyze()
                print(
                    f"  filled: insert {spent['insert_s']:.0f} s, indexes "
                    f"{spent['index_s']:.0f} s, rollups {rollup_s:.0f} s, vacuum {vacuum_s:.0f} s; "
                    f"{table_sizes()}",
                    flush=True,
                )
                hour = anchor.replace(minute=0, second=0) - timedelta(hours=5)
                compared, mismatches = verify_rollups(hour=hour)
                print(f"  rollups of {hour:%H}:00 checked against monitoring.rollups: "
                      f"{compared:,} rows, {mismatches} mismatches", flush=True)  # fmt: skip
                timings += time_snapshots(size, anchor, args.repeats)
        print_snapshot_table(timings, args.repeats)
        print_flushes([time_flushes(anchor, batch, flushes=20) for batch in (25, 250)])
        if not args.no_live:
            # Top the history up to the present, so the live windows are full.
            now = datetime.now(UTC)
            rate_per_s = record_count() / (args.days * 86400)
            gap_s = (now - anchor).total_seconds()
            add_records(int(rate_per_s * gap_s), anchor=now, days=gap_s / 86400, bulk=False,
                        progress=lambda _: None)  # fmt: skip
            rebuild_rollups(since=anchor)
            print(f"\n== live server ({record_count():,} records, history topped up "
                  f"by {gap_s:.0f} s) ==", flush=True)  # fmt: skip
            print_live(measure_live(args, env, work_dir))
    finally:
        if args.keep:
            print(f"\ndatabase {args.db_name} kept (--reuse to time it again)")
        else:
            drop_database(args)
        shutil.rmtree(work_dir, ignore_errors=True)
    print(f"\nRerun:\n  {shlex.join(['.venv/bin/python', 'bench/dashboard.py', *given])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
