"""The printed tables of the in-process benchmarks, and the machine a run was made on."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from ._harness import GroupResult
from .coalescing import CoalescingResult

__all__ = [
    "coalescing_goals",
    "environment",
    "print_coalescing",
    "print_goals",
    "print_group",
    "uncommitted",
]


def _fmt(ns: float, unit: str) -> str:
    return f"{ns / 1e3:,.2f} µs" if unit == "us" else f"{ns:,.0f} ns"


def print_group(group: GroupResult) -> None:
    """One interleaved group as a table: best, median and the ratios to its references."""
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


def print_coalescing(result: CoalescingResult) -> None:
    """The stampede figures of :mod:`benchmarks.coalescing`."""
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


def coalescing_goals(result: CoalescingResult) -> list[dict[str, Any]]:
    """One loader call per stampede, and no thread without its tenant."""
    return [
        {
            "goal": f"one loader call per stampede of {result.threads} cold lookups (v2)",
            "measured": f"{result.loader_calls} calls, {result.errors} errors",
            "met": all(c == 1 for c in result.loader_calls) and result.errors == 0,
        }
    ]


def print_goals(goals: list[dict[str, Any]]) -> None:
    """Every goal of the run, met or missed, with its figure."""
    print("\nGoals")
    for goal in goals:
        print(
            f"  [{'met' if goal['met'] else 'MISSED'}] {goal['part']}: {goal['goal']}: "
            f"{goal['measured']}"
        )


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def uncommitted() -> list[str]:
    """Paths with uncommitted changes (tracked, or untracked and not ignored); [] outside git."""
    status = _git("status", "--porcelain") or ""
    return [line[3:] for line in status.splitlines() if line.strip()]


def _machine() -> dict[str, Any]:
    """The CPU model and the memory of this machine (Linux /proc; what it can read)."""
    found: dict[str, Any] = {"cpu": platform.processor() or platform.machine()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                found["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                found["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    return found


def environment() -> dict[str, Any]:
    """Date, interpreter, machine, package versions, commit and load average, for the JSON."""
    commit = _git("rev-parse", "--short", "HEAD")
    packages = ("flask", "werkzeug", "cachetools", "gunicorn", "redis", "flask-tenant-cache")
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "machine": _machine(),
        "load_average": os.getloadavg(),
        "commit": commit.strip() if commit else None,
        "dirty": bool(uncommitted()),
        "packages": versions,
    }


def standalone(
    prog: str,
    description: str | None,
    quick_help: str,
    bench: Callable[[bool], dict[str, Any]],
    show: Callable[[dict[str, Any]], None],
    argv: list[str] | None = None,
) -> int:
    """``python -m benchmarks.<part> [--quick] [--json PATH]``: run one part on its own."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    result = bench(args.quick)
    show(result)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return 0
