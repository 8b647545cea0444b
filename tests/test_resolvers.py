"""The resolver contract: one suite, run against every resolver."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from flask_tenant_cache import LoadTimeout, Tenant, TenantIdentifier, TenantLookupError
from flask_tenant_cache.resolvers import DualCacheResolver, UnifiedCacheResolver
from tests.helpers.app import ACME_ID, CountingLoader, FakeTimer
from tests.helpers.resolvers import (
    ACME,
    MemoryLoader,
    open_when_all_wait,
    run_threads,
    with_test_defaults,
)

INITECH = Tenant(id=uuid.UUID("7e57ab1e-0000-4000-8000-00000000000c"), slug="initech")

by_slug = TenantIdentifier.slug
by_host = TenantIdentifier.host
by_uuid = TenantIdentifier.uuid


def make_v2(loader: Any, timer: FakeTimer, **options: Any) -> UnifiedCacheResolver:
    return UnifiedCacheResolver(loader, timer=timer, **options)


def make_v1(loader: Any, timer: FakeTimer, **options: Any) -> DualCacheResolver:
    options.pop("idle_timeout", None)
    return DualCacheResolver(loader, timer=timer, **options)


RESOLVERS: dict[str, Callable[..., Any]] = {"v1": make_v1, "v2": make_v2}


@pytest.fixture
def loader(db: MemoryLoader) -> CountingLoader:
    return CountingLoader(db)


@pytest.fixture(params=sorted(RESOLVERS))
def make(request: pytest.FixtureRequest, loader: CountingLoader, timer: FakeTimer) -> Any:
    return with_test_defaults(RESOLVERS[request.param], loader, timer)


class TestContract:
    def test_hit_after_one_load(self, resolver: Any, loader: CountingLoader) -> None:
        for _ in range(5):
            assert resolver.resolve(by_slug("acme")) == ACME
        assert len(loader.calls) == 1

    def test_not_found_is_cached_for_negative_ttl(
        self, resolver: Any, loader: CountingLoader, timer: FakeTimer
    ) -> None:
        assert resolver.resolve(by_slug("nobody")) is None
        assert resolver.resolve(by_slug("nobody")) is None
        assert len(loader.calls) == 1
        timer.advance(31)
        assert resolver.resolve(by_slug("nobody")) is None
        assert len(loader.calls) == 2

    def test_negative_ttl_zero_caches_no_not_found(self, make: Any, loader: CountingLoader) -> None:
        resolver = make(negative_ttl=0)
        resolver.resolve(by_slug("nobody"))
        resolver.resolve(by_slug("nobody"))
        assert len(loader.calls) == 2

    def test_found_expires_after_ttl(
        self, resolver: Any, loader: CountingLoader, timer: FakeTimer
    ) -> None:
        resolver.resolve(by_uuid(ACME_ID))
        timer.advance(29)
        resolver.resolve(by_uuid(ACME_ID))
        assert len(loader.calls) == 1
        timer.advance(300)
        resolver.resolve(by_uuid(ACME_ID))
        assert len(loader.calls) == 2

    def test_least_recently_used_is_evicted(
        self, make: Any, loader: CountingLoader, db: MemoryLoader
    ) -> None:
        db.put(INITECH)
        resolver = make(max_entries=2)
        resolver.resolve(by_slug("acme"))
        resolver.resolve(by_slug("globex"))
        resolver.resolve(by_host("acme.test"))  # acme, by another alias, is now the most recent
        resolver.resolve(by_slug("initech"))  # a third tenant evicts globex
        calls = len(loader.calls)
        resolver.resolve(by_uuid(ACME_ID))
        resolver.resolve(by_slug("initech"))
        assert len(loader.calls) == calls
        resolver.resolve(by_slug("globex"))
        assert len(loader.calls) == calls + 1

    def test_concurrent_cold_requests_make_one_load(
        self, resolver: Any, loader: CountingLoader
    ) -> None:
        opener = open_when_all_wait(resolver, loader, waiters=99)
        results, errors = run_threads(100, lambda: resolver.resolve(by_slug("acme")))
        opener.join()
        assert errors == []
        assert results == [ACME] * 100
        assert len(loader.calls) == 1
        assert resolver.stats().as_dict()["load"]["coalesced"] == 99

    def test_loader_error_reaches_every_waiter_once_and_is_not_cached(
        self, resolver: Any, loader: CountingLoader
    ) -> None:
        loader.fail = RuntimeError("database down")
        opener = open_when_all_wait(resolver, loader, waiters=99)
        results, errors = run_threads(100, lambda: resolver.resolve(by_slug("acme")))
        opener.join()
        assert results == []
        assert len(errors) == 100
        assert all(isinstance(e, TenantLookupError) for e in errors)
        assert len(loader.calls) == 1  # no waiter retried the load after the failure
        loader.gate = None
        loader.fail = None
        assert resolver.resolve(by_slug("acme")) == ACME  # the error was not cached
        assert len(loader.calls) == 2
        stats = resolver.stats().as_dict()
        assert stats["load"]["load_errors"] == 1

    def test_waiters_give_up_after_the_load_timeout(
        self, make: Any, loader: CountingLoader
    ) -> None:
        resolver = make(load_timeout=0.2)
        loader.hold()
        leader = threading.Thread(target=resolver.resolve, args=(by_slug("acme"),))
        leader.start()
        assert loader.entered.wait(5)
        with pytest.raises(LoadTimeout):
            resolver.resolve(by_slug("acme"))
        loader.gate.set()
        leader.join(5)
        assert resolver.stats().as_dict()["load"]["load_timeouts"] == 1

    @pytest.mark.parametrize(
        "alias", [by_uuid(ACME_ID), by_slug("acme"), by_host("ACME.test.")], ids=str
    )
    def test_invalidating_any_alias_drops_them_all(
        self, resolver: Any, loader: CountingLoader, alias: TenantIdentifier
    ) -> None:
        for ident in (by_uuid(ACME_ID), by_slug("acme"), by_host("acme.test")):
            resolver.resolve(ident)
        resolver.resolve(by_slug("globex"))
        assert len(loader.calls) == 2  # a load caches its tenant under every alias
        assert resolver.invalidate(alias) == 1  # one tenant entry, under three keys
        for ident in (by_uuid(ACME_ID), by_slug("acme"), by_host("acme.test")):
            resolver.resolve(ident)
        assert len(loader.calls) == 3
        resolver.resolve(by_slug("globex"))  # another tenant stays cached
        assert len(loader.calls) == 3

    def test_invalidating_an_uncached_alias_finds_the_tenant_by_its_other_names(
        self, resolver: Any, loader: CountingLoader
    ) -> None:
        resolver.resolve(by_uuid(ACME_ID))
        assert resolver.invalidate(by_host("acme.test")) == 1
        resolver.resolve(by_uuid(ACME_ID))
        assert len(loader.calls) == 2

    def test_rename_drops_the_old_name_and_the_new_names_negative_entry(
        self, resolver: Any, loader: CountingLoader, db: MemoryLoader
    ) -> None:
        assert resolver.resolve(by_slug("acme")) == ACME
        assert resolver.resolve(by_slug("acme-corp")) is None
        renamed = Tenant(id=ACME_ID, slug="acme-corp", name="Acme", domains=("acme.test",))
        db.put(renamed)
        resolver.invalidate(by_uuid(ACME_ID))
        assert resolver.resolve(by_slug("acme-corp")) == renamed
        assert resolver.resolve(by_slug("acme")) is None

    def test_a_load_racing_an_invalidation_does_not_store_its_stale_result(
        self, resolver: Any, loader: CountingLoader, db: MemoryLoader
    ) -> None:
        loader.hold()
        first: list[Any] = []
        leader = threading.Thread(target=lambda: first.append(resolver.resolve(by_slug("acme"))))
        leader.start()
        assert loader.entered.wait(5)  # the load read the old row...
        renamed = Tenant(id=ACME_ID, slug="acme", name="Acme Renamed")
        db.put(renamed)
        assert resolver.invalidate(by_uuid(ACME_ID)) == 0  # ...the change is invalidated...
        loader.gate.set()  # ...then the stale load finishes
        leader.join(5)
        assert first == [renamed]  # the gate held the read until after the rename
        loader.gate = None
        assert resolver.resolve(by_slug("acme")) == renamed
        assert len(loader.calls) == 2
        assert resolver.stats().as_dict()["load"]["stale_loads_discarded"] == 1

    def test_requests_after_an_invalidation_do_not_join_the_stale_load(
        self, resolver: Any, loader: CountingLoader, db: MemoryLoader
    ) -> None:
        old_row = threading.Event()
        loads = []

        class SlowOldLoader:
            def load(self, ident: TenantIdentifier) -> Tenant | None:
                loads.append(ident)
                if len(loads) == 1:
                    stale = db.load(ident)
                    old_row.set()
                    assert gate.wait(5)
                    return stale
                return db.load(ident)

        gate = threading.Event()
        resolver.loader = SlowOldLoader()
        first: list[Any] = []
        leader = threading.Thread(target=lambda: first.append(resolver.resolve(by_slug("acme"))))
        leader.start()
        assert old_row.wait(5)
        renamed = Tenant(id=ACME_ID, slug="acme", name="Acme Renamed")
        db.put(renamed)
        resolver.invalidate(by_slug("acme"))
        assert resolver.resolve(by_slug("acme")) == renamed  # a fresh load, not the stale one
        gate.set()
        leader.join(5)
        assert first == [ACME]  # the request that asked first got what it asked for
        assert resolver.resolve(by_slug("acme")) == renamed
        assert len(loads) == 2

    def test_invalidate_all(self, resolver: Any, loader: CountingLoader) -> None:
        resolver.resolve(by_slug("acme"))
        resolver.resolve(by_slug("nobody"))
        assert resolver.invalidate_all() == 2
        resolver.resolve(by_slug("acme"))
        assert len(loader.calls) == 3

    def test_warm_stores_every_alias(
        self, resolver: Any, loader: CountingLoader, db: MemoryLoader
    ) -> None:
        assert resolver.warm(db.iter_tenants()) == 2  # under 5 keys
        for ident in (by_uuid(ACME_ID), by_slug("acme"), by_host("acme.test"), by_slug("globex")):
            assert resolver.resolve(ident) is not None
        assert loader.calls == []

    def test_a_loader_returning_a_wrong_type_is_a_lookup_error(
        self, resolver: Any, loader: CountingLoader
    ) -> None:
        resolver.loader = type("Bad", (), {"load": lambda self, ident: {"slug": "acme"}})()
        with pytest.raises(TenantLookupError):
            resolver.resolve(by_slug("acme"))

    def test_stats_count_hits_and_misses(self, resolver: Any) -> None:
        resolver.resolve(by_slug("acme"))
        resolver.resolve(by_slug("acme"))
        resolver.resolve(by_slug("nobody"))
        stats = resolver.stats().as_dict()
        assert stats["hits"] == 1
        assert stats["misses"] == 2
        assert stats["load"]["loads"] == 2


class TestUnifiedCache:
    def test_an_entry_not_read_for_the_idle_timeout_expires(
        self, loader: CountingLoader, timer: FakeTimer
    ) -> None:
        resolver = UnifiedCacheResolver(loader, ttl=300, idle_timeout=60, timer=timer)
        resolver.resolve(by_slug("acme"))
        for _ in range(5):  # read every 50 s: never idle for 60 s, kept for the TTL
            timer.advance(50)
            resolver.resolve(by_slug("acme"))
        assert len(loader.calls) == 1
        timer.advance(61)
        resolver.resolve(by_slug("acme"))
        assert len(loader.calls) == 2
        assert resolver.stats().expirations >= 1

    def test_no_idle_timeout(self, loader: CountingLoader, timer: FakeTimer) -> None:
        resolver = UnifiedCacheResolver(loader, ttl=300, idle_timeout=None, timer=timer)
        resolver.resolve(by_slug("acme"))
        timer.advance(299)
        resolver.resolve(by_slug("acme"))
        assert len(loader.calls) == 1

    def test_entries_are_unified(self, loader: CountingLoader, timer: FakeTimer) -> None:
        resolver = UnifiedCacheResolver(loader, max_entries=3, max_negative_entries=3, timer=timer)
        resolver.resolve(by_slug("acme"))
        resolver.resolve(by_slug("nobody"))
        resolver.resolve(by_uuid(uuid.uuid4()))
        stats = resolver.stats()
        assert stats.entry_count == 3
        assert stats.weighted_size == 5  # acme under its uuid, slug and domain
        resolver.resolve(by_slug("globex"))
        stats = resolver.stats()
        assert stats.entry_count == 3
        assert stats.evictions == 1
