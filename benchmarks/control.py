"""The migration control plane: the hit-path cost of the figures, and the guard's reaction time.

Part 1 times whole requests through ``app.wsgi_app`` with the figures recorded (as shipped)
and with their WSGI recorder taken off, interleaved in one run, and the pieces a
hit pays: ``Figures.record`` and an uncontended lock. Part 2 serves a guarded app (a plan at
50 %, Redis at ``$TENANT_CACHE_BENCH_REDIS_URL``) under gunicorn with two sync workers, loads
it over HTTP, makes every v2 lookup fail, and measures how long until every worker serves v1.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from . import _http_apps
from ._control_app import FAULT_ENV, PREFIX_ENV, REDIS_ENV
from ._fixtures import MemoryLoader, make_tenants
from ._harness import Case, Settings, run_group
from ._report import print_group, standalone
from .http_load import ROOT, _free_port, _gunicorn
from .wsgi import VIEWS, build_app, check, environ, make_caller, without_recorder

__all__ = ["bench_control", "print_control", "run"]

REDIS_URL = os.environ.get("TENANT_CACHE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
WITH, WITHOUT = "figures on", "figures off"
#: The most a hit may pay for the figures, whole request against whole request.
FIGURES_GOAL = 0.05


def bench_figures(settings: Settings) -> dict[str, Any]:
    """Whole-request time with and without the figures, and the cost of one record."""
    loader = MemoryLoader(make_tenants(100))
    on, off = build_app("v2", VIEWS[0], loader), without_recorder(build_app("v2", VIEWS[0], loader))
    by_header = environ([("X-Tenant-ID", "acme")])
    for app in (on, off):
        check(app, by_header, VIEWS[0].body, "v2")
    figures = on.extensions["tenant_cache"].figures
    ns: dict[str, Any] = {
        "on": make_caller(on, by_header),
        "off": make_caller(off, by_header),
        "record": figures.record,
        "lock": threading.Lock(),
        "now": time.perf_counter,
    }
    requests = run_group(
        "figures",
        "Whole request with and without the per-version figures (µs per request)",
        [
            Case(WITHOUT, "off()", ns, description="the extension, recorder removed"),
            Case(WITH, "on()", ns, description="the extension as shipped"),
        ],
        settings,
        unit="us",
    )
    pieces = run_group(
        "figure pieces",
        "What a hit pays for the figures (ns per call)",
        [
            Case("perf_counter()", "now()", ns, description="one of the three clock readings"),
            Case(
                "with lock: pass",
                "with lock: pass",
                ns,
                description="an uncontended lock, for scale (the record takes none)",
            ),
            Case(
                "Figures.record",
                "record('v2', 2e-6, 1e-4, False, False, 1000.0)",
                ns,
                description="one record (no lock)",
            ),
        ],
        settings,
    )
    return {"requests": requests, "pieces": pieces}


def _get(conn: http.client.HTTPConnection, slug: str) -> tuple[int, str, str]:
    conn.request("GET", "/", headers={"X-Tenant-ID": slug})
    response = conn.getresponse()
    response.read()
    return (
        response.status,
        response.getheader("X-Resolver", "-"),
        response.getheader("X-Worker", ""),
    )


def _load(port: int, slugs: list[str], stop: threading.Event, out: list[Any], seed: int) -> None:
    # A new connection per request: sync workers take turns, so both see the traffic.
    index = seed
    while not stop.is_set():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            status, version, worker = _get(conn, slugs[index % len(slugs)])
            out.append((time.monotonic(), status, version, worker))
        except OSError:
            pass
        finally:
            conn.close()
        index += 7


def bench_reaction(quick: bool) -> dict[str, Any]:
    """Fail v2 under load; the time until every worker serves every request on v1."""
    import redis

    prefix = f"bench-control-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    with tempfile.TemporaryDirectory(prefix="bench-control-") as tmp:
        workdir = Path(tmp)
        slugs = _http_apps.seed(str(workdir / "tenants.sqlite3"))
        fault = workdir / "fault"
        port = _free_port()
        env = {
            **os.environ,
            _http_apps.DATABASE_ENV: str(workdir / "tenants.sqlite3"),
            FAULT_ENV: str(fault),
            REDIS_ENV: REDIS_URL,
            PREFIX_ENV: prefix,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        log = (workdir / "gunicorn.log").open("wb")
        cmd = [_gunicorn(), "--bind", f"127.0.0.1:{port}", "--workers", "2"]
        cmd += ["--log-level", "warning", "benchmarks._control_app:guarded()"]
        server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    if _get(conn, "acme")[0] == 200:
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            samples: list[Any] = []
            stop = threading.Event()
            threads = [
                threading.Thread(target=_load, args=(port, slugs, stop, samples, i))
                for i in range(4)
            ]
            for thread in threads:
                thread.start()
            time.sleep(1.0 if quick else 3.0)  # healthy traffic: v1 and v2 both serve
            fault.touch()
            faulted = time.monotonic()
            time.sleep(5.0 if quick else 8.0)
            stop.set()
            for thread in threads:
                thread.join(10)
        finally:
            server.terminate()
            server.wait(10)
            log.close()
            for key in client.scan_iter(match=f"{{{prefix}}}:*"):
                client.delete(key)
            client.close()
    after = [s for s in samples if s[0] >= faulted]
    bad = [s for s in after if not (s[1] == 200 and s[2] == "v1")]
    last_bad = max((s[0] for s in bad), default=faulted)
    workers = sorted({s[3] for s in after})
    per_worker = {
        w: round(max((s[0] for s in bad if s[3] == w), default=faulted) - faulted, 3)
        for w in workers
    }
    before = [s for s in samples if s[0] < faulted]
    return {
        "requests_before": len(before),
        "v2_share_before": round(sum(s[2] == "v2" for s in before) / max(1, len(before)), 3),
        "requests_after": len(after),
        "rate_per_s": round(len(after) / (after[-1][0] - faulted), 1) if after else 0.0,
        "failed_after_fault": sum(s[1] == 503 for s in after),
        "reaction_s": round(last_bad - faulted, 3),
        "reaction_per_worker_s": per_worker,
        "all_v1_at_end": all(s[2] == "v1" and s[1] == 200 for s in after if s[0] > last_bad),
    }


def bench_control(quick: bool) -> dict[str, Any]:
    """Both parts."""
    settings = Settings(repeats=15, target=0.02) if quick else Settings(repeats=101, target=0.02)
    result = bench_figures(settings)
    return {
        "figures": result["requests"].as_dict(),
        "pieces": result["pieces"].as_dict(),
        "_groups": result,
        "reaction": bench_reaction(quick),
    }


def print_control(result: dict[str, Any]) -> None:
    """The two groups, the ratio, and the reaction."""
    groups = result.get("_groups")
    if groups is not None:
        print_group(groups["requests"])
        print_group(groups["pieces"])
    on = next(c for c in result["figures"]["cases"] if c["name"] == WITH)
    print(f"  figures on / off: {on['ratios'][WITHOUT]:.3f} (median of same-round ratios)")
    reaction = result["reaction"]
    print(
        f"  guard reaction under HTTP load: {reaction['reaction_s']:.3f} s until every request"
        f" is on v1 ({reaction['failed_after_fault']} requests answered 503 meanwhile, "
        f"{reaction['rate_per_s']:.0f} req/s; per worker {reaction['reaction_per_worker_s']})"
    )


def run(quick: bool, out: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``control`` part of ``python -m benchmarks``."""
    result = bench_control(quick)
    print_control(result)
    result.pop("_groups")
    out |= result
    on = next(c for c in result["figures"]["cases"] if c["name"] == WITH)
    over = on["ratios"][WITHOUT] - 1
    return [
        {
            "goal": f"the figures cost a hit at most {FIGURES_GOAL:.0%} of a whole request",
            "measured": f"{over:+.1%}",
            "met": over <= FIGURES_GOAL,
        },
        {
            "goal": "the guard moves every worker to v1 within 5 s of v2 failing under load",
            "measured": f"{result['reaction']['reaction_s']:.2f} s",
            "met": result["reaction"]["reaction_s"] <= 5.0 and result["reaction"]["all_v1_at_end"],
        },
    ]


def main(argv: list[str] | None = None) -> int:
    def bench(quick: bool) -> dict[str, Any]:
        return bench_control(quick)

    def show(result: dict[str, Any]) -> None:
        print_control(result)
        result.pop("_groups", None)

    return standalone("python -m benchmarks.control", __doc__, "fewer rounds", bench, show, argv)


if __name__ == "__main__":
    raise SystemExit(main())
