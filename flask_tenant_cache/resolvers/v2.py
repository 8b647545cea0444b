"""The v2 resolver: one unified cache of found and not-found entries."""

from __future__ import annotations

import time

from ..identifiers import TenantIdentifier
from ..loaders import TenantLoader
from ..metrics import UnifiedCacheStats
from ..tenant import Tenant
from .base import (
    CachedTenant,
    CachingResolver,
    Found,
    NotFound,
    TenantLRU,
    Timer,
    keys_to_invalidate,
)

__all__ = ["UnifiedCacheResolver"]


class UnifiedCacheResolver(CachingResolver):
    """One cachetools TLRU cache of :class:`Found` and :class:`NotFound` entries.

    Found entries live ``ttl`` seconds and not-found entries ``negative_ttl`` (0 turns negative
    caching off); an entry not read for ``idle_timeout`` seconds expires (None: never), which
    cachetools lacks and is checked on read; at most ``max_entries`` are kept, the least
    recently used evicted first.
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
        load_timeout: float | None = 5.0,
        timer: Timer = time.monotonic,
    ) -> None:
        super().__init__(loader, load_timeout=load_timeout, timer=timer)
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.idle_timeout = idle_timeout
        self._cache = TenantLRU(max_entries, self._expires_at, timer)
        self._hits = self._misses = 0

    def _expires_at(self, key: str, entry: CachedTenant, now: float) -> float:
        return now + (self.ttl if entry.tenant is not None else self.negative_ttl)

    def _lookup(self, key: str, now: float) -> CachedTenant | None:
        entry = self._cache.get(key)
        if entry is not None:
            idle = self.idle_timeout
            if idle is None or now - entry.touched < idle:
                entry.touched = now
                self._hits += 1
                return entry
            self._cache.discard(key)
            self._cache.expirations += 1
        self._misses += 1
        return None

    def _peek(self, key: str) -> CachedTenant | None:
        return self._cache.get(key)

    def _store(self, ident: TenantIdentifier, tenant: Tenant | None, now: float) -> None:
        self._cache[ident.cache_key] = Found(tenant, now) if tenant is not None else NotFound(now)

    def _drop(self, ident: TenantIdentifier) -> int:
        keys = keys_to_invalidate(self._cache.scan(), ident)
        return sum(self._cache.discard(key) for key in keys)

    def _clear(self) -> int:
        count = len(self._cache)
        self._cache.clear()
        return count

    def stats(self) -> UnifiedCacheStats:
        """Entry count and size (as the seed's moka cache gives them), hits and misses."""
        with self._lock:
            self._cache.expire()
            return UnifiedCacheStats(
                entry_count=len(self._cache),
                weighted_size=int(self._cache.currsize),
                max_entries=int(self._cache.maxsize),
                hits=self._hits,
                misses=self._misses,
                invalidations=self._invalidations,
                evictions=self._cache.evictions,
                expirations=self._cache.expirations,
                load=self._load_stats(),
                l2=self._l2_stats(),
            )
