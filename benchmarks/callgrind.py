"""Instructions per request under callgrind, and a check against the committed baseline.

``python -m benchmarks.callgrind [--check] [--update-baseline] [--json PATH]``. The apps of
:data:`~benchmarks.wsgi.APPS` serving one view of :data:`~benchmarks.wsgi.VIEWS` (the string
view, or the view that reads ``current_tenant``) run one after another in one process under
``setarch -R valgrind --tool=callgrind`` (no address randomisation, ``PYTHONHASHSEED=0``), so
the load of the machine does not matter. Collection is on only inside two
``functools.reduce`` calls per app that make its requests (``--toggle-collect``), dumped after
each; the difference of the two over the difference of their request counts is the count per
request, without start-up, warm-up or the loop's own constant cost. Each view is counted in
:data:`LAYOUTS` processes of different memory layouts, and the figures are the medians
(:func:`count` says why).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .wsgi import APPS, BARE, VIEWS

__all__ = [
    "BASELINE",
    "GROWTH_LIMIT",
    "bench_callgrind",
    "check",
    "child_env",
    "count",
    "dump_total",
    "main",
    "medians",
    "valgrind",
]

ROOT = Path(__file__).resolve().parent.parent
BASELINE = Path(__file__).with_name("callgrind_baseline.json")
#: The check fails when an app's instructions over bare grow by more than this.
GROWTH_LIMIT = 0.05
#: Requests per measured loop: the first, then the second (difference: the per-request count).
FIRST, SECOND = 50, 250
WARMUP = 50
#: Memory layouts each count is taken in; the figure is the median over them (see count()).
LAYOUTS = 5

#: The first lines of every child: ``sys.argv[1]`` is the layout, a number of small objects
#: allocated before anything is imported, which moves every later object to another address.
_LAYOUT = """
import sys
_layout = [str(i) * 3 for i in range(int(sys.argv[1]) * 37)]
"""

#: The counted loops, after the child's set-up has made ``steps``, a list of ``step(_a, _b)``
#: functions counted one after another. When the cyclic collector's passes fall depends on the
#: allocation history, and one full pass in a counted loop moved the figure by tens of
#: thousands of instructions per request: the heap is frozen and the collector off while
#: counting.
LOOPS = f"""
import functools, gc
for step in steps:
    for _ in range({WARMUP}):
        step(None, None)
gc.collect()
gc.freeze()
gc.disable()
for step in steps:
    functools.reduce(step, range({FIRST}), None)
    functools.reduce(step, range({SECOND}), None)
"""

_CHILD = (
    """
from benchmarks.wsgi import VIEWS, build_app, check, environ, make_caller
view = next(view for view in VIEWS if view.name == sys.argv[2])
steps = []
for kind in sys.argv[3:]:
    app = build_app(kind, view)
    env = environ()
    check(app, env, view.body, kind if kind in ("v1", "v2") else None)
    steps.append(lambda _a, _b, call=make_caller(app, env): call())
"""
    + LOOPS
)


def valgrind(*options: str) -> list[str]:
    """The command prefix that runs a program under callgrind with ``options``, without
    address randomisation."""
    missing = [tool for tool in ("valgrind", "setarch") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"{' and '.join(missing)} not found: apt-get install valgrind")
    return ["setarch", "-R", "valgrind", "--tool=callgrind", *options]


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a counted child, with ``extra``: fixed, because its size moves the
    stack, and with it the counts of code that hashes or compares addresses; no bytecode is
    written (see :func:`count`)."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONHASHSEED": "0",
        "PYTHONPATH": str(ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        **extra,
    }


def dump_total(path: Path) -> int:
    """The instructions counted in the callgrind dump ``path``."""
    for line in path.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals line in {path}")


#: Where the counts of each view go in a result (the string view's at the top, as before
#: the tenant view was counted, so older baselines still compare).
VIEW_KEYS = {"string": None, "tenant": "tenant_view"}


def _count_in(layout: int, code: str, args: list[str], steps: int, what: str) -> list[int]:
    """Ir per step of each of the child's ``steps`` steps, in one process of memory layout
    ``layout``: each step's two loops are dumped apart (the last dumps, after any the imports
    made), and its count is the difference of the two over the difference of their steps."""
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = [
            *valgrind("--collect-atstart=no"),
            "--toggle-collect=functools_reduce",
            "--dump-after=functools_reduce",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-c",
            _LAYOUT + code,
            str(layout),
            *args,
        ]
        done = subprocess.run(
            cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"callgrind run of {what} failed:\n{done.stderr[-2000:]}")
        dumps = sorted(Path(tmp).glob("callgrind.out.*"), key=lambda p: int(p.suffix[1:]))
        if len(dumps) < 2 * steps:
            raise RuntimeError(f"callgrind run of {what}: {len(dumps)} dumps, not {2 * steps}")
        totals = [dump_total(p) for p in dumps[-2 * steps :]]
    return [
        round((second - first) / (SECOND - FIRST))
        for first, second in zip(totals[::2], totals[1::2], strict=True)
    ]


def count(code: str, args: list[str], steps: int, what: str) -> tuple[list[int], list[int]]:
    """Ir per step of each of ``code``'s ``steps`` steps (``code`` ends with :data:`LOOPS`), and of
    each step over the first: medians over :data:`LAYOUTS` memory layouts.

    Counts do not depend on the machine's load, but they do depend on where objects sit in
    memory: CPython's type attribute cache is indexed by the address of the attribute's name,
    so which lookups collide, and miss, moves with every allocation before them (the
    checkout's path, whether the ``.pyc`` files were there). One process measured the same
    code 3,000 Ir per request apart in two checkouts. Steps counted in one process share its
    layout, so a step over the first (an app over bare) is steadier than either alone; the
    median over layouts takes off what is left. The project's own ``.pyc`` files are deleted
    first and none is written, so every child compiles its modules from the same sources: the
    bytes of a ``.pyc`` depend on the process that wrote it (marshal marks the objects it saw
    twice; a forced recompile changed 29 of the package's 44 files), and loading other bytes
    lays the objects out otherwise. With the files some earlier process had written, CI counted
    2 % more than a run by hand in the same checkout.
    """
    _drop_bytecode()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        runs = list(
            pool.map(lambda layout: _count_in(layout, code, args, steps, what), range(LAYOUTS))
        )
    return medians(runs)


def _drop_bytecode() -> None:
    """Delete this interpreter's ``.pyc`` files of the project's packages."""
    tag = sys.implementation.cache_tag
    for package in ("benchmarks", "flask_tenant_cache"):
        for cached in (ROOT / package).rglob(f"__pycache__/*.{tag}.pyc"):
            cached.unlink(missing_ok=True)


def medians(runs: list[list[int]]) -> tuple[list[int], list[int]]:
    """Of the counts per step of several processes: each step's median, and the median of each
    step's count over the first step's in the same process (not the difference of medians)."""
    steps = range(len(runs[0]))
    return (
        [round(statistics.median(run[i] for run in runs)) for i in steps],
        [round(statistics.median(run[i] - run[0] for run in runs)) for i in steps],
    )


def instructions_per_request(view: str = "string") -> dict[str, dict[str, int]]:
    """Ir per request of every app of :data:`APPS` serving ``view``, and over bare."""
    counts, over = count(_CHILD, [view, *APPS], len(APPS), f"the apps ({view} view)")
    return {
        "ir_per_request": dict(zip(APPS, counts, strict=True)),
        "over_bare": {k: v for k, v in zip(APPS, over, strict=True) if k != BARE},
    }


def _environment() -> dict[str, Any]:
    from ._report import environment

    env = environment()
    return {
        "python": platform.python_version(),
        "packages": {k: env["packages"][k] for k in ("flask", "werkzeug", "cachetools")},
        "commit": env["commit"],
        "dirty": env["dirty"],
    }


def bench_callgrind(quick: bool = False) -> dict[str, Any]:
    """Ir per request of every app and view, and the check against :data:`BASELINE` when it
    exists."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(VIEWS)) as pool:
        found = list(pool.map(lambda view: instructions_per_request(view.name), VIEWS))
    result: dict[str, Any] = {}
    for view, counted in zip(VIEWS, found, strict=True):
        key = VIEW_KEYS[view.name]
        if key is None:
            result.update(counted)
        else:
            result[key] = counted
    result["environment"] = _environment()
    baseline = _baselines().get(_minor(result["environment"]["python"]))
    if baseline is not None:
        result["check"] = check(result, baseline)
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _baselines() -> dict[str, dict[str, Any]]:
    """The committed baselines, one per Python minor version (CI and development differ)."""
    if not BASELINE.exists():
        return {}
    found: dict[str, dict[str, Any]] = json.loads(BASELINE.read_text())["by_python"]
    return found


def check(result: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Each extension app's Ir over bare against the baseline's, at most :data:`GROWTH_LIMIT`
    more. Counts of another Python minor version are not comparable: the check is skipped."""
    mine, theirs = result["environment"], baseline["environment"]
    if mine["python"].split(".")[:2] != theirs["python"].split(".")[:2]:
        return {
            "skipped": True,
            "ok": True,
            "summary": f"SKIPPED: the baseline was counted on Python {theirs['python']}, "
            f"this is {mine['python']}",
        }
    growth, now_over, then_over, missing = {}, {}, {}, []
    for key in VIEW_KEYS.values():
        mine_view = result if key is None else result[key]
        theirs_view = baseline if key is None else baseline.get(key)
        if theirs_view is None:  # a baseline counted before this view was: not a pass
            missing.append(str(key).replace("_", " "))
            continue
        for kind in ("v1", "v2"):
            name = kind if key is None else f"{kind} ({key.replace('_', ' ')})"
            now, then = mine_view["over_bare"][kind], theirs_view["over_bare"][kind]
            now_over[name], then_over[name] = now, then
            growth[name] = now / then - 1 if then else 0.0
    # Rounded only past float noise: 42,001 over 40,000 is more than 5 %.
    ok = not missing and all(round(g, 9) <= GROWTH_LIMIT for g in growth.values())
    summary = ", ".join(
        [
            *(
                f"{k} {now_over[k]:,} Ir over bare ({g:+.1%} against {then_over[k]:,})"
                for k, g in growth.items()
            ),
            *(f"no baseline for the {name} (--update-baseline)" for name in missing),
        ]
    )
    if mine["packages"] != theirs["packages"]:
        summary += f"; packages differ from the baseline's {theirs['packages']}"
    return {
        "skipped": False,
        "ok": ok,
        "growth": {k: round(g, 4) for k, g in growth.items()},
        "baseline_commit": theirs["commit"],
        "summary": f"{summary} (limit +{GROWTH_LIMIT:.0%}, baseline {theirs['commit']})",
    }


def goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The hit path within :data:`GROWTH_LIMIT` of the committed baseline."""
    found = result.get("check")
    if found is None:
        return []
    return [
        {
            "goal": f"hit path at most +{GROWTH_LIMIT:.0%} instructions over bare against the "
            "committed baseline (v1, v2)",
            "measured": found["summary"],
            "met": found["ok"],
        }
    ]


def print_callgrind(result: dict[str, Any]) -> None:
    """The counts as a table per view, then the check."""
    for view in VIEWS:
        key = VIEW_KEYS[view.name]
        counted = result if key is None else result[key]
        print(f"\nInstructions per request (callgrind Ir, {view.title})")
        for kind, ir in counted["ir_per_request"].items():
            over = counted["over_bare"].get(kind)
            print(f"  {kind:<6} {ir:>10,}" + ("" if over is None else f"  {over:+,} over bare"))
    found = result.get("check")
    print(f"  check: {'no baseline' if found is None else found['summary']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.callgrind", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the hit path grew")
    parser.add_argument(
        "--update-baseline", action="store_true", help=f"write the counts to {BASELINE.name}"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    result = bench_callgrind()
    print_callgrind(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.update_baseline:
        baselines = _baselines()
        minor = _minor(result["environment"]["python"])
        keys = ("ir_per_request", "over_bare", "environment", *filter(None, VIEW_KEYS.values()))
        baselines[minor] = {k: result[k] for k in keys}
        BASELINE.write_text(json.dumps({"by_python": baselines}, indent=2, sort_keys=True) + "\n")
        print(f"  wrote the Python {minor} baseline to {BASELINE}")
    if args.check:
        found = result.get("check")
        if found is None:
            # Not a pass: a check that cannot compare must say so loudly, and CI must add the
            # baseline of its interpreter (--update-baseline) rather than skip for ever.
            print(f"  no baseline for this Python in {BASELINE.name}", file=sys.stderr)
            return 1
        return 0 if found["ok"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
