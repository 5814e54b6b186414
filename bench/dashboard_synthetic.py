"""Synthetic request records and their dashboard rollups, written as SQL for bench/dashboard.py.

Millions of records are needed in minutes: Postgres builds them itself (INSERT ... SELECT over
generate_series) far faster than the ORM could, and groups their rollups the same way. Only the
SQL text is made here; bench/dashboard_database.py runs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

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
    record created at or after %(since)s: what monitoring.rollups.dashboard_aggregate makes
    (models that are not configured counted as `unknown`)."""
    from monitoring.labels import UNKNOWN
    from monitoring.models import ERROR_OUTCOMES, REJECTED_OUTCOMES

    def listed(values: Any) -> str:
        return ", ".join(f"'{value}'" for value in values)

    counts = {
        "errors": f"outcome IN ({listed(ERROR_OUTCOMES)})",
        "rejected": f"outcome IN ({listed(REJECTED_OUTCOMES)})",
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
        SELECT bucket_start, GROUPING(label, endpoint) = 3 AS is_total,
            CASE WHEN GROUPING(label) = 1 THEN '' ELSE label END AS model,
            CASE WHEN GROUPING(endpoint) = 1 THEN '' ELSE endpoint END AS endpoint,
            bin, count(*) AS n,
            {", ".join(f"count(*) FILTER (WHERE {t}) AS {name}" for name, t in counts.items())},
            sum(cost_usd) AS cost_usd, sum(cost_saved_usd) AS cost_saved_usd
        FROM (
            SELECT *, {_bucket(bucket_s)} AS bucket_start, ({_BIN})::int AS bin,
                CASE WHEN model = '' OR model IN ({listed(m.name for m in MODELS)})
                     THEN model ELSE '{UNKNOWN}' END AS label
            FROM {RECORD_TABLE}
            WHERE created_at >= %(since)s AND NOT is_warming
        ) AS binned
        GROUP BY bucket_start, bin, GROUPING SETS ((label, endpoint), ())
    ) AS per_bin
) AS pieces
GROUP BY {row}
"""
