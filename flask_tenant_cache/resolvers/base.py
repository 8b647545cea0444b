"""What every resolver shares: the protocol, cache entries, the load path and invalidation."""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Protocol

from ..errors import TenantLookupError
from ..identifiers import TenantIdentifier
from ..loaders import TenantLoader
from ..metrics import LoadStats, SecondLayerStats
from ..tenant import Tenant
from ._coalesce import SingleFlight
from ._store import CachedTenant

__all__ = ["CachingResolver", "Resolver", "SecondLayer"]

logger = logging.getLogger("flask_tenant_cache")

Timer = Callable[[], float]


class Resolver(Protocol):
    """What the extension needs of a resolver."""

    @property
    def version(self) -> str:
        """``"v1"`` or ``"v2"``."""

    def resolve(self, ident: TenantIdentifier) -> Tenant | None:
        """The tenant ``ident`` names, None if there is none; raises TenantLookupError."""

    def invalidate(self, ident: TenantIdentifier) -> int:
        """Drop every cached alias of the tenant ``ident`` names; return the entries dropped."""

    def invalidate_all(self) -> int:
        """Drop every entry; return how many there were."""

    def warm(self, tenants: Iterable[Tenant]) -> int:
        """Store ``tenants`` under all their aliases; return the entries stored."""

    def stats(self) -> Any:
        """A snapshot of the counters, with ``as_dict()``."""


class SecondLayer(Protocol):
    """A cache shared by processes (Redis), read on an L1 miss before the loader."""

    def get(self, ident: TenantIdentifier) -> tuple[bool | None, Tenant | None, Any]:
        """``(hit, tenant, token)``: hit is None when the layer failed; ``token`` guards put."""

    def put(self, ident: TenantIdentifier, tenant: Tenant | None, token: Any) -> bool:
        """Store ``tenant`` (None: not found) unless an invalidation came after ``token``;
        False if it failed."""

    def abandon(self, ident: TenantIdentifier) -> None:
        """The load that :meth:`get` let this process make failed."""


class CachingResolver(ABC):
    """The load path both resolvers share: coalesced loads, guarded against invalidation races.

    Subclasses own the storage (:meth:`_lookup`, :meth:`_peek`, :meth:`_store`, :meth:`_drop`,
    :meth:`_clear`), always called with ``self._lock`` held.

    :param loader: what :meth:`resolve` calls on a miss.
    :param load_timeout: seconds a request waits for another's load before a 503.
    :param stale_if_error: seconds after its expiry that a tenant is still served while the
        loader fails (0: never).
    :param timer: the clock, injected so tests move time instead of sleeping.
    """

    version: ClassVar[str]

    def __init__(
        self,
        loader: TenantLoader,
        *,
        load_timeout: float | None = 5.0,
        stale_if_error: float = 0.0,
        timer: Timer = time.monotonic,
    ) -> None:
        self.loader = loader
        self.stale_if_error = stale_if_error
        #: The optional second layer shared by processes (see :mod:`.redis_layer`).
        self.l2: SecondLayer | None = None
        self._timer = timer
        self._lock = threading.Lock()
        self._flights: SingleFlight[Tenant | None] = SingleFlight(load_timeout)
        # Bumped by every invalidation: a load that began under an older epoch returns its
        # result to the requests that were waiting for it but does not store it.
        self._epoch = 0
        self._loads = self._load_errors = self._stale_loads = self._invalidations = 0
        self._stale_serves = 0
        self._load_time_sum = self._load_time_max = 0.0
        self._l2_hits = self._l2_misses = self._l2_errors = 0

    def resolve(self, ident: TenantIdentifier) -> Tenant | None:
        """Return the tenant ``ident`` names, or None; one coalesced load on a miss.

        :raises TenantLookupError: if the loader failed (never cached as not-found).
        """
        key = ident.cache_key
        with self._lock:
            entry = self._lookup(key, self._timer())
        if entry is not None:
            return entry.tenant
        return self._flights.do(key, lambda: self._load(ident))

    def _load(self, ident: TenantIdentifier) -> Tenant | None:
        with self._lock:
            # A load that finished just before this one began may have stored it already.
            entry = self._peek(ident.cache_key)
            if entry is not None:
                return entry.tenant
            epoch = self._epoch
        started = self._timer()
        try:
            tenant = self._fetch(ident)
        except Exception as exc:
            with self._lock:
                self._load_errors += 1
                stale = self._stale(ident.cache_key, self._timer()) if self.stale_if_error else None
                if stale is not None:
                    self._stale_serves += 1
            logger.warning("tenant lookup for %s failed: %r", ident.cache_key, exc)
            if stale is not None:
                return stale  # never stored: the next request tries the loader again
            if isinstance(exc, TenantLookupError):
                raise
            raise TenantLookupError("the tenant could not be looked up") from exc
        elapsed = self._timer() - started
        with self._lock:
            self._loads += 1
            self._load_time_sum += elapsed
            self._load_time_max = max(self._load_time_max, elapsed)
            if epoch == self._epoch:
                self._store(ident, tenant, self._timer())
            else:
                self._stale_loads += 1
        return tenant

    def _fetch(self, ident: TenantIdentifier) -> Tenant | None:
        """Ask the second layer, if any, then the loader (whose tenant goes to the layer)."""
        l2, token = self.l2, None
        if l2 is not None:
            hit, cached, token = l2.get(ident)
            with self._lock:
                if hit:
                    self._l2_hits += 1
                    return cached
                if hit is None:
                    self._l2_errors += 1
                else:
                    self._l2_misses += 1
        try:
            tenant = self.loader.load(ident)
            if tenant is not None and not isinstance(tenant, Tenant):
                raise TypeError(f"the loader returned {type(tenant).__name__}, not Tenant or None")
        except Exception:
            if l2 is not None and token is not None:
                l2.abandon(ident)  # the other processes waiting for it load for themselves
            raise
        stored = l2 is None or token is None or l2.put(ident, tenant, token)
        if not stored:
            with self._lock:
                self._l2_errors += 1
        return tenant

    def invalidate(self, ident: TenantIdentifier) -> int:
        """Drop every cached alias of the tenant ``ident`` names, and all not-found entries."""
        with self._lock:
            self._epoch += 1
            self._invalidations += 1
            dropped = self._drop(ident)
        self._flights.forget()
        return dropped

    def invalidate_all(self) -> int:
        """Drop every entry; return how many there were."""
        with self._lock:
            self._epoch += 1
            self._invalidations += 1
            dropped = self._clear()
        self._flights.forget()
        return dropped

    def warm(self, tenants: Iterable[Tenant]) -> int:
        """Store ``tenants`` under all their aliases; return the entries stored."""
        stored = 0
        for tenant in tenants:
            with self._lock:
                now = self._timer()
                for alias in tenant.aliases:
                    self._store(alias, tenant, now)
                    stored += 1
        return stored

    def _load_stats(self) -> LoadStats:
        return LoadStats(
            loads=self._loads,
            load_errors=self._load_errors,
            load_time_sum=self._load_time_sum,
            load_time_max=self._load_time_max,
            coalesced=self._flights.coalesced,
            load_timeouts=self._flights.timeouts,
            stale_loads_discarded=self._stale_loads,
            stale_serves=self._stale_serves,
        )

    def _l2_stats(self) -> SecondLayerStats:
        return SecondLayerStats(self._l2_hits, self._l2_misses, self._l2_errors)

    @abstractmethod
    def _lookup(self, key: str, now: float) -> CachedTenant | None:
        """The live entry for ``key``, counted as a hit or a miss."""

    @abstractmethod
    def _peek(self, key: str) -> CachedTenant | None:
        """The live entry for ``key``, uncounted."""

    @abstractmethod
    def _stale(self, key: str, now: float) -> Tenant | None:
        """An expired tenant still inside the ``stale_if_error`` window, or None."""

    @abstractmethod
    def _store(self, ident: TenantIdentifier, tenant: Tenant | None, now: float) -> None:
        """Cache ``tenant`` (None: not found) under ``ident``."""

    @abstractmethod
    def _drop(self, ident: TenantIdentifier) -> int:
        """Drop what an invalidation of ``ident`` drops; return how many entries."""

    @abstractmethod
    def _clear(self) -> int:
        """Drop every entry; return how many there were."""

    @abstractmethod
    def stats(self) -> Any:
        """A snapshot of the counters, with ``as_dict()``."""
