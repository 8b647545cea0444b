"""A loopback-only HTTP/1.1 load generator: open loop at a fixed rate, or closed loop flat out."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._http_client import Connection, ProtocolError, Target

__all__ = [
    "FixedRateResult",
    "SaturationResult",
    "Target",
    "percentiles",
    "run_fixed_rate",
    "run_saturation",
]

#: Never more requests than this in one run, whatever the rate and duration say.
DEFAULT_MAX_REQUESTS = 200_000
#: How long in-flight requests may still finish after the last one was scheduled.
DEFAULT_DRAIN_S = 2.0

clock = time.perf_counter


def percentiles(samples_s: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99, max and mean of ``samples_s`` (seconds), in milliseconds (nearest rank)."""
    if not samples_s:
        return {
            "p50": math.nan,
            "p95": math.nan,
            "p99": math.nan,
            "max": math.nan,
            "mean": math.nan,
        }
    ordered = sorted(samples_s)
    n = len(ordered)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p * n) - 1)] * 1e3

    return {
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "max": ordered[-1] * 1e3,
        "mean": sum(ordered) / n * 1e3,
    }


def _picker(count: int, order: str, seed: int) -> Callable[[int], int]:
    if order == "round-robin":
        return lambda i: i % count
    if order == "random":
        rng = random.Random(seed)
        return lambda i: rng.randrange(count)
    raise ValueError(f"order must be 'round-robin' or 'random', not {order!r}")


@dataclass
class _Tally:
    ok: int = 0
    errors: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    service: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    last_done: float = 0.0

    def record(self, status: int | None, due: float, sent: float, done: float) -> None:
        self.last_done = max(self.last_done, done)
        self.lags.append(sent - due)
        if status is None:
            self.errors += 1
            self.statuses["exception"] += 1
            return
        self.statuses[str(status)] += 1
        if 200 <= status < 300:
            self.ok += 1
            self.latencies.append(done - due)
            self.service.append(done - sent)
        else:
            self.errors += 1


async def _send(conn: Connection, data: bytes) -> int | None:
    try:
        return await conn.request(data)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError):
        return None


async def _finish(tasks: list[asyncio.Task[None]], timeout: float) -> None:
    """Wait for ``tasks`` at most ``timeout`` seconds, then cancel the rest: the run ends."""
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


@dataclass(frozen=True)
class FixedRateResult:
    """An open-loop run: requests were due at fixed times, whether or not earlier ones were done.

    ``latency_ms`` counts from the time a request was due (so a stalled server cannot hide its
    queue: no coordinated omission), ``service_ms`` from the time it was actually written.
    """

    rate: float
    duration_s: float
    scheduled: int
    ok: int
    errors: int
    unfinished: int
    elapsed_s: float
    connections: int
    connections_opened: int
    statuses: dict[str, int]
    latency_ms: dict[str, float]
    service_ms: dict[str, float]
    send_lag_ms: dict[str, float]
    #: Raw latencies from the due time, in seconds (not in :meth:`as_dict`).
    samples_s: list[float] = field(repr=False, default_factory=list)

    @property
    def achieved_rate(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able summary (times rounded to µs)."""
        return {
            "rate": self.rate,
            "duration_s": self.duration_s,
            "scheduled": self.scheduled,
            "ok": self.ok,
            "errors": self.errors,
            "unfinished": self.unfinished,
            "elapsed_s": round(self.elapsed_s, 3),
            "achieved_rate": round(self.achieved_rate, 1),
            "connections": self.connections,
            "connections_opened": self.connections_opened,
            "statuses": self.statuses,
            "latency_ms": _round(self.latency_ms),
            "service_ms": _round(self.service_ms),
            "send_lag_ms": _round(self.send_lag_ms),
        }


def _round(values: dict[str, float]) -> dict[str, float | None]:
    return {k: None if math.isnan(v) else round(v, 3) for k, v in values.items()}


async def _fixed_rate(
    target: Target,
    tenants: Sequence[str],
    rate: float,
    duration: float,
    max_requests: int,
    connections: int,
    order: str,
    seed: int,
    drain: float,
) -> FixedRateResult:
    requests = target.requests(tenants)
    pick = _picker(len(requests), order, seed)
    total = min(int(rate * duration), max_requests)
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    tally = _Tally()
    conns = [Connection(target) for _ in range(connections)]

    async def worker(conn: Connection) -> None:
        while (item := await queue.get()) is not None:
            due, data = item
            sent = clock()
            status = await _send(conn, data)
            tally.record(status, due, sent, clock())

    tasks = [asyncio.create_task(worker(c)) for c in conns]
    start = clock() + 0.01
    for i in range(total):
        due = start + i / rate
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((due, requests[pick(i)]))
    for _ in tasks:
        queue.put_nowait(None)
    await _finish(tasks, drain)
    for conn in conns:
        conn.close()
    return FixedRateResult(
        rate=rate,
        duration_s=duration,
        scheduled=total,
        ok=tally.ok,
        errors=tally.errors,
        unfinished=total - tally.ok - tally.errors,
        elapsed_s=max(tally.last_done - start, 0.0),
        connections=connections,
        connections_opened=sum(c.opened for c in conns),
        statuses=dict(tally.statuses),
        latency_ms=percentiles(tally.latencies),
        service_ms=percentiles(tally.service),
        send_lag_ms=percentiles(tally.lags),
        samples_s=tally.latencies,
    )


def run_fixed_rate(
    target: Target,
    tenants: Sequence[str],
    *,
    rate: float = 1000.0,
    duration: float = 10.0,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    connections: int = 32,
    order: str = "round-robin",
    seed: int = 0,
    drain: float = DEFAULT_DRAIN_S,
) -> FixedRateResult:
    """Send ``rate`` requests per second for ``duration`` seconds, tenants taken in ``order``.

    At most ``max_requests`` are scheduled; requests still running ``drain`` seconds after the
    last was due are abandoned and counted as unfinished.

    :param connections: the pool of keep-alive connections; a due request waits for a free one.
    :param order: ``"round-robin"`` or ``"random"`` (seeded with ``seed``).
    """
    if rate <= 0 or duration <= 0 or connections < 1 or not tenants:
        raise ValueError("rate, duration, connections and tenants must be positive")
    return asyncio.run(
        _fixed_rate(target, tenants, rate, duration, max_requests, connections, order, seed, drain)
    )


@dataclass(frozen=True)
class SaturationResult:
    """A closed-loop run: each connection sends its next request as soon as one is answered."""

    duration_s: float
    connections: int
    ok: int
    errors: int
    elapsed_s: float
    connections_opened: int
    latency_ms: dict[str, float]

    @property
    def throughput(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able summary."""
        return {
            "duration_s": self.duration_s,
            "connections": self.connections,
            "ok": self.ok,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed_s, 3),
            "throughput": round(self.throughput, 1),
            "connections_opened": self.connections_opened,
            "latency_ms": _round(self.latency_ms),
        }


async def _saturate(
    target: Target,
    tenants: Sequence[str],
    connections: int,
    duration: float,
    max_requests: int,
    drain: float,
) -> SaturationResult:
    requests = target.requests(tenants)
    tally = _Tally()
    conns = [Connection(target) for _ in range(connections)]
    issued = 0
    start = clock()
    deadline = start + duration

    async def worker(conn: Connection, offset: int) -> None:
        nonlocal issued
        i = offset
        while clock() < deadline and issued < max_requests:
            issued += 1
            sent = clock()
            status = await _send(conn, requests[i % len(requests)])
            tally.record(status, sent, sent, clock())
            i += connections

    tasks = [asyncio.create_task(worker(c, n)) for n, c in enumerate(conns)]
    await _finish(tasks, duration + drain)
    for conn in conns:
        conn.close()
    return SaturationResult(
        duration_s=duration,
        connections=connections,
        ok=tally.ok,
        errors=tally.errors,
        elapsed_s=max(tally.last_done - start, 0.0),
        connections_opened=sum(c.opened for c in conns),
        latency_ms=percentiles(tally.latencies),
    )


def run_saturation(
    target: Target,
    tenants: Sequence[str],
    *,
    connections: int = 16,
    duration: float = 5.0,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    drain: float = DEFAULT_DRAIN_S,
) -> SaturationResult:
    """Keep ``connections`` requests in flight for ``duration`` seconds (at most
    ``max_requests``), tenants round-robin; report the throughput."""
    if duration <= 0 or connections < 1 or not tenants:
        raise ValueError("duration, connections and tenants must be positive")
    return asyncio.run(_saturate(target, tenants, connections, duration, max_requests, drain))


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks._loadgen --port 8000``: load a server on loopback, print JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks._loadgen", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--tenants", type=int, default=100, help="slugs as the benchmark seeds")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--max-requests", type=int, default=DEFAULT_MAX_REQUESTS)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--order", choices=["round-robin", "random"], default="round-robin")
    parser.add_argument("--saturate", action="store_true", help="closed loop, flat out")
    args = parser.parse_args(argv)
    from ._http_apps import tenant_slugs

    target = Target(args.host, args.port, args.path)
    slugs = tenant_slugs(args.tenants)
    result: FixedRateResult | SaturationResult
    if args.saturate:
        result = run_saturation(
            target,
            slugs,
            connections=args.connections,
            duration=args.duration,
            max_requests=args.max_requests,
        )
    else:
        result = run_fixed_rate(
            target,
            slugs,
            rate=args.rate,
            duration=args.duration,
            max_requests=args.max_requests,
            connections=args.connections,
            order=args.order,
        )
    print(json.dumps(result.as_dict(), indent=2))


if __name__ == "__main__":
    main()
