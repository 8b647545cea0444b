"""Micro benchmarks: a cached ``resolve()`` and identifier parsing, against plain lookups."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from typing import Any

from cachetools import LRUCache

from flask_tenant_cache import (
    DualCacheResolver,
    TenantIdentifier,
    TenantIdentifierValidator,
    UnifiedCacheResolver,
)
from flask_tenant_cache.identifiers import normalize_host

from ._fixtures import MemoryLoader, make_tenants
from ._harness import Case, GroupResult, Settings, held, run_group

__all__ = [
    "DEADLINE",
    "LOOKUP_GOAL_NS",
    "bench_identifiers",
    "bench_resolve",
    "resolve_goals",
]

#: The issue's goal for the lookup alone on a hit. It was set on a machine where a dict read
#: with a deadline check under a lock (:data:`DEADLINE`) cost 202 ns, so it is held as a ratio
#: to that baseline timed in the same rounds: at most x1.00, whatever the machine's speed.
LOOKUP_GOAL_NS = 200.0
LOOKUP_GOAL_X = 1.0
DICT, DEADLINE, LRU = "dict[key]", "dict+deadline+lock", "LRUCache.get+lock"
V1_HIT, V2_HIT = "v1 resolve() hit", "v2 resolve() hit"

#: Distinct values per cold pool: three times the 4096 entries of the lru caches, so a value
#: has always been evicted when the cycle comes back to it.
COLD_POOL = 3 * 4096
WARM_POOL = 64


def bench_resolve(settings: Settings) -> GroupResult:
    """``resolve()`` on a hit, v1 and v2 in the same rounds, against a dict and cachetools."""
    loader = MemoryLoader(make_tenants(1000))
    v1 = DualCacheResolver(loader, max_entries=4096)
    v2 = UnifiedCacheResolver(loader, max_entries=4096)
    ident = TenantIdentifier.slug("acme")
    for resolver in (v1, v2):
        resolver.warm(loader.tenants)
        if resolver.resolve(ident) is not loader.tenants[0]:
            raise RuntimeError(f"the warmed {resolver.version} resolver does not answer acme")
    key = ident.cache_key
    entry = object()
    plain = {key: entry}
    deadlines: dict[str, tuple[object, float]] = {}
    lru: LRUCache[str, object] = LRUCache(10_000)
    for tenant in loader.tenants:
        for alias in tenant.aliases:
            k = alias.cache_key
            plain[k] = lru[k] = entry
            deadlines[k] = (entry, time.monotonic() + 3600)
    ns: dict[str, Any] = {
        "plain": plain,
        "lru": lru,
        "key": key,
        "lock": threading.Lock(),
        "deadlines": deadlines,
        "clock": time.monotonic,
        "v1": v1.resolve,
        "v2": v2.resolve,
        "ident": ident,
    }
    cases = [
        Case(DICT, "plain[key]", ns, description="a plain dict lookup (the floor)"),
        Case(
            DEADLINE,
            "with lock:\n    e = deadlines.get(key)\n    e is not None and e[1] > clock()",
            ns,
            description="a dict read and a deadline check under a threading.Lock, inline "
            "(the goal's baseline)",
        ),
        Case(
            LRU,
            "with lock:\n    lru.get(key)",
            ns,
            description="cachetools LRUCache.get under a threading.Lock",
        ),
        Case(
            V1_HIT,
            "v1(ident)",
            ns,
            description="DualCacheResolver.resolve() on a warm cache of 1000 tenants",
        ),
        Case(
            V2_HIT,
            "v2(ident)",
            ns,
            description="UnifiedCacheResolver.resolve() on a warm cache of 1000 tenants",
        ),
    ]
    result = run_group(
        "resolve",
        "Cached resolution (ns per call)",
        cases,
        settings,
        references=[DEADLINE, DICT, LRU],
    )
    if loader.calls:
        raise RuntimeError("a resolver missed its cache while timed: figures are void")
    return result


def resolve_goals(group: GroupResult) -> list[dict[str, Any]]:
    """Each resolver's hit at most :data:`LOOKUP_GOAL_X` the :data:`DEADLINE` baseline."""
    goals = []
    for name in (V1_HIT, V2_HIT):
        case = group.case(name)
        goals.append(
            {
                "goal": f"{name.split()[0]}: the lookup alone at most {LOOKUP_GOAL_NS:g} ns on a "
                f"hit (x{LOOKUP_GOAL_X:.2f} {DEADLINE})",
                "measured": f"x{case.ratios[DEADLINE]:.2f} same-round median, "
                f"x{case.best_ratios[DEADLINE]:.2f} of bests ({case.best_ns:,.0f} ns; "
                f"{DEADLINE} {group.case(DEADLINE).best_ns:,.0f} ns, "
                f"{LRU} {group.case(LRU).best_ns:,.0f} ns)",
                "met": held(case, DEADLINE, LOOKUP_GOAL_X),
            }
        )
    return goals


def bench_identifiers(settings: Settings) -> GroupResult:
    """``parse_header`` and ``normalize_host``, memoised and cold, against a dict lookup."""
    validator = TenantIdentifierValidator(["example.com"])
    warm_slugs = [f"shop-{i}" for i in range(WARM_POOL)]
    warm_hosts = [f"Shop{i}.Example.ORG:8443" for i in range(WARM_POOL)]
    cold_slugs = [f"tenant-{i:05d}" for i in range(COLD_POOL)]
    cold_uuids = [str(uuid.UUID(int=i + 1)).upper() for i in range(COLD_POOL)]
    cold_hosts = [f"Portal{i}.Customer.ORG" for i in range(COLD_POOL)]
    cold_ports = [f"Portal{i}.Customer.ORG:8443" for i in range(COLD_POOL)]
    memo = {v: v for v in warm_slugs}

    def warm() -> None:
        for value in warm_slugs:
            validator.parse_header(value)
        for value in warm_hosts:
            normalize_host(value)

    pools = {
        "warm_slugs": warm_slugs,
        "warm_hosts": warm_hosts,
        "cold_slugs": cold_slugs,
        "cold_uuids": cold_uuids,
        "cold_hosts": cold_hosts,
        "cold_ports": cold_ports,
    }
    funcs = {
        "parse_header": validator.parse_header,
        "normalize_host": normalize_host,
        "memo.get": memo.get,
    }

    def case(name: str, call: str, pool: str, description: str) -> Case:
        # Every case draws its argument from its own endless cycle, so the baseline pays the
        # same; the cycle outlives a timing, so a cold value comes back only after the lru
        # caches have evicted it.
        ns = {"func": funcs[call], "values": itertools.cycle(pools[pool]), "warm": warm}
        return Case(name, "func(next(values))", ns, "warm()", description)

    cases = [
        case("dict.get", "memo.get", "warm_slugs", "dict.get of a cycled value (the floor)"),
        case(
            "parse_header memo",
            "parse_header",
            "warm_slugs",
            "a slug header already parsed (lru_cache hit)",
        ),
        case("parse_header slug cold", "parse_header", "cold_slugs", "a slug never seen"),
        case("parse_header uuid cold", "parse_header", "cold_uuids", "an upper-case UUID"),
        case("parse_header host cold", "parse_header", "cold_hosts", "a custom domain"),
        case("normalize_host memo", "normalize_host", "warm_hosts", "a host already normalised"),
        case("normalize_host cold", "normalize_host", "cold_ports", "a host with a port, unseen"),
    ]
    return run_group("identifiers", "Identifier parsing (ns per call)", cases, settings)
