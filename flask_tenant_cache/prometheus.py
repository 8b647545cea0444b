"""A prometheus_client collector that reads both resolvers' counters at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .figures import BOUNDS

try:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.utils import floatToGoString
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "Prometheus metrics need prometheus_client: pip install 'flask-tenant-cache[prometheus]'"
    ) from exc

__all__ = ["TenantCacheCollector", "render"]

#: Counters per resolver: metric name suffix, where it is in the stats, help text.
_RESOLVER_COUNTERS: list[tuple[str, tuple[str, ...], str]] = [
    ("hits", ("hits",), "Lookups answered by a cached tenant."),
    ("negative_hits", ("negative_hits",), "Lookups answered by a cached not-found (v1)."),
    ("misses", ("misses",), "Lookups that went on to a load."),
    ("loads", ("load", "loads"), "Loads completed (from Redis or the loader)."),
    ("load_errors", ("load", "load_errors"), "Loads that failed (answered 503)."),
    ("load_seconds", ("load", "load_time_sum"), "Seconds spent in loads."),
    ("coalesced", ("load", "coalesced"), "Requests that waited on another's load."),
    ("load_timeouts", ("load", "load_timeouts"), "Waiters that gave up on a load."),
    ("stale_loads_discarded", ("load", "stale_loads_discarded"), "Loads an invalidation beat."),
    ("stale_serves", ("load", "stale_serves"), "Expired tenants served while the loader failed."),
    ("negative_evictions", ("negative_evictions",), "Not-found entries dropped by the cap (v2)."),
    ("invalidations", ("invalidations",), "Invalidations applied."),
    ("evictions", ("evictions",), "Entries evicted to make room."),
    ("expirations", ("expirations",), "Entries expired (TTL or idle)."),
    ("l2_hits", ("l2", "l2_hits"), "L1 misses answered by Redis."),
    ("l2_misses", ("l2", "l2_misses"), "L1 misses Redis did not have."),
    ("l2_errors", ("l2", "l2_errors"), "Redis reads and writes that failed."),
]

#: Gauges per resolver.
_RESOLVER_GAUGES: list[tuple[str, tuple[str, ...], str]] = [
    ("entries", ("entry_count",), "Entries in the unified cache (v2)."),
    ("positive_entries", ("positive_entries",), "Entries in the positive cache (v1)."),
    ("negative_entries", ("negative_entries",), "Not-found entries held."),
    ("max_negative_entries", ("max_negative_entries",), "The cap on not-found entries (v2)."),
    ("load_seconds_max", ("load", "load_time_max"), "The longest load, in seconds."),
]

_BUS_GAUGES = {"pending", "waiting", "unfinished"}

#: The identification counters (``stats()["identification"]``) and their help texts.
_IDENTIFICATION_COUNTERS = {
    "conflicts": "Requests refused because two strategies named different tenants.",
    "untrusted_refused": "Tenant headers refused from an untrusted client.",
    "untrusted_ignored": "Tenant headers ignored from an untrusted client.",
    "second_lookups": "Later names looked up because they were no alias of the tenant.",
}


def _get(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


class TenantCacheCollector:
    """Exposes ``stats()`` as Prometheus metrics, computed only when scraped.

    :param read_stats: returns the extension's ``stats()`` dict (bound to one app).
    :param read_histograms: returns the extension's ``histograms()`` (bound to one app).
    :param prefix: the metric name prefix.
    """

    def __init__(
        self,
        read_stats: Callable[[], dict[str, Any]],
        read_histograms: Callable[[], dict[str, Any]] | None = None,
        prefix: str = "tenant_cache",
    ) -> None:
        self.read_stats = read_stats
        self.read_histograms = read_histograms
        self.prefix = prefix

    def collect(self) -> Iterator[Metric]:
        """Yield one family per counter, labelled by resolver version."""
        stats = self.read_stats()
        versions = [v for v in ("v1", "v2") if v in stats]
        for kind, table in (
            (CounterMetricFamily, _RESOLVER_COUNTERS),
            (GaugeMetricFamily, _RESOLVER_GAUGES),
        ):
            for name, path, text in table:
                family = kind(f"{self.prefix}_{name}", text, labels=["version"])
                for version in versions:
                    value = _get(stats[version], path)
                    if value is not None:
                        family.add_metric([version], value)
                yield family
        rollout = stats.get("rollout", {})
        served = CounterMetricFamily(
            f"{self.prefix}_served", "Requests each version served.", labels=["version"]
        )
        for version, count in sorted(rollout.get("served", {}).items()):
            served.add_metric([version], count)
        yield served
        if "provider_errors" in rollout:
            yield CounterMetricFamily(
                f"{self.prefix}_provider_errors",
                "Flag provider failures (the request went to v1).",
                value=rollout["provider_errors"],
            )
        shadow = stats.get("shadow", {})
        for name in ("submitted", "matched", "mismatched", "dropped", "slow", "failed"):
            if name in shadow:
                yield CounterMetricFamily(
                    f"{self.prefix}_shadow_{name}",
                    f"Shadow comparisons {name}.",
                    value=shadow[name],
                )
        identification = stats.get("identification", {})
        for name, text in _IDENTIFICATION_COUNTERS.items():
            if name in identification:
                yield CounterMetricFamily(
                    f"{self.prefix}_identification_{name}", text, value=identification[name]
                )
        if self.read_histograms is not None:
            yield from self._histograms(self.read_histograms())
        control = stats.get("control")
        if control is not None:
            yield from self._control(control)
        for name, value in sorted(stats.get("redis", {}).items()):
            text = f"Redis invalidation bus: {name.replace('_', ' ')}."
            if name in _BUS_GAUGES:
                yield GaugeMetricFamily(f"{self.prefix}_bus_{name}", text, value=value)
            else:
                yield CounterMetricFamily(f"{self.prefix}_bus_{name}", text, value=value)

    def _histograms(self, data: dict[str, Any]) -> Iterator[Metric]:
        for kind, text in (
            ("resolve", "Time to resolve a request's tenant, per version."),
            ("request", "Time of a whole request from the extension's hook, per version."),
        ):
            family = HistogramMetricFamily(
                f"{self.prefix}_{kind}_seconds", text, labels=["version"]
            )
            for version, figures in sorted(data.items()):
                buckets, total = figures[kind]
                cumulative, running = [], 0
                for bound, count in zip((*BOUNDS, float("inf")), buckets, strict=True):
                    running += count
                    cumulative.append((floatToGoString(bound), running))  # type: ignore[no-untyped-call]
                family.add_metric([version], cumulative, sum_value=total)
            yield family
        for name, text in (
            ("request_errors", "Requests whose lookup failed, per version."),
            ("unavailable", "Requests answered 503, per version."),
        ):
            counter = CounterMetricFamily(f"{self.prefix}_{name}", text, labels=["version"])
            for version, figures in sorted(data.items()):
                counter.add_metric([version], figures[name.removeprefix("request_")])
            yield counter

    def _control(self, control: dict[str, Any]) -> Iterator[Metric]:
        yield CounterMetricFamily(
            f"{self.prefix}_rollout_trips",
            "Times this process's guard tripped the kill switch.",
            value=control["trips"],
        )
        yield CounterMetricFamily(
            f"{self.prefix}_rollout_advances",
            "Plan steps this process advanced.",
            value=control["advances"],
        )
        guard = control.get("guard")
        if guard is not None:
            yield GaugeMetricFamily(
                f"{self.prefix}_rollout_tripped",
                "1 while the guard's trip holds every request on v1.",
                value=int(guard["tripped"] is not None),
            )
        plan = control.get("plan")
        if plan is not None:
            yield GaugeMetricFamily(
                f"{self.prefix}_rollout_plan_percent",
                "The rollout plan's current percentage of tenants on v2.",
                value=plan["percent"],
            )


def render(
    read_stats: Callable[[], dict[str, Any]],
    read_histograms: Callable[[], dict[str, Any]] | None = None,
) -> bytes:
    """The metrics in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TenantCacheCollector(read_stats, read_histograms))
    return generate_latest(registry)
