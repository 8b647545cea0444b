"""The v2 resolver: one unified cache of found and not-found entries."""

from __future__ import annotations

import time

from ..identifiers import TenantIdentifier
from ..loaders import TenantLoader
from ..metrics import UnifiedCacheStats
from ..tenant import Tenant
from ._store import CachedTenant, Found, NotFound, TenantLRU, keys_to_invalidate
from .base import CachingResolver, Timer

__all__ = ["UnifiedCacheResolver"]


class UnifiedCacheResolver(CachingResolver):
    """One cachetools LRU cache of found and not-found entries.

    Found entries live ``ttl`` seconds and not-found entries ``negative_ttl`` (0 turns negative
    caching off); an entry not read for ``idle_timeout`` seconds expires (None: never), which
    cachetools lacks; at most ``max_entries`` are kept, the least recently used evicted first.
    """

    version = "v2"

    def __init__(
        self,
        loader: TenantLoader,
        *,
        ttl: float = 300.0,
        negative_ttl: float = 30.0,
        idle_timeout: float | None = 60.0,
        max_entries: int = 10_000,
        max_negative_entries: int | None = None,
        load_timeout: float | None = 5.0,
        stale_if_error: float = 0.0,
        timer: Timer = time.monotonic,
    ) -> None:
        super().__init__(
            loader, load_timeout=load_timeout, stale_if_error=stale_if_error, timer=timer
        )
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.idle_timeout = idle_timeout
        if max_negative_entries is None:
            max_negative_entries = max(1, max_entries // 10)
        self._cache = TenantLRU(
            max_entries, idle_timeout, grace=stale_if_error, max_negative=max_negative_entries
        )
        self._hits = self._misses = 0

    def _lookup(self, key: str, now: float) -> CachedTenant | None:
        entry = self._cache.live(key, now)
        if entry is None:
            self._misses += 1
        else:
            self._hits += 1
        return entry

    def _peek(self, key: str) -> CachedTenant | None:
        return self._cache.live(key, self._timer())

    def _stale(self, key: str, now: float) -> Tenant | None:
        return self._cache.stale(key, now)

    def _store(self, ident: TenantIdentifier, tenant: Tenant | None, now: float) -> None:
        key = ident.cache_key
        if tenant is not None:
            self._cache[key] = Found(tenant, now, now + self.ttl)
        elif self.negative_ttl > 0:
            self._cache[key] = NotFound(now, now + self.negative_ttl)
        else:
            self._cache.discard(key)

    def _drop(self, ident: TenantIdentifier) -> int:
        keys = keys_to_invalidate(self._cache.scan(), ident)
        return sum(self._cache.discard(key) for key in keys)

    def _clear(self) -> int:
        self._cache.sweep(self._timer())
        count = len(self._cache)
        self._cache.clear()
        return count

    def stats(self) -> UnifiedCacheStats:
        """Entry count and size, hits and misses, evictions, expirations and loads."""
        with self._lock:
            now = self._timer()
            self._cache.sweep(now)
            return UnifiedCacheStats(
                entry_count=self._cache.live_count(now),
                weighted_size=int(self._cache.currsize),
                max_entries=int(self._cache.maxsize),
                negative_entries=self._cache.negative_count,
                max_negative_entries=self._cache.max_negative or 0,
                hits=self._hits,
                misses=self._misses,
                invalidations=self._invalidations,
                evictions=self._cache.evictions,
                negative_evictions=self._cache.negative_evictions,
                expirations=self._cache.expirations,
                load=self._load_stats(),
                l2=self._l2_stats(),
            )
