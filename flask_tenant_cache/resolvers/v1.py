"""The v1 resolver: a positive and a negative cache, with detailed metrics."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..identifiers import TenantIdentifier
from ..loaders import TenantLoader
from ..metrics import DualCacheStats
from ..tenant import Tenant
from ._store import CachedTenant, Found, NotFound, TenantLRU, keys_to_invalidate
from .base import CachingResolver, Timer

__all__ = ["DualCacheResolver"]


class DualCacheResolver(CachingResolver):
    """Two cachetools LRU caches: one of found tenants, one of not-found identifiers.

    Each holds at most ``max_entries`` (least recently used evicted first); found tenants live
    ``ttl`` seconds, not-found answers ``negative_ttl`` (0 turns negative caching off). Its
    metrics are detailed (see :class:`~.metrics.DualCacheStats`).

    :param bus_stats: returns the invalidation bus's counters, shown with these metrics.
    """

    version = "v1"

    def __init__(
        self,
        loader: TenantLoader,
        *,
        ttl: float = 300.0,
        negative_ttl: float = 30.0,
        max_entries: int = 1000,
        max_negative_entries: int | None = None,
        load_timeout: float | None = 5.0,
        stale_if_error: float = 0.0,
        timer: Timer = time.monotonic,
        bus_stats: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        super().__init__(
            loader, load_timeout=load_timeout, stale_if_error=stale_if_error, timer=timer
        )
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self._positive = TenantLRU(max_entries, grace=stale_if_error)
        self._negative = TenantLRU(max_negative_entries or max_entries)
        self._bus_stats = bus_stats
        self._hits = self._negative_hits = self._misses = 0

    def _lookup(self, key: str, now: float) -> CachedTenant | None:
        entry = self._positive.live(key, now)
        if entry is not None:
            self._hits += 1
            return entry
        entry = self._negative.live(key, now)
        if entry is not None:
            self._negative_hits += 1
            return entry
        self._misses += 1
        return None

    def _peek(self, key: str) -> CachedTenant | None:
        now = self._timer()
        return self._positive.live(key, now) or self._negative.live(key, now)

    def _stale(self, key: str, now: float) -> Tenant | None:
        return self._positive.stale(key, now)

    def _store(self, ident: TenantIdentifier, tenant: Tenant | None, now: float) -> None:
        key = ident.cache_key
        if tenant is not None:
            self._negative.discard(key)
            self._positive[key] = Found(tenant, now, now + self.ttl)
        else:
            self._positive.discard(key)
            if self.negative_ttl > 0:
                self._negative[key] = NotFound(now, now + self.negative_ttl)

    def _drop(self, ident: TenantIdentifier) -> int:
        keys = keys_to_invalidate(self._positive.scan() + self._negative.scan(), ident)
        return sum(self._positive.discard(k) or self._negative.discard(k) for k in keys)

    def _clear(self) -> int:
        now = self._timer()
        self._positive.sweep(now)
        self._negative.sweep(now)
        count = len(self._positive) + len(self._negative)
        self._positive.clear()
        self._negative.clear()
        return count

    def stats(self) -> DualCacheStats:
        """Every counter of both caches, the loads, the second layer and the bus."""
        with self._lock:
            now = self._timer()
            self._positive.sweep(now)
            self._negative.sweep(now)
            return DualCacheStats(
                positive_entries=self._positive.live_count(now),
                negative_entries=len(self._negative),
                max_entries=int(self._positive.maxsize),
                hits=self._hits,
                negative_hits=self._negative_hits,
                misses=self._misses,
                invalidations=self._invalidations,
                evictions=self._positive.evictions + self._negative.evictions,
                expirations=self._positive.expirations + self._negative.expirations,
                load=self._load_stats(),
                l2=self._l2_stats(),
                bus=self._bus_stats() if self._bus_stats is not None else {},
            )
