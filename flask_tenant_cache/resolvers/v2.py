"""The v2 resolver: one unified cache of found and not-found entries."""

from __future__ import annotations

from typing import Any

from ..loaders import TenantLoader
from ..metrics import UnifiedCacheStats
from .base import CachingResolver

__all__ = ["UnifiedCacheResolver"]


class UnifiedCacheResolver(CachingResolver):
    """One cache of found and not-found entries, with TTL, idle timeout and one bound.

    Found entries live ``ttl`` seconds and not-found entries ``negative_ttl`` (0 turns negative
    caching off); an entry not read for ``idle_timeout`` seconds expires (None: never); at
    most ``max_entries`` keys are held by both kinds together (a tenant under each alias),
    not-found answers at most ``max_negative_entries`` of them (default a tenth), so a flood
    of unknown names cannot evict the tenants.

    :param options: ``ttl``, ``negative_ttl``, ``load_timeout``, ``stale_if_error`` and
        ``timer``, as :class:`~.base.CachingResolver` takes them.
    """

    version = "v2"

    def __init__(
        self,
        loader: TenantLoader,
        *,
        idle_timeout: float | None = 60.0,
        max_entries: int = 10_000,
        max_negative_entries: int | None = None,
        **options: Any,
    ) -> None:
        if max_negative_entries is None:
            max_negative_entries = max(1, max_entries // 10)
        bounds = {
            "max_found": None,
            "max_total": max_entries,
            "max_negative": max_negative_entries,
            "idle": idle_timeout,
        }
        super().__init__(loader, bounds=bounds, **options)
        self.idle_timeout = idle_timeout

    def stats(self) -> UnifiedCacheStats:
        """Entry count and size, hits and misses, evictions, expirations and loads."""
        with self._lock:
            store = self._store
            store.maintain(self._timer())
            return UnifiedCacheStats(
                entry_count=store.found + store.negative_count,
                weighted_size=store.found_keys + store.negative_count,
                max_entries=int(store.max_total),
                negative_entries=store.negative_count,
                max_negative_entries=store.negative_bound,
                hits=self._hits + self._negative_hits,
                misses=self._misses,
                invalidations=self._invalidations,
                evictions=store.evictions,
                negative_evictions=store.negative_evictions,
                expirations=store.expirations,
                load=self._load_stats(),
                l2=self._l2_stats(),
            )
