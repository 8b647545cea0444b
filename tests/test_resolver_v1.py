"""The v1 resolver's own behaviour: two bounded caches and the detailed metrics."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from flask import Flask

from flask_tenant_cache import Tenant, TenantIdentifier, TenantLookupError, current_resolver_version
from flask_tenant_cache.resolvers import DualCacheResolver
from tests.helpers.app import ACME_ID, CountingLoader, FakeTimer, build_app
from tests.helpers.resolvers import (
    ACME,
    GLOBEX,
    MemoryLoader,
    open_when_all_wait,
    run_threads,
    with_test_defaults,
)

by_slug = TenantIdentifier.slug
by_host = TenantIdentifier.host
by_uuid = TenantIdentifier.uuid

NEWCO = Tenant(id=uuid.UUID("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"), slug="newco", name="NewCo")
ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}


class TimedLoader:
    """An in-memory tenant table whose loads take a known time on the fake clock."""

    def __init__(self, db: MemoryLoader, timer: FakeTimer) -> None:
        self.db = db
        self.timer = timer
        #: Seconds each coming load takes, in order; loads past the list take no time.
        self.durations: list[float] = []
        self.fail: BaseException | None = None
        self.calls: list[TenantIdentifier] = []

    def load(self, ident: TenantIdentifier) -> Tenant | None:
        self.calls.append(ident)
        self.timer.advance(self.durations.pop(0) if self.durations else 0.0)
        if self.fail is not None:
            raise self.fail
        return self.db.load(ident)


@pytest.fixture
def loader(db: MemoryLoader, timer: FakeTimer) -> TimedLoader:
    return TimedLoader(db, timer)


@pytest.fixture
def make(loader: TimedLoader, timer: FakeTimer) -> Any:
    """Only v1: the ``resolver`` fixture (from conftest) is a ``DualCacheResolver``."""
    return with_test_defaults(DualCacheResolver, loader, timer)


def unknown(n: int) -> TenantIdentifier:
    return by_slug(f"nobody-{n}")


# -- the counters -----------------------------------------------------------------------------


def test_every_lookup_is_counted_once(resolver: DualCacheResolver, loader: TimedLoader) -> None:
    assert resolver.resolve(by_slug("acme")) == ACME  # miss, load
    assert resolver.resolve(by_slug("acme")) == ACME  # hit
    assert resolver.resolve(by_slug("acme")) == ACME  # hit
    assert resolver.resolve(by_slug("nobody")) is None  # miss, load
    assert resolver.resolve(by_slug("nobody")) is None  # negative hit
    assert resolver.resolve(by_uuid(ACME_ID)) == ACME  # hit: the load cached every alias
    stats = resolver.stats()
    assert (stats.hits, stats.negative_hits, stats.misses) == (3, 1, 2)
    assert (stats.positive_entries, stats.negative_entries, stats.max_entries) == (1, 1, 1000)
    assert stats.load.loads == len(loader.calls) == 2
    assert (stats.load.load_errors, stats.load.coalesced, stats.load.load_timeouts) == (0, 0, 0)
    assert (stats.invalidations, stats.evictions, stats.expirations) == (0, 0, 0)
    assert stats.load.stale_loads_discarded == 0


def test_without_redis_l2_counters_are_zero_and_bus_is_empty(
    resolver: DualCacheResolver,
) -> None:
    resolver.resolve(by_slug("acme"))
    resolver.resolve(by_slug("nobody"))
    data = resolver.stats().as_dict()
    assert data["l2"] == {"l2_hits": 0, "l2_misses": 0, "l2_errors": 0}
    assert data["bus"] == {}


def test_load_time_is_the_exact_time_spent_in_the_loader(
    resolver: DualCacheResolver, loader: TimedLoader, timer: FakeTimer
) -> None:
    loader.durations = [0.5, 0.25, 2.0]
    resolver.resolve(by_slug("acme"))
    resolver.resolve(by_slug("nobody"))
    resolver.resolve(by_slug("globex"))
    timer.advance(10)  # time between loads is not load time
    resolver.resolve(by_slug("acme"))  # a hit: no load, no load time
    load = resolver.stats().load
    assert load.loads == 3
    assert load.load_time_sum == 2.75
    assert load.load_time_max == 2.0


def test_load_errors_are_counted_and_cache_nothing(
    resolver: DualCacheResolver, loader: TimedLoader
) -> None:
    loader.fail = RuntimeError("database down")
    for _ in range(2):
        with pytest.raises(TenantLookupError):
            resolver.resolve(by_slug("acme"))
    stats = resolver.stats()
    assert (stats.load.load_errors, stats.load.loads, stats.misses) == (2, 0, 2)
    assert (stats.positive_entries, stats.negative_entries, stats.negative_hits) == (0, 0, 0)
    loader.fail = None
    assert resolver.resolve(by_slug("acme")) == ACME
    stats = resolver.stats()
    assert (stats.load.load_errors, stats.load.loads, stats.misses) == (2, 1, 3)


def test_coalesced_waiters_are_counted_as_misses_and_share_one_load(
    db: MemoryLoader, timer: FakeTimer
) -> None:
    counting = CountingLoader(db)
    resolver = DualCacheResolver(counting, timer=timer)
    opener = open_when_all_wait(resolver, counting, waiters=7)
    results, errors = run_threads(8, lambda: resolver.resolve(by_slug("globex")))
    opener.join()
    assert errors == []
    assert results == [GLOBEX] * 8
    stats = resolver.stats()
    assert len(counting.calls) == stats.load.loads == 1
    assert stats.load.coalesced == 7
    assert (stats.misses, stats.hits, stats.positive_entries) == (8, 0, 1)


def test_each_cache_evicts_on_its_own_bound(make: Any, db: MemoryLoader) -> None:
    db.put(NEWCO)
    resolver = make(max_entries=2)
    resolver.resolve(by_slug("acme"))
    resolver.resolve(by_slug("globex"))
    resolver.resolve(by_slug("newco"))  # a third found tenant: one positive eviction
    stats = resolver.stats()
    assert (stats.positive_entries, stats.negative_entries, stats.evictions) == (2, 0, 1)
    for n in range(3):  # a third not-found entry: one negative eviction
        resolver.resolve(unknown(n))
    stats = resolver.stats()
    assert (stats.positive_entries, stats.negative_entries, stats.evictions) == (2, 2, 2)
    assert stats.max_entries == 2


def test_unknown_slugs_do_not_evict_found_tenants(
    make: Any, loader: TimedLoader, db: MemoryLoader
) -> None:
    db.put(NEWCO)
    resolver = make(max_entries=3)
    known = [by_slug("acme"), by_slug("newco"), by_slug("globex")]
    for ident in known:
        assert resolver.resolve(ident) is not None
    for n in range(10):
        assert resolver.resolve(unknown(n)) is None
    stats = resolver.stats()
    assert (stats.positive_entries, stats.negative_entries, stats.evictions) == (3, 3, 7)
    calls = len(loader.calls)
    for ident in known:
        assert resolver.resolve(ident) is not None
    assert len(loader.calls) == calls  # all three still cached
    assert resolver.stats().hits == 3
    assert resolver.resolve(unknown(0)) is None  # the oldest unknown slug was evicted
    assert len(loader.calls) == calls + 1


def test_expirations_are_counted_when_stats_expire_entries(
    resolver: DualCacheResolver, timer: FakeTimer
) -> None:
    resolver.resolve(by_slug("acme"))
    resolver.resolve(by_slug("nobody"))
    timer.advance(29)
    stats = resolver.stats()
    assert (stats.positive_entries, stats.negative_entries, stats.expirations) == (1, 1, 0)
    timer.advance(2)  # past the negative TTL (30 s)
    stats = resolver.stats()
    assert (stats.positive_entries, stats.negative_entries, stats.expirations) == (1, 0, 1)
    timer.advance(270)  # past the TTL (300 s)
    stats = resolver.stats()
    assert (stats.positive_entries, stats.negative_entries, stats.expirations) == (0, 0, 2)
    assert resolver.stats().expirations == 2  # counted once


def test_an_expired_entry_is_a_miss_not_a_hit(
    resolver: DualCacheResolver, loader: TimedLoader, timer: FakeTimer
) -> None:
    resolver.resolve(by_slug("acme"))
    resolver.resolve(by_slug("nobody"))
    timer.advance(301)
    resolver.resolve(by_slug("acme"))
    resolver.resolve(by_slug("nobody"))
    stats = resolver.stats()
    assert (stats.hits, stats.negative_hits, stats.misses) == (0, 0, 4)
    assert len(loader.calls) == 4


def test_invalidations_are_counted(resolver: DualCacheResolver) -> None:
    resolver.resolve(by_slug("acme"))
    resolver.resolve(by_uuid(ACME_ID))
    resolver.resolve(by_slug("nobody"))
    assert resolver.invalidate(by_host("acme.test")) == 2  # the tenant and the not-found
    stats = resolver.stats()
    assert (stats.invalidations, stats.positive_entries, stats.negative_entries) == (1, 0, 0)
    assert resolver.invalidate(by_slug("globex")) == 0
    assert resolver.invalidate_all() == 0
    assert resolver.stats().invalidations == 3


# -- found and not-found entries ----------------------------------------------------------------


def test_a_tenant_created_after_a_not_found_answer_replaces_it(
    resolver: DualCacheResolver, db: MemoryLoader, loader: TimedLoader
) -> None:
    assert resolver.resolve(by_slug("newco")) is None
    db.put(NEWCO)
    assert resolver.resolve(by_slug("newco")) is None  # the cached answer, until invalidated
    resolver.invalidate(by_slug("newco"))
    assert resolver.resolve(by_slug("newco")) == NEWCO
    assert resolver.resolve(by_slug("newco")) == NEWCO
    stats = resolver.stats()
    assert (stats.positive_entries, stats.negative_entries) == (1, 0)
    assert (stats.hits, stats.negative_hits, stats.misses) == (1, 1, 2)
    assert len(loader.calls) == 2


def test_a_deleted_tenant_is_replaced_by_a_not_found_entry(
    resolver: DualCacheResolver, db: MemoryLoader
) -> None:
    assert resolver.resolve(by_slug("acme")) == ACME
    del db.tenants[ACME_ID]
    resolver.invalidate(by_uuid(ACME_ID))
    assert resolver.resolve(by_slug("acme")) is None
    assert resolver.resolve(by_slug("acme")) is None
    stats = resolver.stats()
    assert (stats.positive_entries, stats.negative_entries) == (0, 1)
    assert (stats.hits, stats.negative_hits) == (0, 1)


def test_storing_a_tenant_drops_the_not_found_entry_of_its_key(
    resolver: DualCacheResolver, db: MemoryLoader, loader: TimedLoader
) -> None:
    assert resolver.resolve(by_slug("newco")) is None
    assert resolver.stats().negative_entries == 1
    db.put(NEWCO)
    assert resolver.warm([NEWCO]) == 1  # under its uuid and slug, no invalidation
    stats = resolver.stats()
    assert (stats.positive_entries, stats.negative_entries) == (1, 0)
    assert resolver.resolve(by_slug("newco")) == NEWCO
    assert len(loader.calls) == 1


# -- the snapshot -------------------------------------------------------------------------------


def test_as_dict_is_json_and_hit_rate_counts_negative_hits(resolver: DualCacheResolver) -> None:
    assert resolver.stats().hit_rate == 0.0
    assert resolver.stats().as_dict()["hit_rate"] == 0.0
    resolver.resolve(by_slug("acme"))  # miss
    resolver.resolve(by_slug("acme"))  # hit
    resolver.resolve(by_slug("nobody"))  # miss
    resolver.resolve(by_slug("nobody"))  # negative hit
    resolver.resolve(by_slug("nobody"))  # negative hit
    resolver.resolve(by_slug("acme"))  # hit
    stats = resolver.stats()
    assert stats.hit_rate == 4 / 6
    data = json.loads(json.dumps(stats.as_dict()))
    assert data["hit_rate"] == 0.666667
    assert data["hits"] == 2
    assert data["negative_hits"] == 2
    assert data["misses"] == 2
    assert data["load"]["loads"] == 2
    assert set(data) == {
        "positive_entries",
        "negative_entries",
        "max_entries",
        "hits",
        "negative_hits",
        "misses",
        "invalidations",
        "evictions",
        "expirations",
        "load",
        "l2",
        "bus",
        "hit_rate",
    }


# -- through an app -----------------------------------------------------------------------------


@pytest.fixture
def v1_app() -> Flask:
    return build_app(TENANT_CACHE_USE_V2=False, TENANT_CACHE_V1_MAX_ENTRIES=2)


def test_the_stats_route_shows_the_v1_counters(v1_app: Flask) -> None:
    client = v1_app.test_client()
    expected = [
        ("acme", 200),  # miss
        ("acme", 200),  # hit
        ("nobody", 404),  # miss, not found
        ("nobody", 404),  # negative hit
        ("globex", 200),  # miss
        ("initech", 200),  # miss: a third found tenant evicts acme
        ("acme", 200),  # miss again
    ]
    for slug, status in expected:
        response = client.get("/whoami", headers={"X-Tenant-ID": slug})
        assert response.status_code == status, slug
        if status == 200:
            assert response.get_json()["version"] == "v1"
    response = client.get("/_tenant-cache/stats", headers=ADMIN)
    assert response.status_code == 200
    body: dict[str, Any] = response.get_json()
    v1 = body["v1"]
    assert (v1["hits"], v1["negative_hits"], v1["misses"]) == (1, 1, 5)
    assert (v1["positive_entries"], v1["negative_entries"], v1["max_entries"]) == (2, 1, 2)
    assert v1["evictions"] == 2
    assert v1["load"]["loads"] == 5
    assert v1["load"]["load_errors"] == 0
    assert v1["l2"] == {"l2_hits": 0, "l2_misses": 0, "l2_errors": 0}
    assert v1["bus"] == {}
    assert v1["hit_rate"] == round(2 / 7, 6)
    assert len(v1_app.extensions["test"]["loader"].calls) == 5
    v2 = body["v2"]
    assert (v2["hits"], v2["misses"], v2["entry_count"]) == (0, 0, 0)
    assert "redis" not in body


def test_current_resolver_version_is_v1(v1_app: Flask) -> None:
    with v1_app.test_request_context("/whoami", headers={"X-Tenant-ID": "acme"}):
        assert current_resolver_version() is None
        v1_app.preprocess_request()
        assert current_resolver_version() == "v1"
    v1_app.config["TENANT_CACHE_USE_V2"] = True
    with v1_app.test_request_context("/whoami", headers={"X-Tenant-ID": "acme"}):
        v1_app.preprocess_request()
        assert current_resolver_version() == "v2"
