"""Scale: hit, invalidation, stats and memory of v1 and v2 at 1k to 1M cached tenants.

Run alone with ``python -m benchmarks.scale [--quick] [--json PATH]``. Each size runs in a
fresh interpreter: it builds the tenants (a UUID, a slug and a custom domain each), stores
them through the public ``warm()`` of both resolvers and of a plain dict, then times a hit,
``invalidate()`` of one tenant, ``stats()`` and ``invalidate_all()`` while a reader thread
keeps looking tenants up and records how long each lookup waited.
"""

from __future__ import annotations

import gc
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from flask_tenant_cache import DualCacheResolver, Tenant, TenantIdentifier, UnifiedCacheResolver

from ._fixtures import in_fresh_process, rss
from ._report import standalone

__all__ = ["SIZES", "bench_scale", "measure", "print_scale", "scale_goals"]

SIZES = (1_000, 10_000, 100_000, 1_000_000)
QUICK_SIZES = SIZES[:3]
RESOLVERS = ("v1", "v2")
#: Goals of the scale issue, held at the largest size a run reaches.
OP_GOAL_US = 100.0
READER_WAIT_GOAL_MS = 1.0
HIT_GROWTH_GOAL_X = 2.0
MEMORY_GOAL_X = 1.5
#: Distinct identifiers a hit is timed over, drawn at random from every tenant's aliases, so
#: that a large store pays for the cache misses a real spread of tenants causes.
HIT_SAMPLE = 50_000
#: A lookup slower than this is recorded with its start time (the others only counted).
SLOW_LOOKUP_S = 10e-6
#: Each operation is repeated until it has taken this long in all, at least MIN_REPEATS times
#: and at most MAX_REPEATS.
OP_BUDGET_S = 1.0
MIN_REPEATS, MAX_REPEATS = 3, 25
#: The interpreter's switch interval while measuring (the default is 5 ms). A thread that
#: wants the GIL waits up to one interval for the thread holding it, so at 5 ms every reader
#: would seem to wait 5 ms whatever the store does; at 0.1 ms a wait beyond it is the store's.
SWITCH_INTERVAL_S = 1e-4
DAY = 86_400.0


def scale_tenants(count: int, seed: int = 20261201) -> list[Tenant]:
    """``count`` tenants, each with a random UUID, a slug and one custom domain."""
    rng = random.Random(seed)
    return [
        Tenant(
            id=uuid.UUID(int=rng.getrandbits(128), version=4),
            slug=f"tenant-{i:07d}",
            name=f"Tenant {i} Holdings Ltd",
            domains=(f"portal.tenant-{i:07d}.example.com",),
        )
        for i in range(count)
    ]


class _NoLoader:
    """The loader of a warmed store: any call means a lookup missed, and voids the figures."""

    calls = 0

    def load(self, identifier: TenantIdentifier) -> Tenant | None:
        self.calls += 1
        return None


class Reader(threading.Thread):
    """Looks tenants up in a loop, keeping the start and duration of every slow lookup."""

    def __init__(self, resolve: Callable[[TenantIdentifier], Tenant | None], idents: list[Any]):
        super().__init__(daemon=True)
        self._resolve = resolve
        self._idents = idents
        self._halt = threading.Event()
        self.lookups = 0
        self.slow: list[tuple[float, float]] = []

    def run(self) -> None:
        resolve, idents, slow, clock = self._resolve, self._idents, self.slow, time.perf_counter
        n = len(idents)
        i = 0
        while not self._halt.is_set():
            started = clock()
            resolve(idents[i % n])
            took = clock() - started
            if took > SLOW_LOOKUP_S:
                slow.append((started, took))
            i += 1
        self.lookups = i

    def longest_during(self, start: float, end: float) -> float:
        """Seconds of the longest lookup that overlapped ``[start, end]`` (at least the floor)."""
        waits = [took for began, took in self.slow if began <= end and began + took >= start]
        return max(waits, default=SLOW_LOOKUP_S)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _timed(
    op: Callable[[int], object], repeats: tuple[int, int] = (MIN_REPEATS, MAX_REPEATS)
) -> list[tuple[float, float]]:
    """Run ``op(i)`` ``repeats[0]`` times or more, until :data:`OP_BUDGET_S` or ``repeats[1]``;
    the start and end of each call."""
    least, most = repeats
    windows: list[tuple[float, float]] = []
    while len(windows) < most and (
        len(windows) < least or sum(e - s for s, e in windows) < OP_BUDGET_S
    ):
        time.sleep(0.002)  # the reader holds the interpreter between operations, as requests do
        started = time.perf_counter()
        op(len(windows))
        windows.append((started, time.perf_counter()))
    return windows


def _summary(windows: list[tuple[float, float]], reader: Reader) -> dict[str, Any]:
    """Each call's time and the longest lookup of the (stopped) ``reader`` during it."""
    times = [end - start for start, end in windows]
    waits = [reader.longest_during(start, end) for start, end in windows]
    return {
        "repeats": len(times),
        "us": [round(t * 1e6, 1) for t in times],
        "us_median": round(statistics.median(times) * 1e6, 1),
        "reader_wait_ms": [round(w * 1e3, 3) for w in waits],
        "reader_wait_ms_max": round(max(waits) * 1e3, 3),
        "reader_wait_ms_median": round(statistics.median(waits) * 1e3, 3),
    }


def _hit_ns(lookup: Callable[[Any], object], keys: Sequence[Any], rounds: int = 11) -> float:
    """Best over ``rounds`` of the ns per call of ``lookup`` over ``keys``."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for key in keys:
            lookup(key)
        best = min(best, (time.perf_counter() - started) / len(keys))
    return best * 1e9


def _check_warm(
    resolver: DualCacheResolver | UnifiedCacheResolver, tenants: Sequence[Tenant]
) -> None:
    """Every alias of every tenant answers its tenant from the cache, whatever ``warm()``
    returns and ``stats()`` counts (entries per alias or per tenant)."""
    for tenant in tenants:
        for alias in tenant.aliases:
            if resolver.resolve(alias) is not tenant:
                raise RuntimeError(f"{resolver.version}: {alias} does not answer its tenant")
    if getattr(resolver.loader, "calls", 0):
        raise RuntimeError(f"{resolver.version}: warm() left aliases to the loader")


def _entries(stats: Any) -> int:
    data = stats.as_dict()
    return int(data.get("entry_count", data.get("positive_entries", 0)))


def _resolver(version: str, capacity: int) -> DualCacheResolver | UnifiedCacheResolver:
    # No entry may expire or idle out while the rest are stored and timed (a million tenants
    # take longer to build than v2's default idle timeout of a minute on a loaded machine).
    loader = _NoLoader()
    if version == "v1":
        return DualCacheResolver(loader, max_entries=capacity, ttl=DAY)
    return UnifiedCacheResolver(loader, max_entries=capacity, ttl=DAY, idle_timeout=None)


def _operations(
    resolver: DualCacheResolver | UnifiedCacheResolver,
    read: list[TenantIdentifier],
    victims: list[Tenant],
) -> dict[str, Any]:
    """Hit, invalidate one tenant, stats and invalidate_all on a warm ``resolver``."""
    result: dict[str, Any] = {"hit_ns": round(_hit_ns(resolver.resolve, read), 1)}
    reader = Reader(resolver.resolve, read)

    def invalidate(i: int) -> None:
        # By each kind of alias in turn: all must find the tenant's other keys.
        alias = victims[i].aliases[i % 3]
        if resolver.invalidate(alias) < 1:
            raise RuntimeError(f"{resolver.version}: invalidating {alias} dropped nothing")

    windows: dict[str, list[tuple[float, float]]] = {}
    reader.start()
    try:
        time.sleep(0.05)
        # The longest lookup with nothing else running: the floor of the machine's own noise.
        idle_start = time.perf_counter()
        time.sleep(0.2)
        windows["idle"] = [(idle_start, time.perf_counter())]
        windows["invalidate"] = _timed(invalidate)
        windows["stats"] = _timed(lambda _i: resolver.stats())
        if getattr(resolver.loader, "calls", 0):
            raise RuntimeError(f"{resolver.version}: a lookup missed the warm cache")
        # Last: the reader's lookups miss from here on (and store not-found answers).
        windows["invalidate_all"] = _timed(lambda _i: resolver.invalidate_all(), (1, 1))
        time.sleep(0.01)  # lets a lookup that was waiting finish and be recorded
    finally:
        reader.stop()
    idle = windows.pop("idle")[0]
    result["reader_wait_idle_ms"] = round(reader.longest_during(*idle) * 1e3, 3)
    result |= {op: _summary(w, reader) for op, w in windows.items()}
    result["reader_lookups"] = reader.lookups
    return result


def measure(kind: str, count: int) -> dict[str, Any]:
    """In this process: the figures of ``kind`` (``"v1"``, ``"v2"`` or ``"dict"``) for ``count``
    tenants; a fresh process for each, so that no figure pays for another's heap."""
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        return _measure(kind, count)
    finally:
        sys.setswitchinterval(switch_interval)


def _measure(kind: str, count: int) -> dict[str, Any]:
    rng = random.Random(count)
    gc.collect()
    base = rss()
    tenants = scale_tenants(count)
    gc.collect()
    tenant_bytes = rss() - base
    aliases = len(tenants[0].aliases)
    victims = rng.sample(tenants, min(count // 2, 2 * MAX_REPEATS))
    victim_keys = {a.cache_key for t in victims for a in t.aliases}
    # Drawn by index, not from a list of every alias: a large temporary freed here would be
    # reused by the store below and hide part of its memory.
    picks = rng.sample(range(count * aliases), min(count * aliases, HIT_SAMPLE + 3 * len(victims)))
    read = [tenants[p // aliases].aliases[p % aliases] for p in picks]
    read = [a for a in read if a.cache_key not in victim_keys][:HIT_SAMPLE]
    gc.collect()
    before = rss()
    started = time.perf_counter()
    if kind == "dict":
        plain = {alias.cache_key: t for t in tenants for alias in t.aliases}
        stored, resolver = len(plain), None
    else:
        resolver = _resolver(kind, aliases * count)
        stored = resolver.warm(tenants)
    warm_s = time.perf_counter() - started
    gc.collect()
    structure_bytes = rss() - before
    result: dict[str, Any] = {
        "kind": kind,
        "tenants": count,
        "aliases_per_tenant": aliases,
        "warm_s": round(warm_s, 2),
        "tenant_bytes_per_tenant": round(tenant_bytes / count, 1),
        "structure_bytes_per_tenant": round(structure_bytes / count, 1),
    }
    # Everything built so far lives to the end: the collector's full passes over millions of
    # objects are a cost of this heap, not of the store, and would land in random figures.
    gc.freeze()
    try:
        if resolver is None:
            result["hit_ns"] = round(_hit_ns(plain.get, [a.cache_key for a in read]), 1)
            # What a resolver is handed: the identifier, whose key is one more object to read.
            get = plain.get
            result["identifier_hit_ns"] = round(_hit_ns(lambda a: get(a.cache_key), read), 1)
        else:
            _check_warm(resolver, tenants)
            result["warm_returned"] = stored
            result["stats_entries"] = _entries(resolver.stats())
            result |= _operations(resolver, read, victims)
    finally:
        gc.unfreeze()
    result["peak_rss_mib"] = round(rss("VmHWM") / 2**20)
    return result


def _by_size(figures: list[dict[str, Any]]) -> dict[str, Any]:
    """The three processes of one size as one record, with each resolver's memory x dict."""
    by_kind = {f["kind"]: f for f in figures}
    plain = by_kind["dict"]
    record: dict[str, Any] = {"tenants": plain["tenants"], "dict": plain}
    for version in RESOLVERS:
        data = by_kind[version]
        data["bytes_per_tenant"] = round(
            data["tenant_bytes_per_tenant"] + data["structure_bytes_per_tenant"], 1
        )
        data["memory_x_dict"] = round(
            data["bytes_per_tenant"]
            / (plain["tenant_bytes_per_tenant"] + plain["structure_bytes_per_tenant"]),
            3,
        )
        record[version] = data
    plain["bytes_per_tenant"] = round(
        plain["tenant_bytes_per_tenant"] + plain["structure_bytes_per_tenant"], 1
    )
    return record


def scale_goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The scale issue's goals at the largest size measured, for each resolver."""
    sizes = result["sizes"]
    top, bottom = sizes[-1], sizes[0]
    at = f"{top['tenants']:,} tenants"
    goals = []
    for version in RESOLVERS:
        data = top[version]
        for op in ("invalidate", "stats"):
            name = "invalidate one tenant" if op == "invalidate" else "stats()"
            median = data[op]["us_median"]
            goals.append(
                {
                    "goal": f"{version}: {name} under {OP_GOAL_US:g} µs at {at}",
                    "measured": f"{median:,.1f} µs median of {data[op]['repeats']}",
                    "met": median < OP_GOAL_US,
                }
            )
            wait = data[op]["reader_wait_ms_median"]
            goals.append(
                {
                    "goal": f"{version}: no reader waits over {READER_WAIT_GOAL_MS:g} ms during "
                    f"{name} at {at}",
                    "measured": f"{wait:.3f} ms median of the longest waits, "
                    f"{data[op]['reader_wait_ms_max']:.3f} ms max "
                    f"(idle {data['reader_wait_idle_ms']:.3f} ms)",
                    "met": wait <= READER_WAIT_GOAL_MS,
                }
            )
        growth = data["hit_ns"] / bottom[version]["hit_ns"]
        top_dict, bottom_dict = top["dict"], bottom["dict"]
        dict_growth = top_dict["hit_ns"] / bottom_dict["hit_ns"]
        through = top_dict["identifier_hit_ns"] / bottom_dict["identifier_hit_ns"]
        goals.append(
            {
                "goal": f"{version}: hit at {at} within {HIT_GROWTH_GOAL_X:g}x the hit at "
                f"{bottom['tenants']:,}",
                "measured": f"x{growth:.2f} ({bottom[version]['hit_ns']:.0f} -> "
                f"{data['hit_ns']:.0f} ns; a dict x{dict_growth:.2f}, x{through:.2f} read "
                "through the identifiers)",
                "met": growth <= HIT_GROWTH_GOAL_X,
            }
        )
        goals.append(
            {
                "goal": f"{version}: memory per tenant at most {MEMORY_GOAL_X:g}x a plain dict "
                f"at {at}",
                "measured": f"x{data['memory_x_dict']:.2f}",
                "met": data["memory_x_dict"] <= MEMORY_GOAL_X,
            }
        )
    return goals


def bench_scale(quick: bool) -> dict[str, Any]:
    """:func:`measure` at each size of :data:`SIZES` (:data:`QUICK_SIZES`), each in a fresh
    interpreter; returns the figures and the goals."""
    started = time.perf_counter()
    sizes = []
    for count in QUICK_SIZES if quick else SIZES:
        size_started = time.perf_counter()
        figures = [
            in_fresh_process("benchmarks.scale", "measure", kind, count)
            for kind in ("dict", *RESOLVERS)
        ]
        data = _by_size(figures)
        data["elapsed_s"] = round(time.perf_counter() - size_started, 1)
        sizes.append(data)
    result: dict[str, Any] = {"quick": quick, "sizes": sizes}
    result["goals"] = scale_goals(result)
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


def print_scale(result: dict[str, Any]) -> None:
    """The figures as one table per resolver."""
    for version in RESOLVERS:
        print(f"\nScale, {version} (medians; reader waits: median / max of the longest, ms)")
        header = (
            "tenants",
            "hit ns",
            "dict ns",
            "by ident",
            "invalidate µs",
            "wait",
            "stats µs",
            "wait",
            "inv_all ms",
            "wait",
            "B/tenant",
            "x dict",
        )
        rows = []
        for size in result["sizes"]:
            data = size[version]

            def wait(op: str, data: dict[str, Any] = data) -> str:
                d = data[op]
                return f"{d['reader_wait_ms_median']:.2f}/{d['reader_wait_ms_max']:.2f}"

            rows.append(
                (
                    f"{size['tenants']:,}",
                    f"{data['hit_ns']:,.0f}",
                    f"{size['dict']['hit_ns']:,.0f}",
                    f"{size['dict']['identifier_hit_ns']:,.0f}",
                    f"{data['invalidate']['us_median']:,.1f}",
                    wait("invalidate"),
                    f"{data['stats']['us_median']:,.1f}",
                    wait("stats"),
                    f"{data['invalidate_all']['us_median'] / 1e3:,.2f}",
                    wait("invalidate_all"),
                    f"{data['bytes_per_tenant']:,.0f}",
                    f"{data['memory_x_dict']:.2f}",
                )
            )
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print("  " + "  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))
    for size in result["sizes"]:
        kinds = ("dict", *RESOLVERS)
        print(
            f"  {size['tenants']:,} tenants: {size['elapsed_s']} s; peak RSS MiB "
            + ", ".join(f"{k} {size[k]['peak_rss_mib']:,}" for k in kinds)
            + "; warm s "
            + ", ".join(f"{k} {size[k]['warm_s']}" for k in kinds)
        )


def main(argv: list[str] | None = None) -> int:
    return standalone(
        "python -m benchmarks.scale",
        __doc__,
        f"stop at {QUICK_SIZES[-1]:,} tenants",
        bench_scale,
        print_scale,
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
