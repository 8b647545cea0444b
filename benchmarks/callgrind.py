"""Instructions per request under callgrind, and a check against the committed baseline.

``python -m benchmarks.callgrind [--check] [--update-baseline] [--json PATH]``. Each app of
:data:`~benchmarks.wsgi.APPS`, serving each view of :data:`~benchmarks.wsgi.VIEWS` (the string
view, and the view that reads ``current_tenant``), runs in its own process under
``setarch -R valgrind --tool=callgrind`` (no address randomisation, ``PYTHONHASHSEED=0``), so
the counts are the same run after run, however loaded the machine is. Collection is on only
inside two ``functools.reduce`` calls that make the requests (``--toggle-collect``), dumped
after each; the difference of the two over the difference of their request counts is the
count per request, without start-up, warm-up or the loop's own constant cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .wsgi import APPS, BARE, VIEWS

__all__ = ["BASELINE", "GROWTH_LIMIT", "bench_callgrind", "check", "count", "main"]

ROOT = Path(__file__).resolve().parent.parent
BASELINE = Path(__file__).with_name("callgrind_baseline.json")
#: The check fails when an app's instructions over bare grow by more than this.
GROWTH_LIMIT = 0.05
#: Requests per measured loop: the first, then the second (difference: the per-request count).
FIRST, SECOND = 50, 250
WARMUP = 50

#: The counted loops, after the child's set-up has defined ``step(_a, _b)``. When the cyclic
#: collector's passes fall depends on the allocation history (the environment, the paths), and
#: one full pass in a counted loop moved the figure by tens of thousands of instructions per
#: request: the heap is frozen and the collector off while counting.
LOOPS = f"""
import functools, gc
for _ in range({WARMUP}):
    step(None, None)
gc.collect()
gc.freeze()
gc.disable()
functools.reduce(step, range({FIRST}), None)
functools.reduce(step, range({SECOND}), None)
"""

_CHILD = (
    """
import sys
from benchmarks.wsgi import VIEWS, build_app, check, environ, make_caller
kind = sys.argv[1]
view = next(view for view in VIEWS if view.name == sys.argv[2])
app = build_app(kind, view)
env = environ()
check(app, env, view.body, kind if kind in ("v1", "v2") else None)
call = make_caller(app, env)
step = lambda _a, _b: call()
"""
    + LOOPS
)


def _valgrind() -> list[str]:
    missing = [tool for tool in ("valgrind", "setarch") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"{' and '.join(missing)} not found: apt-get install valgrind")
    return ["setarch", "-R", "valgrind", "--tool=callgrind", "--collect-atstart=no"]


def _totals(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals line in {path}")


#: Where the counts of each view go in a result (the string view's at the top, as before
#: the tenant view was counted, so older baselines still compare).
VIEW_KEYS = {"string": None, "tenant": "tenant_view"}


def instructions_per_request(kind: str, view: str = "string") -> int:
    """Ir per request of the app ``kind`` serving ``view``, from one callgrind run."""
    return count(_CHILD, [kind, view], f"{kind} ({view})")


def count(code: str, args: list[str], what: str) -> int:
    """Ir per step of ``code`` run with ``args``: ``code`` ends with :data:`LOOPS`, and the
    count is the difference of its two loops over the difference of their steps."""
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = [
            *_valgrind(),
            "--toggle-collect=functools_reduce",
            "--dump-after=functools_reduce",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-c",
            code,
            *args,
        ]
        # A fixed environment: its size moves the stack, and with it the counts of code that
        # hashes or compares addresses.
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0", "PYTHONPATH": str(ROOT)}
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"callgrind run of {what} failed:\n{done.stderr[-2000:]}")
        dumps = sorted(Path(tmp).glob("callgrind.out.*"), key=lambda p: int(p.suffix[1:]))
        if len(dumps) < 2:
            raise RuntimeError(f"callgrind run of {what}: {len(dumps)} dumps, not 2")
        first, second = (_totals(p) for p in dumps[-2:])
    return round((second - first) / (SECOND - FIRST))


def _environment() -> dict[str, Any]:
    from ._report import environment

    env = environment()
    return {
        "python": platform.python_version(),
        "packages": {k: env["packages"][k] for k in ("flask", "werkzeug", "cachetools")},
        "commit": env["commit"],
        "dirty": env["dirty"],
    }


def _counted(counts: dict[str, int]) -> dict[str, dict[str, int]]:
    return {
        "ir_per_request": counts,
        "over_bare": {k: v - counts[BARE] for k, v in counts.items() if k != BARE},
    }


def bench_callgrind(quick: bool = False) -> dict[str, Any]:
    """Ir per request of every app and view, and the check against :data:`BASELINE` when it
    exists."""
    started = time.perf_counter()
    runs = [(kind, view.name) for view in VIEWS for kind in APPS]
    # Counts do not depend on the load, so the runs can share the cores.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        found = dict(
            zip(runs, pool.map(lambda run: instructions_per_request(*run), runs), strict=True)
        )
    result: dict[str, Any] = {}
    for view in VIEWS:
        counted = _counted({kind: found[kind, view.name] for kind in APPS})
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
