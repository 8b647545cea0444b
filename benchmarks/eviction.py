"""Eviction quality: the store's sampled LRU against exact LRU on one skewed workload."""

from __future__ import annotations

import collections
import random
import uuid
from typing import Any

from flask_tenant_cache import Tenant, TenantIdentifier
from flask_tenant_cache.resolvers import DualCacheResolver, UnifiedCacheResolver

#: The most the store's hit rate may fall below exact LRU's, in per cent of LRU's.
GOAL_PERCENT = 1.0


class _Table:
    """Tenants by slug: a loader that costs nothing, so only hits and misses count."""

    def __init__(self, tenants: list[Tenant]) -> None:
        self.by_slug = {t.slug: t for t in tenants}

    def load(self, ident: TenantIdentifier) -> Tenant | None:
        return self.by_slug.get(ident.value)


def _zipf_slugs(count: int, requests: int, skew: float, seed: int) -> list[str]:
    rnd = random.Random(seed)
    weights = [1 / (rank + 1) ** skew for rank in range(count)]
    order = list(range(count))
    rnd.shuffle(order)  # popularity unrelated to the order tenants are first seen in
    return [f"t{order[i]}" for i in rnd.choices(range(count), weights, k=requests)]


def _exact_lru_hit_rate(slugs: list[str], capacity: int) -> float:
    cache: collections.OrderedDict[str, None] = collections.OrderedDict()
    hits = 0
    for slug in slugs:
        if slug in cache:
            cache.move_to_end(slug)
            hits += 1
        else:
            cache[slug] = None
            if len(cache) > capacity:
                cache.popitem(last=False)
    return hits / len(slugs)


def bench_eviction(quick: bool) -> dict[str, Any]:
    """Hit rates of v1, v2 and exact LRU over one Zipf request stream, per cache size."""
    count, requests = (5_000, 100_000) if quick else (20_000, 400_000)
    tenants = [Tenant(id=uuid.uuid4(), slug=f"t{n}") for n in range(count)]
    slugs = _zipf_slugs(count, requests, skew=0.9, seed=7)
    idents = [TenantIdentifier.slug(s) for s in slugs]
    rows = []
    for fraction in (0.01, 0.05, 0.2):
        capacity = int(count * fraction)
        row: dict[str, Any] = {"tenants": count, "capacity": capacity, "requests": requests}
        row["exact_lru"] = _exact_lru_hit_rate(slugs, capacity)
        for version, resolver in (
            ("v1", DualCacheResolver(_Table(tenants), max_entries=capacity, ttl=1e9)),
            (
                "v2",
                UnifiedCacheResolver(
                    _Table(tenants), max_entries=capacity, ttl=1e9, idle_timeout=None
                ),
            ),
        ):
            for ident in idents:
                resolver.resolve(ident)
            stats = resolver.stats()
            row[version] = stats.hits / requests
        rows.append(row)
    worst = max(1 - min(row["v1"], row["v2"]) / row["exact_lru"] for row in rows) * 100
    return {
        "rows": rows,
        "worst_percent_below_lru": round(worst, 3),
        "goal_percent": GOAL_PERCENT,
        "met": worst <= GOAL_PERCENT,
    }


def eviction_goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The store's hit rate against exact LRU's, at the worst cache size."""
    return [
        {
            "goal": f"sampled LRU within {result['goal_percent']:g} % of exact LRU's hit rate "
            "(Zipf 0.9)",
            "measured": f"{result['worst_percent_below_lru']:.2f} % below, at worst",
            "met": result["met"],
        }
    ]


def print_eviction(result: dict[str, Any]) -> None:
    """One line per cache size: the hit rates and how far below exact LRU the store is."""
    for row in result["rows"]:
        print(
            f"eviction: {row['tenants']} tenants, capacity {row['capacity']}: "
            f"exact LRU {row['exact_lru']:.4f}, v1 {row['v1']:.4f}, v2 {row['v2']:.4f}"
        )
    print(
        f"eviction: worst {result['worst_percent_below_lru']} % below exact LRU "
        f"(goal <= {result['goal_percent']} %): {'met' if result['met'] else 'missed'}"
    )


if __name__ == "__main__":
    print_eviction(bench_eviction(quick=False))
