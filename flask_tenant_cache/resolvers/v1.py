"""The v1 resolver: a positive and a negative cache, with detailed metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..loaders import TenantLoader
from ..metrics import DualCacheStats
from .base import CachingResolver

__all__ = ["DualCacheResolver"]


class DualCacheResolver(CachingResolver):
    """Two caches, each with its own bound: one of found tenants, one of not-found answers.

    Found tenants hold at most ``max_entries`` keys (a tenant is cached under each alias) and
    live ``ttl`` seconds; not-found answers, at most ``max_negative_entries`` (default
    ``max_entries``), live ``negative_ttl`` seconds (0 turns negative caching off). Its
    metrics are detailed (see :class:`~.metrics.DualCacheStats`).

    :param bus_stats: returns the invalidation bus's counters, shown with these metrics.
    :param options: ``ttl``, ``negative_ttl``, ``load_timeout``, ``stale_if_error`` and
        ``timer``, as :class:`~.base.CachingResolver` takes them.
    """

    version = "v1"

    def __init__(
        self,
        loader: TenantLoader,
        *,
        max_entries: int = 1000,
        max_negative_entries: int | None = None,
        bus_stats: Callable[[], dict[str, int]] | None = None,
        **options: Any,
    ) -> None:
        bounds = {
            "max_found": max_entries,
            "max_total": None,
            "max_negative": max_negative_entries or max_entries,
        }
        super().__init__(loader, bounds=bounds, **options)
        self._bus_stats = bus_stats

    def stats(self) -> DualCacheStats:
        """Every counter of both caches, the loads, the second layer and the bus."""
        with self._lock:
            store = self._store
            store.maintain(self._timer())
            return DualCacheStats(
                positive_entries=store.found,
                negative_entries=store.negative_count,
                max_entries=int(store.max_found),
                hits=self._hits,
                negative_hits=self._negative_hits,
                misses=self._misses,
                invalidations=self._invalidations,
                evictions=store.evictions + store.negative_evictions,
                expirations=store.expirations,
                load=self._load_stats(),
                l2=self._l2_stats(),
                bus=self._bus_stats() if self._bus_stats is not None else {},
            )
