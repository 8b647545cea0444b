"""Coalescing: many threads asking at once for one cold tenant make one loader call."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from flask_tenant_cache import TenantIdentifier, UnifiedCacheResolver

from ._fixtures import ACME, SleepyLoader, stampede

__all__ = ["CoalescingResult", "bench_coalescing"]


@dataclass
class CoalescingResult:
    """Rounds of ``threads`` concurrent cold lookups, and the same load made by one thread."""

    threads: int
    delay: float
    loader_calls: list[int]
    coalesced: list[int]
    wall: list[float]
    single: list[float]
    errors: int

    @property
    def ratio(self) -> float:
        """Median over rounds of (wall time of the stampede / one thread's load, same round)."""
        return statistics.median(w / s for w, s in zip(self.wall, self.single, strict=True))

    def as_dict(self) -> dict[str, Any]:
        return {
            "resolver": "v2",
            "threads": self.threads,
            "loader_delay_ms": self.delay * 1e3,
            "loader_calls": self.loader_calls,
            "coalesced_waiters": self.coalesced,
            "errors": self.errors,
            "wall_ms": [round(w * 1e3, 2) for w in self.wall],
            "wall_ms_median": round(statistics.median(self.wall) * 1e3, 2),
            "single_load_ms": [round(s * 1e3, 2) for s in self.single],
            "single_load_ms_median": round(statistics.median(self.single) * 1e3, 2),
            "ratio_to_single_load": round(self.ratio, 3),
        }


def _single_load(delay: float) -> float:
    loader = SleepyLoader(ACME, delay)
    started = time.perf_counter()
    loader.load(TenantIdentifier.slug("acme"))
    return time.perf_counter() - started


def _stampede(threads: int, delay: float) -> tuple[int, int, float, int]:
    loader = SleepyLoader(ACME, delay)
    resolver = UnifiedCacheResolver(loader)
    ident = TenantIdentifier.slug("acme")
    results, errors, wall = stampede(threads, lambda: resolver.resolve(ident))
    wrong = sum(r is not ACME for r in results)
    stats = resolver.stats()
    return loader.calls, stats.load.coalesced, wall, len(errors) + wrong


def bench_coalescing(rounds: int, threads: int = 100, delay: float = 0.020) -> CoalescingResult:
    """``rounds`` stampedes on a fresh v2 resolver, each next to one uncontended load."""
    result = CoalescingResult(threads, delay, [], [], [], [], 0)
    for _ in range(rounds):
        result.single.append(_single_load(delay))
        calls, coalesced, wall, errors = _stampede(threads, delay)
        result.loader_calls.append(calls)
        result.coalesced.append(coalesced)
        result.wall.append(wall)
        result.errors += errors
    return result
