"""Resident memory per 10,000 cached tenants, for each resolver, against a plain dict of them.

Run alone with ``python -m benchmarks.memory [--quick] [--json PATH]``. Each figure comes from
a fresh interpreter, so nothing freed by an earlier case is reused by a later one.
"""

from __future__ import annotations

import gc
import json
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

from flask_tenant_cache import DualCacheResolver, Tenant, TenantIdentifier, UnifiedCacheResolver

from ._report import standalone

__all__ = ["bench_memory"]

ROOT = Path(__file__).resolve().parent.parent
COUNT = 10_000
KINDS = ("dict", "v1", "v2")
DESCRIPTIONS = {
    "dict": "the tenants alone, in a dict by slug (baseline)",
    "v1": "DualCacheResolver(max_entries=10000), each tenant resolved once by slug",
    "v2": "UnifiedCacheResolver(max_entries=10000), each tenant resolved once by slug",
}


class RowLoader:
    """Builds a fresh tenant per load from encoded columns, as a database driver would.

    A loader that returned tenants it already holds would hide their cost from the cache.
    """

    def __init__(self, count: int) -> None:
        rng = random.Random(20261125)
        self.rows: dict[str, tuple[bytes, bytes, bytes, bytes]] = {}
        for i in range(count):
            slug = f"tenant-{i:05d}"
            self.rows[slug] = (
                uuid.UUID(int=rng.getrandbits(128), version=4).bytes,
                slug.encode(),
                f"Tenant {i} Holdings Ltd".encode(),
                f"portal.tenant-{i:05d}.example.com".encode(),
            )
        self.calls = 0

    def load(self, identifier: TenantIdentifier) -> Tenant | None:
        self.calls += 1
        row = self.rows.get(identifier.value) if identifier.kind == "slug" else None
        if row is None:
            return None
        tenant_id, slug, name, domain = row
        return Tenant(
            id=uuid.UUID(bytes=tenant_id),
            slug=slug.decode(),
            name=name.decode(),
            domains=(domain.decode(),),
        )


def _rss() -> int:
    """This process's resident set size in bytes (VmRSS)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(kind: str, count: int, traced: bool) -> dict[str, Any]:
    """In this process: the memory that caching ``count`` tenants as ``kind`` adds.

    :param traced: measure with tracemalloc (its own bookkeeping inflates the RSS, so RSS is
        measured in runs without it).
    """
    loader = RowLoader(count)
    slugs = list(loader.rows)
    resolver: DualCacheResolver | UnifiedCacheResolver | None = None
    if kind == "v1":
        resolver = DualCacheResolver(loader, max_entries=count)
    elif kind == "v2":
        resolver = UnifiedCacheResolver(loader, max_entries=count)
    held: dict[str, Tenant] = {}
    gc.collect()
    if traced:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0] if traced else _rss()
    for slug in slugs:
        ident = TenantIdentifier.slug(slug)
        if resolver is None:
            tenant = loader.load(ident)
            if tenant is not None:
                held[tenant.slug] = tenant
        else:
            resolver.resolve(ident)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if traced else _rss()
    if traced:
        tracemalloc.stop()
    if isinstance(resolver, DualCacheResolver):
        entries = resolver.stats().positive_entries
    elif resolver is not None:
        entries = resolver.stats().entry_count
    else:
        entries = len(held)
    if entries != count or loader.calls != count:
        raise RuntimeError(f"{kind}: {entries} entries after {loader.calls} loads, not {count}")
    return {"kind": kind, "count": count, "bytes": after - before}


def _child(kind: str, count: int, traced: bool) -> dict[str, Any]:
    code = (
        "import json, benchmarks.memory as m; "
        f"print(json.dumps(m.measure({kind!r}, {count}, {traced})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory child {kind} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def bench_memory(quick: bool) -> dict[str, Any]:
    """Bytes per cached tenant (RSS and tracemalloc) for the dict baseline, v1 and v2."""
    started = time.perf_counter()
    repeats = 1 if quick else 3
    cases: dict[str, Any] = {}
    for kind in KINDS:
        rss = [_child(kind, COUNT, traced=False)["bytes"] for _ in range(repeats)]
        traced = _child(kind, COUNT, traced=True)["bytes"]
        rss_median = statistics.median(rss)
        cases[kind] = {
            "description": DESCRIPTIONS[kind],
            "rss_bytes": rss,
            "rss_bytes_median": rss_median,
            "rss_per_tenant": round(rss_median / COUNT, 1),
            "rss_mib_per_10k": round(rss_median / COUNT * 10_000 / 2**20, 2),
            "traced_bytes": traced,
            "traced_per_tenant": round(traced / COUNT, 1),
            "traced_mib_per_10k": round(traced / COUNT * 10_000 / 2**20, 2),
        }
    base = cases["dict"]
    for case in cases.values():
        case["rss_x_dict"] = round(case["rss_bytes_median"] / base["rss_bytes_median"], 2)
        case["traced_x_dict"] = round(case["traced_bytes"] / base["traced_bytes"], 2)
    return {
        "quick": quick,
        "tenants": COUNT,
        "rss_repeats": repeats,
        "cases": cases,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def print_memory(result: dict[str, Any]) -> None:
    """The results as a table."""
    print(
        f"\nMemory of {result['tenants']:,} cached tenants (fresh process per figure, RSS median "
        f"of {result['rss_repeats']})"
    )
    header = ("case", "RSS B/tenant", "MiB/10k", "x dict", "traced B/tenant", "MiB/10k", "x dict")
    rows = [
        (
            kind,
            f"{c['rss_per_tenant']:,.0f}",
            f"{c['rss_mib_per_10k']:.2f}",
            f"{c['rss_x_dict']:.2f}",
            f"{c['traced_per_tenant']:,.0f}",
            f"{c['traced_mib_per_10k']:.2f}",
            f"{c['traced_x_dict']:.2f}",
        )
        for kind, c in result["cases"].items()
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  "
            + "  ".join(
                v.rjust(w) if i else v.ljust(w)
                for i, (v, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    for kind, c in result["cases"].items():
        print(f"  {kind}: {c['description']}")
    print(f"\n{result['elapsed_s']} s")


def main(argv: list[str] | None = None) -> int:
    return standalone(
        "python -m benchmarks.memory",
        __doc__,
        "one RSS run per case (< 30 s)",
        bench_memory,
        print_memory,
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
