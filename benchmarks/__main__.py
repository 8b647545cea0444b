"""Run the benchmarks: ``python -m benchmarks [--quick] [--json PATH] [--check]``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from ._harness import GroupResult, Settings
from .coalescing import CoalescingResult, bench_coalescing
from .micro import bench_identifiers, bench_resolve
from .wsgi import bench_requests

DEFAULT_JSON = Path(__file__).parent / "results" / "latest.json"

#: Goals from the project's brief; the figures they are checked against are measured, never set.
RESOLVE_GOAL_NS = 3000.0
REQUEST_OVERHEAD_GOAL = 0.10


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Benchmark flask-tenant-cache against baselines."
    )
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (< 20 s)")
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"results file (default: {DEFAULT_JSON})"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a goal is missed")
    return parser


def _fmt(ns: float, unit: str) -> str:
    return f"{ns / 1e3:,.2f} µs" if unit == "us" else f"{ns:,.0f} ns"


def _print_group(group: GroupResult) -> None:
    refs = group.references
    header = ["case", "best", "median", *(f"x {r}" for r in refs), "(of bests)"]
    rows = [
        [
            c.name,
            _fmt(c.best_ns, group.unit),
            _fmt(c.median_ns, group.unit),
            *(f"{c.ratios[r]:.2f}" for r in refs),
            f"({c.best_ratios[refs[0]]:.2f})",
        ]
        for c in group.cases
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print(f"\n{group.title}  [{len(group.cases[0].samples_ns)} interleaved rounds]")
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])]
        cells += [v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)]
        print("  " + "  ".join(cells))


def _print_coalescing(result: CoalescingResult) -> None:
    data = result.as_dict()
    print(
        f"\nCoalescing (v2, {result.threads} threads, loader sleeps {data['loader_delay_ms']:g} ms)"
    )
    print(f"  loader calls per round     {data['loader_calls']}")
    print(f"  coalesced waiters          {data['coalesced_waiters']}")
    print(f"  errors or wrong tenants    {data['errors']}")
    print(f"  wall time, median          {data['wall_ms_median']:.2f} ms  {data['wall_ms']}")
    print(f"  one uncontended load       {data['single_load_ms_median']:.2f} ms")
    print(f"  x one load                 {data['ratio_to_single_load']:.2f}")


def _goals(
    resolve: GroupResult, requests: GroupResult, coalescing: CoalescingResult
) -> list[dict[str, Any]]:
    hit = resolve.case("v2 resolve() hit")
    # Same-round ratios: the machine's load changes between rounds, not within one.
    ext = requests.case("TenantCache header").ratios["bare Flask"] - 1
    hook = requests.case("empty hook").ratios["bare Flask"] - 1
    return [
        {
            "goal": f"cached resolve() under {RESOLVE_GOAL_NS / 1e3:g} µs",
            "measured": f"{hit.best_ns:,.0f} ns best, {hit.median_ns:,.0f} ns median",
            # The best of many runs, as timeit advises: noise only ever adds time.
            "met": hit.best_ns < RESOLVE_GOAL_NS,
        },
        {
            "goal": f"request with the extension at most {REQUEST_OVERHEAD_GOAL:.0%} over bare",
            "measured": f"{ext:+.1%} (empty hook: {hook:+.1%})",
            "met": ext <= REQUEST_OVERHEAD_GOAL,
        },
        {
            "goal": "one loader call per stampede of cold lookups",
            "measured": f"{coalescing.loader_calls} calls, {coalescing.errors} errors",
            "met": all(c == 1 for c in coalescing.loader_calls) and coalescing.errors == 0,
        },
    ]


def _environment() -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "commit": commit,
        "packages": {
            name: metadata.version(name)
            for name in ("flask", "werkzeug", "cachetools", "flask-tenant-cache")
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        micro, wsgi, rounds = Settings(repeats=15, target=0.01), Settings(15, 0.02), 3
    else:
        micro, wsgi, rounds = Settings(repeats=201, target=0.01), Settings(201, 0.02), 9
    started = time.perf_counter()
    env = _environment()
    print(
        f"flask-tenant-cache benchmarks, {env['date']}, Python {env['python']}, {env['cpus']} CPUs,"
        f" load {env['load_average'][0]:.2f}{' (quick)' if args.quick else ''}"
    )
    resolve = bench_resolve(micro)
    _print_group(resolve)
    identifiers = bench_identifiers(micro)
    _print_group(identifiers)
    requests, request_extra = bench_requests(wsgi)
    _print_group(requests)
    for name in ("empty hook", "TenantCache header", "TenantCache host"):
        case = requests.case(name)
        extra_ns = case.best_ns - requests.case("bare Flask").best_ns
        overhead = case.ratios["bare Flask"] - 1
        print(f"  {name}: {overhead:+.1%} over bare ({extra_ns:+,.0f} ns, bests)")
    coalescing = bench_coalescing(rounds)
    _print_coalescing(coalescing)
    goals = _goals(resolve, requests, coalescing)
    print("\nGoals")
    for goal in goals:
        print(f"  [{'met' if goal['met'] else 'MISSED'}] {goal['goal']}: {goal['measured']}")
    elapsed = time.perf_counter() - started
    env["load_average_after"] = os.getloadavg()
    results = {
        "environment": env,
        "quick": args.quick,
        "settings": {
            "micro": {"repeats": micro.repeats, "target_s": micro.target},
            "requests": {"repeats": wsgi.repeats, "target_s": wsgi.target},
            "coalescing_rounds": rounds,
        },
        "elapsed_s": round(elapsed, 1),
        "groups": {g.name: g.as_dict() for g in (resolve, identifiers, requests)},
        "requests_extra": request_extra,
        "coalescing": coalescing.as_dict(),
        "goals": goals,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"\n{elapsed:.1f} s; results written to {args.json}")
    return 1 if args.check and not all(g["met"] for g in goals) else 0


if __name__ == "__main__":
    sys.exit(main())
