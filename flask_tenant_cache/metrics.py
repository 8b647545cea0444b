"""Counter snapshots: value objects read by ``stats()``, the stats route and the CLI."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["DualCacheStats", "LoadStats", "SecondLayerStats", "UnifiedCacheStats", "WarmReport"]


@dataclass(frozen=True, slots=True)
class LoadStats:
    """Loader calls made by one resolver, with their time in seconds."""

    loads: int = 0
    load_errors: int = 0
    load_time_sum: float = 0.0
    load_time_max: float = 0.0
    coalesced: int = 0
    load_timeouts: int = 0
    stale_loads_discarded: int = 0
    stale_serves: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as a JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class UnifiedCacheStats:
    """The v2 resolver's basic stats.

    ``entry_count`` is the number of live entries and ``weighted_size`` their total weight
    (one per entry); ``hits`` counts found and not-found entries served from the cache,
    ``misses`` the lookups that went on to the loader (or joined a load already running).
    """

    entry_count: int
    weighted_size: int
    max_entries: int
    negative_entries: int
    max_negative_entries: int
    hits: int
    misses: int
    invalidations: int
    evictions: int
    negative_evictions: int
    expirations: int
    load: LoadStats
    l2: SecondLayerStats

    @property
    def hit_rate(self) -> float:
        """Hits over lookups, 0.0 before the first lookup."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as a JSON-able dict, with ``hit_rate``."""
        data = asdict(self)
        data["hit_rate"] = round(self.hit_rate, 6)
        return data


@dataclass(frozen=True, slots=True)
class SecondLayerStats:
    """A resolver's use of the Redis second layer."""

    l2_hits: int = 0
    l2_misses: int = 0
    l2_errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as a JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class DualCacheStats:
    """The v1 resolver's detailed metrics: two caches, loads, the second layer and the bus."""

    positive_entries: int
    negative_entries: int
    max_entries: int
    hits: int
    negative_hits: int
    misses: int
    invalidations: int
    evictions: int
    expirations: int
    load: LoadStats
    l2: SecondLayerStats
    bus: dict[str, int]

    @property
    def hit_rate(self) -> float:
        """Hits (found and not-found) over lookups, 0.0 before the first lookup."""
        served = self.hits + self.negative_hits
        total = served + self.misses
        return served / total if total else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as a JSON-able dict, with ``hit_rate``."""
        data = asdict(self)
        data["hit_rate"] = round(self.hit_rate, 6)
        return data


@dataclass(frozen=True, slots=True)
class WarmReport:
    """What a warm did: what it read, what this process keeps, and what Redis now holds."""

    #: Tenants the loader listed.
    read: int
    #: Rows the loader refused as tenants during the warm (see ``rejected_rows``).
    rejected: int
    #: Per resolver version, the tenants stored in this process.
    stored: dict[str, int]
    #: Per resolver version, the tenants this process holds afterwards: fewer than read when
    #: the cache is smaller than the tenants (LRU eviction).
    resident: dict[str, int]
    #: Tenants stored in the Redis L2, which every process reads (None: not stored).
    shared: int | None = None
    #: Tenants left out of the L2 because an invalidation came while the warm read them.
    overtaken: int = 0
    #: Why nothing reached Redis: not configured, or the error it gave (None: it did).
    shared_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON-able dict."""
        return asdict(self)
