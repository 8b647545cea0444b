"""Coalescing: many threads asking at once for one cold tenant make one loader call."""

from __future__ import annotations

import collections
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

from flask_tenant_cache import DualCacheResolver, Tenant, TenantIdentifier, UnifiedCacheResolver

from ._fixtures import ACME, SleepyLoader, make_tenants, stampede

__all__ = ["CoalescingResult", "bench_coalescing", "bench_many", "many_goals"]

#: Cold tenants per stampede over many tenants.
MANY = (100, 10_000)


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


class CountingLoader:
    """Loads tenants by slug after ``delay`` seconds (a database), counting calls per key."""

    def __init__(self, tenants: list[Tenant], delay: float) -> None:
        self._by_slug = {t.slug: t for t in tenants}
        self.delay = delay
        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def load(self, identifier: TenantIdentifier) -> Tenant | None:
        with self._lock:
            self.calls[identifier.cache_key] += 1
        time.sleep(self.delay)
        return self._by_slug.get(identifier.value)


def bench_many(
    version: str, tenants: int, threads: int = 100, per_tenant: int = 4, delay: float = 0.001
) -> dict[str, Any]:
    """``threads`` threads released together walk ``tenants`` cold tenants, each asked for
    ``per_tenant`` times in a row (so by several threads at once): one load per tenant."""
    population = make_tenants(tenants)
    loader = CountingLoader(population, delay)
    resolver: DualCacheResolver | UnifiedCacheResolver
    if version == "v1":
        resolver = DualCacheResolver(loader, max_entries=tenants)
    else:
        resolver = UnifiedCacheResolver(loader, max_entries=tenants)
    asks = [(t, TenantIdentifier.slug(t.slug)) for t in population for _ in range(per_tenant)]
    work = iter(asks)
    take = threading.Lock()
    wrong = [0]

    def walk() -> None:
        while True:
            with take:
                item = next(work, None)
            if item is None:
                return
            tenant, ident = item
            if resolver.resolve(ident) is not tenant:
                with take:
                    wrong[0] += 1

    _, errors, wall = stampede(threads, walk)
    calls = sum(loader.calls.values())
    ideal = tenants * delay / threads
    return {
        "resolver": version,
        "tenants": tenants,
        "threads": threads,
        "asks_per_tenant": per_tenant,
        "loader_delay_ms": delay * 1e3,
        "loader_calls": calls,
        "tenants_loaded_twice": sum(1 for n in loader.calls.values() if n > 1),
        "errors": len(errors) + wrong[0],
        "wall_ms": round(wall * 1e3, 1),
        "ideal_ms": round(ideal * 1e3, 1),
        "ratio_to_ideal": round(wall / ideal, 2),
    }


def many_goals(stampedes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Exactly one loader call per cold tenant, and every thread its own tenant."""
    return [
        {
            "goal": f"{s['threads']} threads over {s['tenants']:,} cold tenants: one loader "
            f"call per tenant ({s['resolver']})",
            "measured": f"{s['loader_calls']:,} calls, {s['errors']} errors, "
            f"{s['wall_ms']:,.0f} ms (x{s['ratio_to_ideal']:.2f} the ideal)",
            "met": s["loader_calls"] == s["tenants"] and s["errors"] == 0,
        }
        for s in stampedes
    ]
