"""In-memory tenants and loaders, so that no benchmark measures a database."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

from flask_tenant_cache import Tenant, TenantIdentifier

__all__ = ["ACME", "MemoryLoader", "SleepyLoader", "make_tenants"]

ACME = Tenant(
    id=uuid.UUID("5f0c4f2a-1b2c-4d3e-8f9a-0b1c2d3e4f5a"),
    slug="acme",
    name="Acme Corp",
    domains=("acme.test",),
)


def make_tenants(count: int) -> list[Tenant]:
    """``acme`` and ``count - 1`` more tenants with deterministic ids and slugs."""
    others = [
        Tenant(id=uuid.UUID(int=i + 1), slug=f"tenant-{i:05d}", name=f"Tenant {i}")
        for i in range(count - 1)
    ]
    return [ACME, *others]


class MemoryLoader:
    """A loader reading a dict of tenants by every alias; it counts its calls."""

    def __init__(self, tenants: list[Tenant]) -> None:
        self.tenants = tenants
        self._by_key = {a.cache_key: t for t in tenants for a in t.aliases}
        self.calls = 0

    def load(self, identifier: TenantIdentifier) -> Tenant | None:
        self.calls += 1
        return self._by_key.get(identifier.cache_key)

    def iter_tenants(self) -> Iterator[Tenant]:
        return iter(self.tenants)


class SleepyLoader:
    """A loader that takes ``delay`` seconds (a slow database), counting calls thread-safely."""

    def __init__(self, tenant: Tenant, delay: float) -> None:
        self.tenant = tenant
        self.delay = delay
        self.calls = 0
        self._lock = threading.Lock()

    def load(self, identifier: TenantIdentifier) -> Tenant | None:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        return self.tenant if identifier.value in (self.tenant.slug, str(self.tenant.id)) else None
