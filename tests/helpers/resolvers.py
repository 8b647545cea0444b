"""Resolver test helpers: an in-memory tenant table, resolver factories, released threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from flask_tenant_cache import Tenant, TenantIdentifier
from tests.helpers.app import ACME_ID, GLOBEX_ID, CountingLoader, FakeTimer

ACME = Tenant(id=ACME_ID, slug="acme", name="Acme", domains=("acme.test",))
GLOBEX = Tenant(id=GLOBEX_ID, slug="globex", name="Globex")


class MemoryLoader:
    """An in-memory tenant table: the real source of truth for these tests."""

    def __init__(self, *tenants: Tenant) -> None:
        self.tenants = {t.id: t for t in tenants}

    def put(self, tenant: Tenant) -> None:
        self.tenants[tenant.id] = tenant

    def load(self, ident: TenantIdentifier) -> Tenant | None:
        for tenant in self.tenants.values():
            if ident.cache_key in tenant.alias_keys:
                return tenant
        return None

    def iter_tenants(self) -> list[Tenant]:
        return list(self.tenants.values())


def with_test_defaults(factory: Callable[..., Any], loader: Any, timer: FakeTimer) -> Any:
    """``make(**options)``: ``factory(loader, timer=timer, **options)``, ttl 300 and negative 30."""

    def make(**options: Any) -> Any:
        options.setdefault("ttl", 300)
        options.setdefault("negative_ttl", 30)
        return factory(loader, timer=timer, **options)

    return make


def run_threads(count: int, target: Callable[[], Any]) -> tuple[list[Any], list[BaseException]]:
    """Run ``target`` in ``count`` threads released at once; return results and errors."""
    barrier = threading.Barrier(count)
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            value = target()
        except BaseException as exc:
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(value)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(t.is_alive() for t in threads)
    return results, errors


def open_when_all_wait(resolver: Any, loader: CountingLoader, waiters: int) -> threading.Thread:
    """Hold the loader until ``waiters`` requests wait on its load, then let it finish."""
    gate = loader.hold()

    def open_gate() -> None:
        deadline = time.monotonic() + 10
        while resolver.stats().as_dict()["load"]["coalesced"] < waiters:
            assert time.monotonic() < deadline, "the waiters never all joined the load"
            time.sleep(0.001)
        gate.set()

    opener = threading.Thread(target=open_gate)
    opener.start()
    return opener
