"""The report of bench/gateway.py: the table of every point, with the latency each target
adds over the direct upstream, the checks against the issue's targets, and a few ratios
for context.

Only prints what the run measured; the figures and their history are in
docs/PERFORMANCE.md.
"""

from __future__ import annotations

from bench.gateway_endpoints import MODES, SERVERS
from bench.gateway_load import OCCUPANCY_LIMIT, Measurement

# Targets from the issue.
TARGET_THROUGHPUT_VS_BARE = 0.40
TARGET_THROUGHPUT_VS_LITELLM = 10.0
TARGET_ADDED_P50_C1_MS = 1.5
TARGET_P99_VS_BARE_MS = 2.0
TARGET_LIMIT_CHECK_P50_MS = 0.2  # a limited key's P50 minus an unlimited one's


def add_added_latency(results: list[Measurement]) -> None:
    direct = {(m.block, m.mode, m.concurrency): m for m in results if m.target == "direct"}
    for m in results:
        base = direct.get((m.block, m.mode, m.concurrency))
        if base is not None and m.target != "direct":
            m.added_ms = {
                "p50": m.p50_ms - base.p50_ms,
                "p95": m.p95_ms - base.p95_ms,
                "p99": m.p99_ms - base.p99_ms,
            }


def print_table(results: list[Measurement]) -> None:
    header = (
        f"{'server':<8} {'mode':<6} {'conc':>4}  {'target':<10} {'req/s':>8} "
        f"{'P50 ms':>8} {'P95 ms':>8} {'P99 ms':>8}   "
        f"{'+P50 ms':>8} {'+P95 ms':>8} {'+P99 ms':>8}  {'L':>5}  errors"
    )
    print("\n" + header)
    print("-" * len(header))
    previous: tuple[str, str, int] | None = None
    for m in results:
        key = (m.block, m.mode, m.concurrency)
        if previous is not None and key != previous:
            print()
        previous = key
        added = m.added_ms
        added_cols = (
            f"{added['p50']:8.3f} {added['p95']:8.3f} {added['p99']:8.3f}"
            if added
            else f"{'-':>8} {'-':>8} {'-':>8}"
        )
        errors = ",".join(f"{k}={v}" for k, v in m.errors.items()) or "0"
        print(
            f"{m.block:<8} {m.mode:<6} {m.concurrency:>4}  {m.target:<10} {m.rps:8.0f} "
            f"{m.p50_ms:8.3f} {m.p95_ms:8.3f} {m.p99_ms:8.3f}   {added_cols}  "
            f"{m.occupancy:5.2f}{'' if m.latency_trusted else '!'} {errors}"
        )
    print(
        "(+P.. = added latency: that percentile minus the direct upstream's "
        "at the same concurrency, measured in the same block)"
    )
    print(
        "(L = mean latency x req/s / connections, ~1 in a closed loop; '!' = above "
        f"{OCCUPANCY_LIMIT}: the samples add up to more than the wall time, so that row's "
        "percentiles are not to be trusted)"
    )


def _verdict(ok: bool, *parts: Measurement | None, latency: bool = False) -> str:
    if any(p is not None and p.error_count for p in parts):
        return "ERRORS"
    if latency and any(p is not None and not p.latency_trusted for p in parts):
        return "UNTRUSTED (L!)"
    return "PASS" if ok else "FAIL"


def print_targets(results: list[Measurement]) -> list[dict[str, object]]:
    """Ratios against the issue's targets; returns them for --json-out."""
    index = {(m.block, m.target, m.mode, m.concurrency): m for m in results}
    rows: list[dict[str, object]] = []

    def row(
        check: str, server: str, mode: str, conc: int, value: str, goal: str, verdict: str
    ) -> None:
        rows.append(
            {
                "check": check,
                "server": server,
                "mode": mode,
                "concurrency": conc,
                "value": value,
                "goal": goal,
                "verdict": verdict,
            }
        )

    servers = sorted({m.server for m in results if m.target == "beastmode"}, key=SERVERS.index)
    modes = sorted({m.mode for m in results}, key=MODES.index)
    concs = sorted({m.concurrency for m in results})
    for server in servers:
        for mode in modes:
            for conc in concs:
                gw = index.get((server, "beastmode", mode, conc))
                bare = index.get((server, "bare", mode, conc))
                litellm = index.get(("litellm", "litellm", mode, conc))
                if gw is None:
                    continue
                if bare is not None and bare.rps:
                    ratio = gw.rps / bare.rps
                    row(
                        "throughput vs bare",
                        server,
                        mode,
                        conc,
                        f"{ratio:.2f}x",
                        f">= {TARGET_THROUGHPUT_VS_BARE:.2f}x",
                        _verdict(ratio >= TARGET_THROUGHPUT_VS_BARE, gw, bare),
                    )
                if litellm is not None and litellm.rps:
                    ratio = gw.rps / litellm.rps
                    row(
                        "throughput vs LiteLLM",
                        server,
                        mode,
                        conc,
                        f"{ratio:.1f}x",
                        f">= {TARGET_THROUGHPUT_VS_LITELLM:.0f}x",
                        _verdict(ratio >= TARGET_THROUGHPUT_VS_LITELLM, gw, litellm),
                    )
                if conc == 1 and gw.added_ms is not None:
                    added = gw.added_ms["p50"]
                    row(
                        "added latency P50",
                        server,
                        mode,
                        conc,
                        f"{added:.3f} ms",
                        f"<= {TARGET_ADDED_P50_C1_MS} ms",
                        _verdict(added <= TARGET_ADDED_P50_C1_MS, gw, latency=True),
                    )
                limited = index.get((server, "limited", mode, conc))
                if limited is not None:
                    cost = limited.p50_ms - gw.p50_ms
                    row(
                        "limit check P50",
                        server,
                        mode,
                        conc,
                        f"{cost:.3f} ms",
                        f"<= {TARGET_LIMIT_CHECK_P50_MS} ms",
                        _verdict(cost <= TARGET_LIMIT_CHECK_P50_MS, limited, gw, latency=True),
                    )
                if bare is not None:
                    gap = gw.p99_ms - bare.p99_ms
                    row(
                        "P99 minus bare P99",
                        server,
                        mode,
                        conc,
                        f"{gap:.3f} ms",
                        f"<= {TARGET_P99_VS_BARE_MS} ms",
                        _verdict(gap <= TARGET_P99_VS_BARE_MS, gw, bare, latency=True),
                    )
    if not rows:
        print("\nNo BeastMode figures: no target checks.")
        return rows
    print(
        f"\n{'check':<22} {'server':<8} {'mode':<6} {'conc':>4}  "
        f"{'value':>10}  {'target':<10} verdict"
    )
    print("-" * 78)
    for r in rows:
        print(
            f"{r['check']:<22} {r['server']:<8} {r['mode']:<6} {r['concurrency']:>4}  "
            f"{r['value']:>10}  {r['goal']:<10} {r['verdict']}"
        )
    return rows


def print_context(results: list[Measurement]) -> None:
    """Ratios that are not targets but say where the time goes."""
    index = {(m.block, m.target, m.mode, m.concurrency): m for m in results}
    lines: list[str] = []
    for m in results:
        direct = index.get((m.block, "direct", m.mode, m.concurrency))
        if m.target != "direct" and direct is not None and direct.rps:
            where = "its own uvicorn" if m.target == "litellm" else m.server
            lines.append(
                f"  {m.target:<9} under {where:<15} {m.mode:<6} c={m.concurrency:<3} "
                f"{m.rps / direct.rps:6.3g}x the direct upstream's req/s"
            )
    if lines:
        print("\nFor context:")
        print("\n".join(lines))
