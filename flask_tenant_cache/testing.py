"""Helpers for testing apps that use the extension: loader, client, clock and load counts."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from flask import Flask, current_app
from flask.testing import FlaskClient
from werkzeug.datastructures import Headers

from .identifiers import TenantIdentifier
from .loaders import TenantLoader
from .tenant import Tenant

__all__ = [
    "FakeClock",
    "InMemoryTenantLoader",
    "LoaderCalls",
    "TenantClient",
    "expect_loader_calls",
    "loader_calls",
    "tenant_headers",
    "tenant_host",
]

#: What names a tenant in these helpers: the tenant itself, its slug, or its UUID.
TenantRef = Tenant | str | uuid.UUID


class InMemoryTenantLoader:
    """A loader over a dict of tenants, for tests: no database, every change seen at once.

    It counts its calls in :attr:`calls` and fails on demand (:attr:`fail`), to test the
    503 path. Like any loader it caches nothing: the extension's caches still do, so after
    :meth:`put` or :meth:`remove` call ``tenant_cache.invalidate(...)`` as the app would.

    :param tenants: the initial tenants.
    """

    def __init__(self, tenants: Iterable[Tenant] = ()) -> None:
        self._lock = threading.Lock()
        self._tenants: dict[Any, Tenant] = {}
        #: Every identifier :meth:`load` was called with, in order.
        self.calls: list[TenantIdentifier] = []
        #: When set, :meth:`load` and :meth:`iter_tenants` raise it (a database outage).
        self.fail: BaseException | None = None
        for tenant in tenants:
            self.put(tenant)

    def put(self, tenant: Tenant) -> None:
        """Add ``tenant``, or replace the tenant with its id."""
        with self._lock:
            self._tenants[tenant.id] = tenant

    def remove(self, tenant_id: Any) -> None:
        """Remove the tenant with ``tenant_id`` (a no-op if there is none)."""
        with self._lock:
            self._tenants.pop(tenant_id, None)

    def load(self, identifier: TenantIdentifier) -> Tenant | None:
        """The tenant ``identifier`` names, or None; raises :attr:`fail` if set."""
        with self._lock:
            self.calls.append(identifier)
            tenants = list(self._tenants.values())
        if self.fail is not None:
            raise self.fail
        key = identifier.cache_key
        return next((t for t in tenants if key in t.alias_keys), None)

    def iter_tenants(self) -> list[Tenant]:
        """Every tenant; raises :attr:`fail` if set."""
        if self.fail is not None:
            raise self.fail
        with self._lock:
            return list(self._tenants.values())


class FakeClock:
    """A clock that moves only when told to: pass it as ``TenantCache(timer=...)``.

    TTLs and idle timeouts then expire at :meth:`advance`, never with a ``sleep``.

    :param start: the initial reading, in seconds.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (≥ 0)."""
        if seconds < 0:
            raise ValueError("a monotonic clock does not go back")
        with self._lock:
            self.now += seconds


def _app(app: Flask | None) -> Flask:
    if app is not None:
        return app
    found: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    return found


def _header_value(tenant: TenantRef) -> str:
    if isinstance(tenant, Tenant):
        return tenant.slug
    return str(tenant)


def tenant_headers(tenant: TenantRef, *, app: Flask | None = None) -> dict[str, str]:
    """The headers that make a request name ``tenant`` (by slug, or the UUID or slug given),
    under the app's ``TENANT_CACHE_HEADER``.

    :param app: the app (default: the current app).
    """
    return {_app(app).config.get("TENANT_CACHE_HEADER", "X-Tenant-ID"): _header_value(tenant)}


def tenant_host(tenant: TenantRef, *, app: Flask | None = None) -> str:
    """The host that names ``tenant``: its slug under the app's first base domain, or, with
    no base domain, its first custom domain.

    :raises ValueError: if the tenant cannot be named by host.
    """
    domains = _app(app).config.get("TENANT_CACHE_BASE_DOMAINS") or []
    if isinstance(domains, str):
        domains = [d.strip() for d in domains.split(",") if d.strip()]
    if isinstance(tenant, uuid.UUID):
        raise ValueError("a UUID names a tenant by header only")
    if domains:
        slug = tenant.slug if isinstance(tenant, Tenant) else tenant
        return f"{slug}.{domains[0]}"
    if isinstance(tenant, Tenant) and tenant.domains:
        return tenant.domains[0]
    raise ValueError("no TENANT_CACHE_BASE_DOMAINS and no custom domain: use the header")


class TenantClient(FlaskClient):
    """A test client whose requests name a tenant: ``client.get("/", tenant=acme)``.

    Set it as ``app.test_client_class``, or use the ``tenant_client`` pytest fixture.
    ``tenant=`` takes a :class:`~flask_tenant_cache.Tenant`, a slug or a UUID; ``via="host"``
    sends it as the Host instead of the header (see :func:`tenant_host`). A default tenant
    for every request goes in :attr:`tenant`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The tenant every request names unless it says otherwise (None: no tenant).
        self.tenant: TenantRef | None = None

    def open(
        self,
        *args: Any,
        tenant: TenantRef | None = None,
        via: Literal["header", "host"] = "header",
        **kwargs: Any,
    ) -> Any:
        tenant = tenant if tenant is not None else self.tenant
        if tenant is not None:
            if via == "host":
                kwargs["base_url"] = f"http://{tenant_host(tenant, app=self.application)}"
            else:
                headers = Headers(kwargs.pop("headers", None))
                for name, value in tenant_headers(tenant, app=self.application).items():
                    headers.setdefault(name, value)
                kwargs["headers"] = headers
        return super().open(*args, **kwargs)


class LoaderCalls:
    """The loader calls made inside a :func:`loader_calls` block."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: Every identifier loaded, in order.
        self.identifiers: list[TenantIdentifier] = []

    @property
    def count(self) -> int:
        """How many loader calls were made."""
        return len(self.identifiers)

    def _record(self, identifier: TenantIdentifier) -> None:
        with self._lock:
            self.identifiers.append(identifier)


class _Spy:
    """A loader that records each call, then delegates."""

    def __init__(self, inner: TenantLoader, calls: LoaderCalls) -> None:
        self.inner = inner
        self.calls = calls

    def load(self, identifier: TenantIdentifier) -> Tenant | None:
        self.calls._record(identifier)
        return self.inner.load(identifier)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@contextmanager
def loader_calls(app: Flask | None = None) -> Iterator[LoaderCalls]:
    """Record the loader calls every resolver of ``app`` makes inside the block.

    .. code-block:: python

        with loader_calls(app) as calls:
            client.get("/", tenant="acme")
            client.get("/", tenant="acme")
        assert calls.count == 1  # the second request was a cache hit

    Calls from other threads (concurrent requests, shadow lookups) are recorded too.
    """
    state = _app(app).extensions["tenant_cache"]
    calls = LoaderCalls()
    saved = {version: r.loader for version, r in state.resolvers.items()}
    try:
        for version, resolver in state.resolvers.items():
            resolver.loader = _Spy(saved[version], calls)
        yield calls
    finally:
        for version, resolver in state.resolvers.items():
            resolver.loader = saved[version]


@contextmanager
def expect_loader_calls(count: int, app: Flask | None = None) -> Iterator[LoaderCalls]:
    """Like :func:`loader_calls`, and fail the test unless the block made exactly ``count``.

    :raises AssertionError: naming the identifiers loaded, if the count differs.
    """
    with loader_calls(app) as calls:
        yield calls
    if calls.count != count:
        loaded = ", ".join(i.cache_key for i in calls.identifiers) or "none"
        raise AssertionError(f"expected {count} loader call(s), got {calls.count}: {loaded}")
