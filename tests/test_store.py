"""The store both resolvers share: an exact alias index, O(1) stats, loads per tenant, forks."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_tenant_cache import Tenant, TenantIdentifier
from flask_tenant_cache.resolvers import DualCacheResolver, UnifiedCacheResolver
from tests.helpers import forks_with_threads
from tests.helpers.app import CountingLoader, FakeTimer
from tests.helpers.resolvers import MemoryLoader, run_threads

by_slug = TenantIdentifier.slug
by_host = TenantIdentifier.host
by_uuid = TenantIdentifier.uuid

IDS = [uuid.UUID(int=0xA000 + n) for n in range(4)]


def tenant(n: int, version: int = 0) -> Tenant:
    """Tenant ``n``; each ``version`` renames it (a new slug and a new domain)."""
    return Tenant(
        id=IDS[n], slug=f"t{n}-v{version}", name=f"T{n}", domains=(f"t{n}-v{version}.test",)
    )


def make(version: str, loader: Any, timer: FakeTimer, **options: Any) -> Any:
    if version == "v1":
        return DualCacheResolver(loader, timer=timer, ttl=50, negative_ttl=20, **options)
    return UnifiedCacheResolver(
        loader, timer=timer, ttl=50, negative_ttl=20, idle_timeout=30, **options
    )


def check_index(resolver: Any) -> None:
    """Every key holds an entry stored under all of that tenant's aliases, and the counts
    agree with the table."""
    store = resolver._store
    entries = {id(e): e for e in store.table.values()}
    for key, entry in store.table.items():
        assert key in entry.aliases()
    for entry in entries.values():
        assert all(store.table.get(k) is entry for k in entry.aliases())
    assert store.found == len(entries)
    assert store.found_keys == len(store.table)
    ids = [e.tenant.id for e in entries.values()]
    assert len(ids) == len(set(ids)), "two entries for one tenant"


operations = st.lists(
    st.tuples(
        st.sampled_from(["resolve", "rename", "invalidate", "invalidate_all", "advance", "warm"]),
        st.integers(0, 3),
        st.sampled_from(["uuid", "slug", "host", "old-slug"]),
    ),
    max_size=60,
)


@pytest.mark.parametrize("version", ["v1", "v2"])
@settings(max_examples=150, deadline=None)
@given(steps=operations)
def test_the_alias_index_stays_exact(version: str, steps: list[tuple[str, int, str]]) -> None:
    timer = FakeTimer()
    versions = [0, 0, 0, 0]
    db = MemoryLoader(*(tenant(n) for n in range(4)))
    resolver = make(version, db, timer, max_entries=3, max_negative_entries=2)

    def ident(n: int, how: str) -> TenantIdentifier:
        current = tenant(n, versions[n])
        if how == "uuid":
            return by_uuid(current.id)
        if how == "host":
            return by_host(current.domains[0])
        return by_slug(current.slug if how == "slug" else tenant(n, max(0, versions[n] - 1)).slug)

    for op, n, how in steps:
        if op == "resolve":
            found = resolver.resolve(ident(n, how))
            if found is not None:
                assert found.id == IDS[n]
        elif op == "rename":
            versions[n] += 1
            db.put(tenant(n, versions[n]))
            # A rename left unannounced: the cache may still hold the old snapshot.
        elif op == "invalidate":
            store = resolver._store
            target = ident(n, how)
            held = store.table.get(target.cache_key)
            doomed = held.aliases() if held is not None else frozenset()
            others = {k: e for k, e in store.table.items() if k not in doomed}
            resolver.invalidate(target)
            assert not doomed & store.table.keys(), "a key of the invalidated tenant survived"
            assert {k: store.table[k] for k in others} == others, "another tenant's key was lost"
            assert store.negative_count == 0
        elif op == "invalidate_all":
            resolver.invalidate_all()
            assert resolver._store.table == {}
            assert resolver._store.negative_count == 0
        elif op == "advance":
            timer.advance(7 * (n + 1))
        else:
            resolver.warm([tenant(n, versions[n])])
        check_index(resolver)
        stats = resolver.stats().as_dict()
        entries = stats["positive_entries"] if version == "v1" else stats["entry_count"]
        assert entries >= 0


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_fresher_snapshot_replaces_every_key_of_the_old_one(version: str) -> None:
    timer = FakeTimer()
    db = MemoryLoader(tenant(0))
    resolver = make(version, db, timer)
    assert resolver.resolve(by_slug("t0-v0")) == tenant(0)
    db.put(tenant(0, 1))
    resolver.invalidate(by_slug("t0-v1"))  # by its new name, which the cache never held
    assert resolver.resolve(by_uuid(IDS[0])) == tenant(0)  # not announced: still the old one
    resolver.warm([tenant(0, 1)])
    assert resolver.resolve(by_slug("t0-v0")) is None  # the old name went with the old snapshot
    check_index(resolver)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_invalidating_one_tenant_keeps_another_tenants_load(version: str) -> None:
    timer = FakeTimer()
    loader = CountingLoader(MemoryLoader(tenant(0), tenant(1)))
    resolver = make(version, loader, timer)
    resolver.resolve(by_slug("t0-v0"))
    loader.hold()
    worker = threading.Thread(target=resolver.resolve, args=(by_slug("t1-v0"),))
    worker.start()
    assert loader.entered.wait(5)
    resolver.invalidate(by_uuid(IDS[0]))  # tenant 0, while tenant 1's load is in flight
    loader.gate.set()
    worker.join(5)
    calls = len(loader.calls)
    assert resolver.resolve(by_host("t1-v0.test")) == tenant(1)
    assert len(loader.calls) == calls, "tenant 1's load was discarded"
    assert resolver.stats().as_dict()["load"]["stale_loads_discarded"] == 0


@pytest.mark.parametrize("how", ["uuid", "host"])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_load_overtaken_by_its_tenants_invalidation_is_not_stored(version: str, how: str) -> None:
    timer = FakeTimer()
    db = MemoryLoader(tenant(0))
    loader = CountingLoader(db)
    resolver = make(version, loader, timer)
    loader.hold()
    worker = threading.Thread(target=resolver.resolve, args=(by_slug("t0-v0"),))
    worker.start()
    assert loader.entered.wait(5)
    # Invalidated by an alias the load was not asked for, and that nothing caches yet.
    resolver.invalidate(by_uuid(IDS[0]) if how == "uuid" else by_host("t0-v0.test"))
    loader.gate.set()
    worker.join(5)
    assert resolver._store.table == {}
    assert resolver.stats().as_dict()["load"]["stale_loads_discarded"] == 1


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_warm_racing_an_invalidation_does_not_store_the_old_row(version: str) -> None:
    timer = FakeTimer()
    db = MemoryLoader(tenant(0), tenant(1))
    resolver = make(version, db, timer)

    def rows() -> Any:
        old = tenant(0)  # read before the rename below was committed and invalidated
        db.put(tenant(0, 1))
        resolver.invalidate(by_uuid(IDS[0]))
        yield old
        yield tenant(1)

    resolver.warm(rows())
    assert resolver.resolve(by_slug("t0-v0")) is None  # the old row was not stored
    assert resolver.resolve(by_uuid(IDS[0])) == tenant(0, 1)
    assert resolver._store.table.get(by_slug("t1-v0").cache_key) is not None


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_hits_are_counted_exactly_across_threads(version: str) -> None:
    timer = FakeTimer()
    resolver = make(version, MemoryLoader(tenant(0)), timer)
    ident = by_slug("t0-v0")
    resolver.resolve(ident)

    def read() -> None:
        for _ in range(20_000):
            resolver.resolve(ident)

    _, errors = run_threads(8, read)
    assert errors == []
    stats = resolver.stats().as_dict()
    assert stats["hits"] == 8 * 20_000
    assert stats["misses"] == 1


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_invalidate_all_swaps_the_table_and_releases_it_a_bounded_amount_at_a_time(
    version: str,
) -> None:
    timer = FakeTimer()
    many = [Tenant(id=uuid.uuid4(), slug=f"s{n}") for n in range(3000)]
    resolver = make(version, MemoryLoader(*many), timer, max_entries=10_000)
    resolver.warm(many)
    assert resolver.invalidate_all() == 3000
    store = resolver._store
    assert store.table == {}
    assert store.size == 0
    assert store._garbage, "the old table is released later, not under this call"
    for _ in range(100):
        resolver.stats()
    assert store._garbage == []


def in_child(check: Callable[[], None]) -> int:
    """Run ``check`` in a forked child; return its exit status (0: passed)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's outcome is its exit status
        code = 1
        try:
            check()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@forks_with_threads
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_child_forked_during_a_load_loads_for_itself(version: str) -> None:
    parent = os.getpid()
    release = threading.Event()

    class ParentBlocks(MemoryLoader):
        def load(self, ident: TenantIdentifier) -> Tenant | None:
            if os.getpid() == parent:
                entered.set()
                release.wait(10)
            return super().load(ident)

    entered = threading.Event()
    timer = FakeTimer()
    resolver = make(version, ParentBlocks(tenant(0)), timer, load_timeout=3)
    worker = threading.Thread(target=resolver.resolve, args=(by_slug("t0-v0"),))
    worker.start()
    assert entered.wait(5)
    try:

        def child() -> None:
            # The parent's load never finishes here: joining it would time out with a 503.
            assert resolver.resolve(by_slug("t0-v0")) == tenant(0)
            assert resolver.stats().as_dict()["load"]["load_timeouts"] == 0

        assert in_child(child) == 0
    finally:
        release.set()
        worker.join(5)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_request_after_an_invalidation_never_joins_a_load_that_began_before_it(
    version: str,
) -> None:
    timer = FakeTimer()
    db = MemoryLoader(tenant(0))
    read_done, release = threading.Event(), threading.Event()

    class SlowRead(MemoryLoader):
        def load(self, ident: TenantIdentifier) -> Tenant | None:
            found = db.load(ident)  # read now, answered later: a slow query
            if ident == by_slug("t0-v1") and not read_done.is_set():
                read_done.set()
                release.wait(5)
            return found

    resolver = make(version, SlowRead(), timer)
    early = threading.Thread(target=resolver.resolve, args=(by_slug("t0-v1"),))
    early.start()
    assert read_done.wait(5)  # it read "no tenant t0-v1": the rename is not committed yet
    db.put(tenant(0, 1))
    resolver.invalidate(by_uuid(IDS[0]))  # the tenant's new name is not a key it knew
    try:
        # invalidate() has returned: this request must see the rename.
        assert resolver.resolve(by_slug("t0-v1")) == tenant(0, 1)
    finally:
        release.set()
        early.join(5)
