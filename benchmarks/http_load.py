"""Over HTTP: the apps under gunicorn, loaded at a fixed rate and flat out, against a bare app."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import socket
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
from ._http_report import RATE, goals, print_results, summary
from ._loadgen import FixedRateResult, SaturationResult, Target
from ._loadgen import run_fixed_rate as _run_fixed_rate
from ._loadgen import run_saturation as _run_saturation
from ._report import standalone
from ._wrk import ensure_wrk, run_wrk

__all__ = ["bench_http", "print_results"]

ROOT = Path(__file__).resolve().parent.parent
TENANTS = 100


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
        64,
    ),
    ServerConfig("sync", "2 processes (sync)", ("--worker-class", "sync", "--workers", "2"), 2, 64),
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


FULL = Plan(fixed_rounds=2, fixed_s=5.0, saturation_rounds=6, saturation_s=2.0)
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


def _generator_cpu() -> float:
    """CPU seconds of this process and of its finished children (wrk runs as one)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@contextmanager
def _cpu(server: Server, phase: str) -> Iterator[None]:
    """Add the CPU time of the server and of the load generator to ``phase``'s totals."""
    server_cpu, own_cpu = _cpu_seconds(server.process.pid), _generator_cpu()
    yield
    server.server_cpu_s[phase] = (
        server.server_cpu_s.get(phase, 0.0) + _cpu_seconds(server.process.pid) - server_cpu
    )
    server.loadgen_cpu_s[phase] = server.loadgen_cpu_s.get(phase, 0.0) + _generator_cpu() - own_cpu


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
                        run_wrk(
                            server.target,
                            slugs,
                            connections=config.saturation_connections,
                            duration=plan.saturation_s,
                        )
                    )
    bare = servers[0]
    apps = {s.app: summary(s, bare) for s in servers}
    return {"description": config.description, "args": list(config.args), "apps": apps}


def bench_http(quick: bool) -> dict[str, Any]:
    """Run every server config of :data:`CONFIGS`; return a JSON-able dict of the figures."""
    plan = QUICK if quick else FULL
    ensure_wrk()  # before any server starts: a missing generator fails the part at once
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
            "saturation": {
                "rounds": plan.saturation_rounds,
                "seconds": plan.saturation_s,
                "generator": "wrk, 1 thread, keep-alive",
            },
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "configs": configs,
        "goals": goals(configs),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    return standalone(
        "python -m benchmarks.http_load",
        __doc__,
        "shorter runs (under a minute)",
        bench_http,
        print_results,
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
