"""Summaries, goals and the printed table of the HTTP benchmark (``http_load.py``)."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from ._loadgen import percentiles

if TYPE_CHECKING:
    from .http_load import Server

__all__ = ["RATE", "goals", "print_results", "summary"]

RATE = 1000.0
#: Goals from the issue, checked against the v2 app (the default) in every server config.
P95_GOAL_MS = 5.0
HIT_RATE_GOAL = 0.999
SATURATION_GOAL = 0.95


def _lookups(stats: dict[str, Any]) -> tuple[int, int]:
    """(hits, lookups): v1 counts not-found hits apart."""
    hits = int(stats["hits"]) + int(stats.get("negative_hits", 0))
    return hits, hits + int(stats["misses"])


def _hit_rate(
    before: dict[int, dict[str, Any]], after: dict[int, dict[str, Any]]
) -> dict[str, Any]:
    per_worker = {}
    for pid, stats in after.items():
        hits, lookups = _lookups(stats)
        hits0, lookups0 = _lookups(before.get(pid, {"hits": 0, "misses": 0}))
        per_worker[str(pid)] = {"hits": hits - hits0, "lookups": lookups - lookups0}
    hits = sum(w["hits"] for w in per_worker.values())
    lookups = sum(w["lookups"] for w in per_worker.values())
    return {
        "hit_rate": hits / lookups if lookups else None,
        "hits": hits,
        "lookups": lookups,
        "workers_seen": len(after),
        # A worker gunicorn replaced during the run starts with an empty cache.
        "workers_replaced": sorted(set(after) - set(before)),
        "per_worker": per_worker,
        "since_start": {str(pid): s["hit_rate"] for pid, s in after.items()},
    }


def _cpu_per_request(server: Server, phase: str, ok: int) -> dict[str, float | None]:
    def per_request(seconds: float) -> float | None:
        return round(seconds / ok * 1e6, 1) if ok else None

    return {
        "server_cpu_us_per_request": per_request(server.server_cpu_s.get(phase, 0.0)),
        "loadgen_cpu_us_per_request": per_request(server.loadgen_cpu_s.get(phase, 0.0)),
    }


def summary(server: Server, bare: Server) -> dict[str, Any]:
    ok = sum(r.ok for r in server.fixed)
    elapsed = sum(r.elapsed_s for r in server.fixed)
    sat_ok = sum(r.ok for r in server.saturation)
    sat_elapsed = sum(r.elapsed_s for r in server.saturation)
    data: dict[str, Any] = {
        "fixed_rate": {
            "achieved_rate": round(ok / elapsed, 1) if elapsed else 0.0,
            "ok": ok,
            "errors": sum(r.errors for r in server.fixed),
            "unfinished": sum(r.unfinished for r in server.fixed),
            "latency_ms": {
                k: round(v, 3)
                for k, v in percentiles([s for r in server.fixed for s in r.samples_s]).items()
            },
            **_cpu_per_request(server, "fixed", ok),
            "rounds": [r.as_dict() for r in server.fixed],
        },
        "saturation": {
            "throughput": round(sat_ok / sat_elapsed, 1) if sat_elapsed else 0.0,
            "errors": sum(r.errors for r in server.saturation),
            **_cpu_per_request(server, "saturation", sat_ok),
            "rounds": [r.as_dict() for r in server.saturation],
        },
        "warm_passes": server.warm_passes,
    }
    if server is not bare:
        # Same-round ratios: the load of the shared machine drifts between rounds.
        ratios = [
            a.throughput / b.throughput
            for a, b in zip(server.saturation, bare.saturation, strict=True)
            if b.throughput
        ]
        data["saturation"]["ratio_to_bare"] = round(statistics.median(ratios), 3)
        # CPU time per request is less sensitive to the other processes than wall time is.
        mine = data["saturation"]["server_cpu_us_per_request"]
        base = _cpu_per_request(bare, "saturation", sum(r.ok for r in bare.saturation))
        data["saturation"]["server_cpu_ratio_to_bare"] = (
            round(mine / base["server_cpu_us_per_request"], 3)
            if mine and base["server_cpu_us_per_request"]
            else None
        )
        data["saturation"]["ratios_per_round"] = [round(r, 3) for r in ratios]
        data["hit_rate"] = _hit_rate(server.stats_before, server.stats_after)
    return data


def goals(configs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's goals, checked against the v2 app in each server config."""
    found = []
    for name, config in configs.items():
        v2 = config["apps"]["v2"]
        p95 = v2["fixed_rate"]["latency_ms"]["p95"]
        rate = v2["hit_rate"]["hit_rate"]
        ratio = v2["saturation"]["ratio_to_bare"]
        found += [
            {
                "goal": f"{name}: p95 under {P95_GOAL_MS:g} ms at {RATE:g} req/s",
                "measured": f"{p95:.2f} ms",
                "met": p95 < P95_GOAL_MS,
            },
            {
                "goal": f"{name}: hit rate at least {HIT_RATE_GOAL:.1%}",
                "measured": "n/a" if rate is None else f"{rate:.4%}",
                "met": rate is not None and rate >= HIT_RATE_GOAL,
            },
            {
                "goal": f"{name}: saturation throughput at least {SATURATION_GOAL:.0%} of bare",
                "measured": f"{ratio:.1%}",
                "met": ratio >= SATURATION_GOAL,
            },
        ]
    return found


def _cpu_cell(phase: dict[str, Any]) -> str:
    server, loadgen = phase["server_cpu_us_per_request"], phase["loadgen_cpu_us_per_request"]
    return "--" if server is None or loadgen is None else f"{server:.0f} / {loadgen:.0f}"


def print_results(results: dict[str, Any]) -> None:
    """The figures as one table per server config, then the goals."""
    s = results["settings"]
    print(
        f"HTTP load: {s['rate']:g} req/s over {s['tenants']} tenants for "
        f"{s['fixed_rate']['rounds']} x {s['fixed_rate']['seconds']:g} s per app, saturation "
        f"{s['saturation']['rounds']} x {s['saturation']['seconds']:g} s; load "
        f"{s['load_average_before'][0]:.2f} -> {s['load_average_after'][0]:.2f}"
    )
    header = ["app", "req/s", "p50", "p95", "p99", "max ms", "err", "hit rate", "CPU µs/req"]
    header += ["sat req/s", "x bare", "sat CPU µs/req", "srv CPU x bare"]
    print("CPU µs/req: per answered request, gunicorn's processes / the load generator's")
    for config in results["configs"].values():
        rows = [header]
        for name, app in config["apps"].items():
            fixed, sat = app["fixed_rate"], app["saturation"]
            lat = fixed["latency_ms"]
            hit = app.get("hit_rate", {}).get("hit_rate")
            rows.append(
                [
                    name,
                    f"{fixed['achieved_rate']:.0f}",
                    *(f"{lat[k]:.2f}" for k in ("p50", "p95", "p99", "max")),
                    str(fixed["errors"] + fixed["unfinished"]),
                    "--" if hit is None else f"{hit:.4%}",
                    _cpu_cell(fixed),
                    f"{sat['throughput']:.0f}",
                    f"{sat.get('ratio_to_bare', 1.0):.3f}",
                    _cpu_cell(sat),
                    f"{sat.get('server_cpu_ratio_to_bare') or 1.0:.3f}",
                ]
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        print(f"\n{config['description']}  (latency in ms from the due time)")
        for row in rows:
            cells = [row[0].ljust(widths[0])] + [
                v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)
            ]
            print("  " + "  ".join(cells))
    print("\nGoals (v2)")
    for goal in results["goals"]:
        print(f"  [{'met' if goal['met'] else 'MISSED'}] {goal['goal']}: {goal['measured']}")
    print(f"\n{results['elapsed_s']:.1f} s")
