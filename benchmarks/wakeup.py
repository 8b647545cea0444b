"""Waiting for another process's load: woken by the bus against polling every 2 ms.

Run alone with ``python -m benchmarks.wakeup [--quick] [--json PATH]`` (needs the Redis of
``TENANT_CACHE_BENCH_REDIS_URL``, default ``redis://127.0.0.1:6379/0``). Two Redis layers
(two connections and subscribers, as two workers have) share a prefix of the run's own: the
leader claims a cold tenant and stores it 50 ms later; the follower asked meanwhile and
waits. Per round: the delay from the end of the store to the follower's answer, and the
follower's Redis calls while it waited. The baseline is the same follower polling every
2 ms, as before the bus woke waiters.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import uuid
from typing import Any

import redis

from flask_tenant_cache import TenantIdentifier
from flask_tenant_cache.redis_layer import RedisLayer
from flask_tenant_cache.redis_layer import l2 as l2_module

from ._fixtures import ACME
from ._report import standalone

__all__ = ["bench_wakeup"]

URL = os.environ.get("TENANT_CACHE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
HOLD = 0.05


def _layer(prefix: str) -> RedisLayer:
    return RedisLayer(
        URL,
        prefix=prefix,
        ttl=60,
        channel=None,
        socket_timeout=2,
        on_invalidate=lambda key, ids: None,
        on_resubscribe=lambda: None,
        load_timeout=5,
    )


def _rounds(rounds: int, *, woken: bool) -> dict[str, Any]:
    prefix = f"tc-bench-{uuid.uuid4().hex[:12]}"
    leader, follower = _layer(prefix), _layer(prefix)
    leader.start()
    follower.start()  # both in step with the bus: the L2 is read
    if not woken:  # nothing wakes it: it looks again every 2 ms, as it did before
        follower.l2.wake = lambda cache_key: None  # type: ignore[method-assign]
    script = follower.l2._scripts()._get_script
    calls = [0]

    def counted(**kwargs: Any) -> Any:
        calls[0] += 1
        return script(**kwargs)

    follower.l2._get_script = counted
    delays: list[float] = []
    waits: list[int] = []
    try:
        for n in range(rounds):
            ident = TenantIdentifier.slug(f"cold-{n}")
            hit, _, token = leader.l2.get(ident)
            assert hit is False
            seen: list[float] = []
            calls[0] = 0

            def follow(ident: TenantIdentifier = ident, seen: list[float] = seen) -> None:
                follower.l2.get(ident)
                seen.append(time.perf_counter())

            thread = threading.Thread(target=follow)
            thread.start()
            time.sleep(HOLD)
            leader.l2.put(ident, ACME, token)
            stored = time.perf_counter()
            thread.join(10)
            delays.append(seen[0] - stored)
            waits.append(calls[0])
    finally:
        for layer in (leader, follower):
            layer.stop()
        client = redis.Redis.from_url(URL)
        for key in client.scan_iter(match="{" + prefix + "}:*", count=500):
            client.delete(key)
        client.close()
    return {
        "rounds": rounds,
        "delay_after_store_ms_median": round(statistics.median(delays) * 1e3, 3),
        "delay_after_store_ms_max": round(max(delays) * 1e3, 3),
        "redis_calls_while_waiting_median": statistics.median(waits),
        "redis_calls_while_waiting_max": max(waits),
    }


def bench_wakeup(quick: bool) -> dict[str, Any]:
    """The woken follower and the polling baseline, in the same run."""
    rounds = 10 if quick else 50
    woken = _rounds(rounds, woken=True)
    saved = l2_module.POLL_INTERVAL, l2_module.RECHECKS
    l2_module.POLL_INTERVAL, l2_module.RECHECKS = 0.002, 2500  # 5 s / 2500 = 2 ms
    try:
        polling = _rounds(rounds, woken=False)
    finally:
        l2_module.POLL_INTERVAL, l2_module.RECHECKS = saved
    return {
        "hold_ms": HOLD * 1e3,
        "woken": woken,
        "polling_2ms": polling,
        "calls_ratio_to_polling": round(
            woken["redis_calls_while_waiting_median"] / polling["redis_calls_while_waiting_median"],
            3,
        ),
    }


def _show(result: dict[str, Any]) -> None:
    print(f"follower waits for a load stored {result['hold_ms']:.0f} ms after it asked")
    for name in ("woken", "polling_2ms"):
        r = result[name]
        print(
            f"  {name:12} delay after the store: median {r['delay_after_store_ms_median']} ms, "
            f"max {r['delay_after_store_ms_max']} ms; Redis calls while waiting: median "
            f"{r['redis_calls_while_waiting_median']}, max {r['redis_calls_while_waiting_max']}"
        )
    print(f"  calls, woken / polling: {result['calls_ratio_to_polling']}")


def main(argv: list[str] | None = None) -> int:
    return standalone(
        "python -m benchmarks.wakeup", __doc__, "10 rounds instead of 50", bench_wakeup, _show, argv
    )


if __name__ == "__main__":
    raise SystemExit(main())
