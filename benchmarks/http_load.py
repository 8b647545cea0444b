"""Over HTTP: the apps under gunicorn, loaded at a fixed rate and flat out, against a bare app."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _http_apps
from ._loadgen import FixedRateResult, SaturationResult, Target, percentiles
from ._loadgen import run_fixed_rate as _run_fixed_rate
from ._loadgen import run_saturation as _run_saturation

__all__ = ["bench_http"]

ROOT = Path(__file__).resolve().parent.parent
TENANTS = 100
RATE = 1000.0
#: Goals from the issue, checked against the v2 app (the default) in every server config.
P95_GOAL_MS = 5.0
HIT_RATE_GOAL = 0.999
SATURATION_GOAL = 0.95


@dataclass(frozen=True)
class ServerConfig:
    """A gunicorn set-up: its command-line options and how many worker processes it runs."""

    name: str
    description: str
    args: tuple[str, ...]
    workers: int
    saturation_connections: int


CONFIGS = (
    ServerConfig(
        "gthread",
        "1 process, 8 threads (gthread)",
        ("--worker-class", "gthread", "--threads", "8", "--workers", "1"),
        1,
        16,
    ),
    ServerConfig("sync", "2 processes (sync)", ("--worker-class", "sync", "--workers", "2"), 2, 16),
)

#: (name, factory in _http_apps, resolver serving the requests or None); "bare" is the baseline.
APPS = (
    ("bare", "bare()", None),
    ("v2", "with_extension()", "v2"),
    ("v1", "with_extension(use_v2=False)", "v1"),
)


@dataclass(frozen=True)
class Plan:
    """Rounds and durations: each app is loaded once per round, in an order that rotates."""

    fixed_rounds: int
    fixed_s: float
    saturation_rounds: int
    saturation_s: float


FULL = Plan(fixed_rounds=2, fixed_s=5.0, saturation_rounds=4, saturation_s=2.0)
QUICK = Plan(fixed_rounds=1, fixed_s=3.0, saturation_rounds=2, saturation_s=1.0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _gunicorn() -> str:
    for candidate in (
        Path(sys.executable).parent / "gunicorn",
        ROOT / ".venv" / "bin" / "gunicorn",
    ):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("gunicorn")
    if found is None:
        raise RuntimeError("gunicorn not found: pip install gunicorn")
    return found


def _get(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """One request on a connection of its own (so that sync workers take turns)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its live children (Linux /proc; 0.0 elsewhere)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        total = 0.0
        for p in [pid, *map(int, children)]:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total
    except (OSError, ValueError, IndexError):
        return 0.0


@dataclass
class Server:
    """One gunicorn master serving one app on 127.0.0.1; stopped by :meth:`stop`."""

    app: str
    resolver: str | None
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    token: str
    fixed: list[FixedRateResult] = field(default_factory=list)
    saturation: list[SaturationResult] = field(default_factory=list)
    #: CPU seconds spent during each phase ("fixed", "saturation") by the server's processes
    #: and by this process (the load generator).
    server_cpu_s: dict[str, float] = field(default_factory=dict)
    loadgen_cpu_s: dict[str, float] = field(default_factory=dict)
    stats_before: dict[int, dict[str, Any]] = field(default_factory=dict)
    stats_after: dict[int, dict[str, Any]] = field(default_factory=dict)
    warm_passes: int = 0

    @property
    def target(self) -> Target:
        return Target("127.0.0.1", self.port)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                status, _, _ = _get(self.port, "/", {"X-Tenant-ID": "acme"})
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        tail = self.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"gunicorn ({self.app}) did not answer on port {self.port}:\n{tail}")

    def worker_stats(self, workers: int, tries: int = 20) -> dict[int, dict[str, Any]]:
        """``stats()`` of each worker process, by pid; each GET reaches one worker.

        The GETs go out several at a time: sent one by one, they may all reach the same
        sync worker.
        """
        found: dict[int, dict[str, Any]] = {}
        if self.resolver is None:
            return found
        headers = {"Authorization": f"Bearer {self.token}"}
        path = "/_tenant-cache/stats"
        with ThreadPoolExecutor(max_workers=4 * workers) as pool:
            for _ in range(tries):
                gets = [pool.submit(_get, self.port, path, headers) for _ in range(4 * workers)]
                for get in gets:
                    status, got, body = get.result()
                    if status != 200:
                        raise RuntimeError(f"stats: HTTP {status} {body[:200]!r}")
                    found[int(got[_http_apps.PID_HEADER])] = json.loads(body)[self.resolver]
                if len(found) >= workers:
                    break
        return found

    def warm(self, slugs: Sequence[str], workers: int, max_passes: int = 10) -> None:
        """One request per tenant, checked; then flat-out passes until every worker has cached
        every tenant (requests in flight together spread over the workers)."""
        for slug in slugs:
            status, _, body = _get(self.port, "/", {"X-Tenant-ID": slug})
            if status != 200 or slug.encode() not in body:
                raise RuntimeError(f"{self.app}: {slug} answered {status} {body[:200]!r}")
        self.warm_passes = 1
        while self.resolver is not None and self.warm_passes < max_passes:
            stats = self.worker_stats(workers)
            if len(stats) == workers and all(_entries(s) >= len(slugs) for s in stats.values()):
                return
            _run_saturation(
                self.target, slugs, connections=8, duration=2.0, max_requests=3 * len(slugs)
            )
            self.warm_passes += 1

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                # The master started its own session: its group is it and its workers.
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _entries(stats: dict[str, Any]) -> int:
    return int(stats.get("entry_count", stats.get("positive_entries", 0)))


def _lookups(stats: dict[str, Any]) -> tuple[int, int]:
    """(hits, lookups): v1 counts not-found hits apart."""
    hits = int(stats["hits"]) + int(stats.get("negative_hits", 0))
    return hits, hits + int(stats["misses"])


@contextmanager
def _servers(config: ServerConfig, workdir: Path, token: str) -> Iterator[list[Server]]:
    """Every app of :data:`APPS` under ``config``, started together and stopped on exit."""
    env = {**os.environ, _http_apps.DATABASE_ENV: str(workdir / "tenants.sqlite3")}
    env[_http_apps.ADMIN_TOKEN_ENV] = token
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with ExitStack() as stack:
        servers: list[Server] = []
        for name, factory, resolver in APPS:
            port = _free_port()
            log = workdir / f"gunicorn-{config.name}-{name}.log"
            out = stack.enter_context(log.open("wb"))
            cmd = [_gunicorn(), "--bind", f"127.0.0.1:{port}", *config.args]
            cmd += ["--log-level", "warning", "--graceful-timeout", "5"]
            cmd.append(f"benchmarks._http_apps:{factory}")
            process = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True
            )
            server = Server(name, resolver, port, process, log, token)
            stack.callback(server.stop)
            servers.append(server)
        for server in servers:
            server.wait_ready()
        yield servers


def _rotation(items: Sequence[Server], round_: int) -> list[Server]:
    k = round_ % len(items)
    return [*items[k:], *items[:k]]


@contextmanager
def _cpu(server: Server, phase: str) -> Iterator[None]:
    """Add the CPU time of the server and of the load generator to ``phase``'s totals."""
    server_cpu, own_cpu = _cpu_seconds(server.process.pid), time.process_time()
    yield
    server.server_cpu_s[phase] = (
        server.server_cpu_s.get(phase, 0.0) + _cpu_seconds(server.process.pid) - server_cpu
    )
    server.loadgen_cpu_s[phase] = (
        server.loadgen_cpu_s.get(phase, 0.0) + time.process_time() - own_cpu
    )


def _run_config(
    config: ServerConfig, plan: Plan, workdir: Path, slugs: list[str], offset: int
) -> dict[str, Any]:
    token = secrets.token_urlsafe(16)
    with _servers(config, workdir, token) as servers:
        for server in servers:
            server.warm(slugs, config.workers)
            server.stats_before = server.worker_stats(config.workers)
        for round_ in range(plan.fixed_rounds):
            for server in _rotation(servers, offset + round_):
                with _cpu(server, "fixed"):
                    server.fixed.append(
                        _run_fixed_rate(server.target, slugs, rate=RATE, duration=plan.fixed_s)
                    )
        for server in servers:
            server.stats_after = server.worker_stats(config.workers)
        for round_ in range(plan.saturation_rounds):
            for server in _rotation(servers, offset + round_):
                with _cpu(server, "saturation"):
                    server.saturation.append(
                        _run_saturation(
                            server.target,
                            slugs,
                            connections=config.saturation_connections,
                            duration=plan.saturation_s,
                        )
                    )
    bare = servers[0]
    apps = {s.app: _summary(s, bare) for s in servers}
    return {"description": config.description, "args": list(config.args), "apps": apps}


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


def _summary(server: Server, bare: Server) -> dict[str, Any]:
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


def _goals(configs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    goals = []
    for name, config in configs.items():
        v2 = config["apps"]["v2"]
        p95 = v2["fixed_rate"]["latency_ms"]["p95"]
        rate = v2["hit_rate"]["hit_rate"]
        ratio = v2["saturation"]["ratio_to_bare"]
        goals += [
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
    return goals


def bench_http(quick: bool) -> dict[str, Any]:
    """Run every server config of :data:`CONFIGS`; return a JSON-able dict of the figures."""
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    load_before = os.getloadavg()
    configs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        slugs = _http_apps.seed(str(Path(tmp) / "tenants.sqlite3"), TENANTS)
        for n, config in enumerate(CONFIGS):
            configs[config.name] = _run_config(config, plan, Path(tmp), slugs, offset=n)
    return {
        "settings": {
            "rate": RATE,
            "tenants": TENANTS,
            "order": "round-robin",
            "fixed_rate": {"rounds": plan.fixed_rounds, "seconds": plan.fixed_s},
            "saturation": {"rounds": plan.saturation_rounds, "seconds": plan.saturation_s},
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "configs": configs,
        "goals": _goals(configs),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http_load", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs (under a minute)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    results = bench_http(args.quick)
    print_results(results)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
