"""Micro benchmarks: a cached ``resolve()`` and identifier parsing, against plain lookups."""

from __future__ import annotations

import itertools
import threading
import uuid
from typing import Any

from cachetools import TLRUCache, TTLCache

from flask_tenant_cache import TenantIdentifier, TenantIdentifierValidator, UnifiedCacheResolver
from flask_tenant_cache.identifiers import normalize_host

from ._fixtures import MemoryLoader, make_tenants
from ._harness import Case, GroupResult, Settings, run_group

__all__ = ["bench_identifiers", "bench_resolve"]

#: Distinct values per cold pool: three times the 4096 entries of the lru caches, so a value
#: has always been evicted when the cycle comes back to it.
COLD_POOL = 3 * 4096
WARM_POOL = 64


def bench_resolve(settings: Settings) -> GroupResult:
    """``UnifiedCacheResolver.resolve()`` on a hit, against a dict and cachetools under a lock."""
    loader = MemoryLoader(make_tenants(1000))
    resolver = UnifiedCacheResolver(loader)
    ident = TenantIdentifier.slug("acme")
    resolver.warm(loader.tenants)
    if resolver.resolve(ident) is not loader.tenants[0]:
        raise RuntimeError("the warmed resolver does not answer acme")
    key = ident.cache_key
    entry = object()
    plain = {key: entry}
    ttl: TTLCache[str, object] = TTLCache(10_000, ttl=300)
    tlru: TLRUCache[str, object] = TLRUCache(10_000, ttu=lambda _k, _v, now: now + 300)
    for tenant in loader.tenants:
        for alias in tenant.aliases:
            plain[alias.cache_key] = ttl[alias.cache_key] = tlru[alias.cache_key] = entry
    ns: dict[str, Any] = {
        "plain": plain,
        "ttl": ttl,
        "tlru": tlru,
        "key": key,
        "lock": threading.Lock(),
        "resolve": resolver.resolve,
        "ident": ident,
    }
    cases = [
        Case("dict[key]", "plain[key]", ns, description="a plain dict lookup (the floor)"),
        Case(
            "TTLCache.get+lock",
            "with lock:\n    ttl.get(key)",
            ns,
            description="cachetools TTLCache.get under a threading.Lock",
        ),
        Case(
            "TLRUCache.get+lock",
            "with lock:\n    tlru.get(key)",
            ns,
            description="cachetools TLRUCache.get under a threading.Lock (what v2 is built on)",
        ),
        Case(
            "v2 resolve() hit",
            "resolve(ident)",
            ns,
            description="UnifiedCacheResolver.resolve() on a warm cache of 1000 tenants",
        ),
    ]
    result = run_group(
        "resolve",
        "Cached resolution (ns per call)",
        cases,
        settings,
        references=["dict[key]", "TLRUCache.get+lock"],
    )
    if loader.calls:
        raise RuntimeError("the resolver missed its cache while timed: figures are void")
    return result


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
