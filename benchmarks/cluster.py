"""Cold stampedes in one process and across gunicorn workers; invalidation delay over Redis.

Run alone with ``python -m benchmarks.cluster [--quick] [--json PATH]``; needs Redis at
``$TENANT_CACHE_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) for parts 2 and 3.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from typing import Any

import redis

from flask_tenant_cache.state import AppState

from ._cluster_app import (
    COLD,
    WARM,
    burst,
    create_app,
    database,
    invalidation_receiver,
    invalidation_sender,
    on_queries,
    queries_key,
    redis_prefix,
    serve,
)
from ._fixtures import stampede
from ._report import standalone

__all__ = ["bench_cluster"]

REDIS_URL = os.environ.get("TENANT_CACHE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
INVALIDATION_DELAY_GOAL_MS = 10.0


def _ms(ns: float) -> float:
    return round(ns / 1e6, 3)


def _percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


# -- 1. one process -------------------------------------------------------------------------------


def _stampede_once(db_path: str, version: str, threads: int) -> dict[str, Any]:
    app = create_app(db_path, TENANT_CACHE_USE_V2=version == "v2")
    lock = threading.Lock()
    queries = [0]

    def count() -> None:
        with lock:
            queries[0] += 1

    on_queries(app, count)
    state: AppState = app.extensions["tenant_cache"]
    resolver = state.resolvers[version]
    ident = state.validator.parse(COLD[0][1])
    results, errors, wall = stampede(
        threads, lambda: resolver.resolve(ident), context=app.app_context
    )
    wrong = sum(r is None or r.slug != COLD[0][1] for r in results)
    load = resolver.stats().load
    with app.app_context():
        app.extensions["bench"]["db"].engine.dispose()
    state.close()
    return {
        "queries": queries[0],
        "loads": load.loads,
        "coalesced": load.coalesced,
        "l1_hits": resolver.stats().hits,
        "errors": len(errors) + wrong,
        "wall_ms": round(wall * 1e3, 2),
    }


def bench_in_process(db_path: str, threads: int, rounds: int) -> dict[str, Any]:
    """``rounds`` cold stampedes of ``threads`` threads per resolver, each on a fresh app."""
    out: dict[str, Any] = {"threads": threads, "rounds": rounds}
    for version in ("v2", "v1"):
        runs = [_stampede_once(db_path, version, threads) for _ in range(rounds)]
        out[version] = {
            "queries": [r["queries"] for r in runs],
            "loads": [r["loads"] for r in runs],
            "coalesced": [r["coalesced"] for r in runs],
            "l1_hits": [r["l1_hits"] for r in runs],
            "errors": sum(r["errors"] for r in runs),
            "wall_ms": [r["wall_ms"] for r in runs],
            "wall_ms_median": statistics.median(r["wall_ms"] for r in runs),
        }
    return out


# -- 2. gunicorn workers sharing Redis ------------------------------------------------------------


def _worker_stats(port: int, workers: int, version: str) -> dict[int, dict[str, int]]:
    """Each worker's counters, asked in bursts (the kernel picks the worker) until all answer."""
    seen: dict[int, dict[str, int]] = {}
    for _ in range(50):
        for status, data in burst(port, 16, "/_bench/stats")[0]:
            if status == 200 and data["pid"] not in seen:
                r, bus = data[version], data.get("redis") or {}
                seen[data["pid"]] = {
                    "loads": r["load"]["loads"],
                    "coalesced": r["load"]["coalesced"],
                    "l1_hits": r["hits"],
                    "l2_hits": r["l2"]["l2_hits"],
                    "l2_misses": r["l2"]["l2_misses"],
                    # The Redis single flight's counters (absent before it existed).
                    **{k: bus[k] for k in ("claims", "remote_waits", "remote_hits") if k in bus},
                }
        if len(seen) >= workers:
            break
    return seen


def _queries(client: redis.Redis, prefix: str) -> dict[int, int]:
    return {int(k): int(v) for k, v in client.hgetall(queries_key(prefix)).items()}


def _cluster_round(
    port: int,
    client: redis.Redis,
    prefix: str,
    version: str,
    workers: int,
    slug: str,
    requests: int,
) -> dict[str, Any]:
    before = _worker_stats(port, workers, version)
    q_before = _queries(client, prefix)
    responses, wall = burst(port, requests, "/whoami", slug)
    q_after = _queries(client, prefix)
    after = _worker_stats(port, workers, version)
    served: dict[int, int] = {}
    for status, data in responses:
        if status == 200 and data.get("slug") == slug:
            served[data["pid"]] = served.get(data["pid"], 0) + 1
    rows: list[dict[str, Any]] = []
    for pid in sorted(set(after) | set(served) | set(q_after)):
        row: dict[str, Any] = {
            "pid": pid,
            "responses": served.get(pid, 0),
            "queries": q_after.get(pid, 0) - q_before.get(pid, 0),
        }
        if pid in after and pid in before:
            row |= {k: v - before[pid].get(k, 0) for k, v in after[pid].items()}
        rows.append(row)
    ok = sum(served.values())
    return {
        "tenant": slug,
        "ok": ok,
        "failed": requests - ok,
        "queries": sum(r["queries"] for r in rows),
        "l2_hits": sum(r.get("l2_hits", 0) for r in rows),
        "remote_waits": sum(r.get("remote_waits", 0) for r in rows),
        "workers_serving": sum(1 for r in rows if r["responses"]),
        "workers_with_stats": sum(1 for r in rows if "loads" in r),
        "wall_ms": round(wall * 1e3, 1),
        "per_worker": rows,
    }


def bench_cluster_stampede(
    db_path: str,
    version: str,
    rounds: int,
    requests: int = 1000,
    workers: int = 4,
    threads: int = 8,
) -> dict[str, Any]:
    """``rounds`` bursts of ``requests`` for a new cold tenant each, on gunicorn workers."""
    with (
        redis_prefix(REDIS_URL) as config,
        serve(db_path, config, version, workers, threads) as (port, stderr),
    ):
        prefix = config["TENANT_CACHE_REDIS_PREFIX"]
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
        try:
            warm_pids: set[int] = set()
            for _ in range(50):  # every worker serves a tenant: its bus is up, its DB open
                warm = burst(port, 32, "/whoami", WARM[1])[0]
                warm_pids |= {d["pid"] for s, d in warm if s == 200}
                if len(warm_pids) >= workers:
                    break
            time.sleep(0.2)
            runs = [
                _cluster_round(port, client, prefix, version, workers, COLD[i][1], requests)
                for i in range(rounds)
            ]
        finally:
            client.close()
    return {
        "version": version,
        "workers": workers,
        "worker_class": "gthread",
        "threads_per_worker": threads,
        "requests": requests,
        "rounds": runs,
        "queries": [r["queries"] for r in runs],
        "l2_hits": [r["l2_hits"] for r in runs],
        "remote_waits": [r["remote_waits"] for r in runs],
        "failed": sum(r["failed"] for r in runs),
        "wall_ms": [r["wall_ms"] for r in runs],
        "gunicorn_stderr": stderr[0] if stderr else "",
    }


# -- 3. invalidation delay ------------------------------------------------------------------------


def bench_invalidation(db_path: str, rounds: int, warmup: int = 5) -> dict[str, Any]:
    """Delay from A's ``invalidate()`` call to B's local drop, two spawned processes."""
    ctx = mp.get_context("spawn")
    with redis_prefix(REDIS_URL) as config:
        a_end, b_end = ctx.Pipe()
        out_r, out_w = ctx.Pipe(duplex=False)
        receiver = ctx.Process(target=invalidation_receiver, args=(b_end, db_path, config))
        sender = ctx.Process(
            target=invalidation_sender, args=(a_end, out_w, db_path, config, warmup + rounds)
        )
        receiver.start()
        sender.start()
        try:
            deadline = time.monotonic() + 120
            while not out_r.poll(0.2):
                if not (sender.is_alive() and receiver.is_alive()) or time.monotonic() > deadline:
                    raise RuntimeError("the invalidation processes failed (see their stderr)")
            raw: list[list[int | None]] = json.loads(out_r.recv())
        finally:
            for proc in (sender, receiver):
                proc.join(10)
                if proc.is_alive():
                    proc.terminate()
                    proc.join(5)
    measured = raw[warmup:]
    delays = [float(d) for d, _, _ in measured if d is not None]
    calls = [float(c) for _, c, _ in measured if c is not None]
    out: dict[str, Any] = {
        "rounds": rounds,
        "warmup_rounds": warmup,
        "lost": sum(1 for d, _, _ in measured if d is None),
        "empty_drops": sum(1 for _, _, n in measured if n == 0),
        "invalidate_call_ms_p50": _ms(_percentile(calls, 50)),
    }
    if delays:
        out |= {
            "delay_ms_p50": _ms(_percentile(delays, 50)),
            "delay_ms_p99": _ms(_percentile(delays, 99)),
            "delay_ms_max": _ms(max(delays)),
            "delay_ms_mean": _ms(statistics.fmean(delays)),
            "delay_ms": [_ms(d) for d in delays],
        }
    return out


# -- all of it ------------------------------------------------------------------------------------


def bench_cluster(quick: bool) -> dict[str, Any]:
    """The three cluster benchmarks, with the goals they are checked against."""
    started = time.perf_counter()
    with database() as db_path:
        in_process = bench_in_process(db_path, threads=1000, rounds=2 if quick else 5)
        cluster = [
            bench_cluster_stampede(db_path, v, rounds=2 if quick else 5)
            for v in (("v2",) if quick else ("v2", "v1"))
        ]
        invalidation = bench_invalidation(db_path, rounds=50 if quick else 200)
    goals = [
        {
            "goal": f"{in_process['threads']} cold lookups in one process -> 1 query ({v})",
            "measured": f"{in_process[v]['queries']} queries, {in_process[v]['errors']} errors",
            "met": set(in_process[v]["queries"]) == {1} and in_process[v]["errors"] == 0,
        }
        for v in ("v2", "v1")
    ]
    goals += [
        {
            "goal": f"{c['requests']} cold requests on {c['workers']} workers -> 1 query "
            f"({c['version']})",
            "measured": f"{c['queries']} queries per round, {c['l2_hits']} L2 hits, "
            f"{c['failed']} failed",
            "met": set(c["queries"]) == {1} and c["failed"] == 0,
        }
        for c in cluster
    ]
    p99 = invalidation.get("delay_ms_p99")
    goals.append(
        {
            "goal": f"invalidation delay across processes p99 < {INVALIDATION_DELAY_GOAL_MS:g} ms",
            "measured": f"p99 {p99} ms, {invalidation['lost']} lost",
            "met": p99 is not None
            and p99 < INVALIDATION_DELAY_GOAL_MS
            and invalidation["lost"] == 0,
        }
    )
    return {
        "quick": quick,
        "in_process": in_process,
        "cluster": cluster,
        "invalidation": invalidation,
        "goals": goals,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def print_cluster(result: dict[str, Any]) -> None:
    """The results as tables."""
    ip = result["in_process"]
    print(f"\nIn-process stampede ({ip['threads']} threads, SQLite file, {ip['rounds']} rounds)")
    print(
        f"  {'':<4}{'queries':<18}{'coalesced waiters':<26}{'L1 hits':<34}{'errors':>6}"
        "  wall ms: median, each"
    )
    for v in ("v2", "v1"):
        r = ip[v]
        print(
            f"  {v:<4}{r['queries']!s:<18}{r['coalesced']!s:<26}{r['l1_hits']!s:<34}"
            f"{r['errors']:>6}  {r['wall_ms_median']:.1f}  {r['wall_ms']}"
        )
    cols = ("pid", "responses", "queries", "loads", "l2_hits", "remote_waits", "coalesced")
    for c in result["cluster"]:
        print(
            f"\nCluster stampede ({c['version']}, {c['requests']} requests per round, "
            f"{c['workers']} gunicorn {c['worker_class']} workers x {c['threads_per_worker']} "
            "threads, Redis L2)"
        )
        for i, r in enumerate(c["rounds"], 1):
            print(
                f"  round {i}: DB queries {r['queries']}   L2 hits {r['l2_hits']}   remote "
                f"waits {r['remote_waits']}   failed {r['failed']}   wall {r['wall_ms']:.1f} ms"
                f"   workers serving {r['workers_serving']}"
            )
        print("  per worker, round 1:")
        print("  " + "".join(f"{h:>13}" for h in cols))
        for row in c["rounds"][0]["per_worker"]:
            print("  " + "".join(f"{row.get(h, '-')!s:>13}" for h in cols))
        if c["gunicorn_stderr"]:
            print("  gunicorn stderr: " + c["gunicorn_stderr"][-500:])
    inv = result["invalidation"]
    print(
        f"\nInvalidation delay, process A invalidate() -> process B dropped "
        f"({inv['rounds']} rounds)"
    )
    for key in ("p50", "p99", "max", "mean"):
        print(f"  {key:<6}{inv.get('delay_ms_' + key, float('nan')):8.3f} ms")
    print(
        f"  lost {inv['lost']}, drops that found nothing {inv['empty_drops']}, "
        f"A's invalidate() call p50 {inv['invalidate_call_ms_p50']:.3f} ms"
    )
    print("\nGoals")
    for goal in result["goals"]:
        print(f"  [{'met' if goal['met'] else 'MISSED'}] {goal['goal']}: {goal['measured']}")
    print(f"\n{result['elapsed_s']} s")


def main(argv: list[str] | None = None) -> int:
    return standalone(
        "python -m benchmarks.cluster",
        __doc__,
        "fewer rounds, v2 only (< 30 s)",
        bench_cluster,
        print_cluster,
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
