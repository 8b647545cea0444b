"""Run the benchmarks: ``python -m benchmarks [--quick] [--only PARTS] [--out DIR] [--publish]``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._harness import Settings
from ._report import (
    coalescing_goals,
    environment,
    print_coalescing,
    print_goals,
    print_group,
    uncommitted,
)

HERE = Path(__file__).resolve().parent
#: Where a run writes by default: ignored by git, one folder per run.
RUNS = HERE / "runs"
#: The committed results and plots that the docs show, written only by ``--publish``.
PUBLISHED = HERE / "results"
DOCS_PAGE = HERE.parent / "docs" / "performance.rst"
#: In the order they run: the in-process parts first, before any server warms the cores up.
PARTS = (
    "micro",
    "requests",
    "identification",
    "coalescing",
    "scale",
    "eviction",
    "callgrind",
    "cluster",
    "http",
    "control",
)


def _parts(value: str) -> list[str]:
    chosen = [p.strip() for p in value.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PARTS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown part(s) {', '.join(unknown) or '(none)'}; choose from {','.join(PARTS)}"
        )
    return [p for p in PARTS if p in chosen]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark flask-tenant-cache (v1 and v2) against bare baselines.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer, shorter rounds (about 70 s on 2 cores)"
    )
    parser.add_argument(
        "--only",
        type=_parts,
        default=list(PARTS),
        metavar="PARTS",
        help=f"comma-separated subset of {','.join(PARTS)} (default: all)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"folder for results.json and the plots (default: a new folder in {RUNS})",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help=f"full runs only, from a clean tree: write the committed {PUBLISHED.name}/ and "
        "regenerate docs/performance.rst from this run",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a goal is missed")
    return parser


def _refuse_publish(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The published figures describe a commit: a full run of that commit, nothing less."""
    if args.quick or args.only != list(PARTS):
        parser.error("--publish needs a full run (no --quick, no --only)")
    if args.out is not None:
        parser.error("--publish writes to benchmarks/results/; leave out --out")
    dirty = uncommitted()
    if dirty:
        parser.error(
            "--publish needs a clean tree (the docs name the commit measured); "
            f"uncommitted: {', '.join(dirty[:5])}"
        )


def _micro(quick: bool, out: dict[str, Any]) -> list[dict[str, Any]]:
    from .micro import DEADLINE, LOOKUP_GOAL_NS, bench_identifiers, bench_resolve, resolve_goals

    settings = Settings(repeats=15, target=0.01) if quick else Settings(repeats=101, target=0.01)
    resolve = bench_resolve(settings)
    print_group(resolve)
    identifiers = bench_identifiers(settings)
    print_group(identifiers)
    out["settings"] = {"repeats": settings.repeats, "target_s": settings.target}
    out["groups"] = {g.name: g.as_dict() for g in (resolve, identifiers)}
    out["lookup_reference"] = DEADLINE
    out["lookup_goal_ns"] = LOOKUP_GOAL_NS
    return resolve_goals(resolve)


def _requests(quick: bool, out: dict[str, Any]) -> list[dict[str, Any]]:
    from .wsgi import VIEWS, bench_requests, request_goals

    settings = Settings(repeats=15, target=0.02) if quick else Settings(repeats=101, target=0.02)
    groups = bench_requests(settings)
    out["settings"] = {"repeats": settings.repeats, "target_s": settings.target}
    out["views"] = {}
    for view in VIEWS:
        group = groups[view.name]
        print_group(group)
        out["views"][view.name] = {
            "title": view.title,
            "goal_x": view.goal_x,
            "group": group.as_dict(),
        }
    return request_goals(groups)


def _coalescing(quick: bool, out: dict[str, Any]) -> list[dict[str, Any]]:
    from .coalescing import MANY, bench_coalescing, bench_many, many_goals

    result = bench_coalescing(3 if quick else 9)
    print_coalescing(result)
    out |= result.as_dict()
    out["stampedes"] = [bench_many(v, n) for n in MANY for v in ("v1", "v2")]
    for s in out["stampedes"]:
        print(
            f"  {s['threads']} threads over {s['tenants']:,} cold tenants ({s['resolver']}): "
            f"{s['loader_calls']:,} loader calls, {s['errors']} errors, {s['wall_ms']:,.0f} ms "
            f"(x{s['ratio_to_ideal']:.2f} the ideal {s['ideal_ms']:,.0f} ms)"
        )
    return coalescing_goals(result) + many_goals(out["stampedes"])


def _scale(quick: bool, out: dict[str, Any]) -> list[dict[str, Any]]:
    from .scale import bench_scale, print_scale

    result = bench_scale(quick)
    print_scale(result)
    out |= result
    goals: list[dict[str, Any]] = out.pop("goals")
    return goals


def _eviction(quick: bool, out: dict[str, Any]) -> list[dict[str, Any]]:
    from .eviction import bench_eviction, eviction_goals, print_eviction

    result = bench_eviction(quick)
    print_eviction(result)
    out |= result
    return eviction_goals(result)


def _callgrind(quick: bool, out: dict[str, Any]) -> list[dict[str, Any]]:
    from .callgrind import bench_callgrind, goals, print_callgrind
    from .callgrind_http import bench_http_instructions, print_http_instructions
    from .callgrind_pieces import bench_pieces, print_pieces

    result = bench_callgrind(quick)
    print_callgrind(result)
    result["pieces"] = bench_pieces()
    print_pieces(result["pieces"])
    result["http"] = bench_http_instructions(quick)
    print_http_instructions(result["http"])
    out |= result
    return goals(result)


def _cluster(quick: bool, out: dict[str, Any]) -> list[dict[str, Any]]:
    from .cluster import bench_cluster, print_cluster

    result = bench_cluster(quick)
    print_cluster(result)
    out |= result
    goals: list[dict[str, Any]] = out.pop("goals")
    return goals


def _http(quick: bool, out: dict[str, Any]) -> list[dict[str, Any]]:
    from .http_load import bench_http, print_results

    result = bench_http(quick)
    print()
    print_results(result)
    out |= result
    goals: list[dict[str, Any]] = out.pop("goals")
    return goals


def _control(quick: bool, out: dict[str, Any]) -> list[dict[str, Any]]:
    from .control import run

    return run(quick, out)


RUNNERS: dict[str, Callable[[bool, dict[str, Any]], list[dict[str, Any]]]] = {
    "micro": _micro,
    "requests": _requests,
    "identification": lambda quick, out: __import__(
        "benchmarks.identification", fromlist=["run"]
    ).run(quick, out),
    "coalescing": _coalescing,
    "scale": _scale,
    "eviction": _eviction,
    "callgrind": _callgrind,
    "cluster": _cluster,
    "http": _http,
    "control": _control,
}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.publish:
        _refuse_publish(parser, args)
    started = time.perf_counter()
    env = environment()
    print(
        f"flask-tenant-cache benchmarks, {env['date']}, Python {env['python']}, {env['cpus']} CPUs,"
        f" load {env['load_average'][0]:.2f}{' (quick)' if args.quick else ''}; "
        f"parts: {','.join(args.only)}"
    )
    results: dict[str, Any] = {"environment": env, "quick": args.quick, "parts": args.only}
    goals: list[dict[str, Any]] = []
    for part in args.only:
        print(f"\n=== {part} ===", flush=True)
        part_started = time.perf_counter()
        out: dict[str, Any] = {}
        try:
            part_goals = RUNNERS[part](args.quick, out)
        except Exception as exc:
            # One part failing (Redis down, a port taken) must not void the figures of the others.
            traceback.print_exc()
            out = {"error": f"{type(exc).__name__}: {exc}"}
            part_goals = [
                {"goal": "the part ran to the end", "measured": out["error"], "met": False}
            ]
        out["elapsed_s"] = round(time.perf_counter() - part_started, 1)
        results[part] = out
        goals += [{"part": part, **g} for g in part_goals]
        print(f"[{part}: {out['elapsed_s']} s]", flush=True)
    print_goals(goals)
    env["load_average_after"] = os.getloadavg()
    results["goals"] = goals
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    moved = args.publish and (environment()["commit"] != env["commit"] or uncommitted())
    if moved:
        # The parts ran partly on other code (a commit, a merge or an edit during the run):
        # the figures describe no commit, so they are kept out of the docs.
        print("\nthe tree changed during the run: not published", file=sys.stderr)
    publish = args.publish and not moved
    out_dir = PUBLISHED if publish else args.out or RUNS / _run_name(env)
    _write(results, out_dir)
    if publish:
        from ._docs import write_page

        write_page(results, PUBLISHED, DOCS_PAGE)
        print(f"regenerated {DOCS_PAGE}")
    print(f"\n{results['elapsed_s']:.1f} s; results and plots in {out_dir}")
    return 1 if moved or (args.check and not all(g["met"] for g in goals)) else 0


def _run_name(env: dict[str, Any]) -> str:
    stamp = env["date"].replace(":", "").replace("+0000", "Z")
    return f"{stamp}-{env['commit'] or 'nogit'}{'-dirty' if env['dirty'] else ''}"


def _write(results: dict[str, Any], out_dir: Path) -> None:
    """``results.json`` and one PNG per figure in ``out_dir`` (old figures removed first)."""
    from ._plot import plot

    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        old.unlink()
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    plot(results, out_dir)


if __name__ == "__main__":
    sys.exit(main())
