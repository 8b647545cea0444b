"""Instructions per HTTP request under gunicorn: the ``http`` part's apps, under callgrind.

``python -m benchmarks.callgrind_http [--quick] [--json PATH]``, and part of ``callgrind`` in
the full run. Each app of :data:`~benchmarks.http_load.APPS` is served by one gunicorn sync worker
inside ``setarch -R valgrind --tool=callgrind --trace-children=yes`` (the worker is a fork of
the master, so it is counted in a file of its own, and it is instrumented only once it has
answered its first request), on the ``http`` part's SQLite file of 100 tenants. Once every
tenant has been asked for and the worker has warmed up, its counters are zeroed and it serves
two batches of requests (the tenants in turn, a connection each, every answer checked), dumped
after each with ``callgrind_control``: the difference of the two over the difference of their
request counts is the count per request, without the batches' constant costs. The count is the
worker's whole request (gunicorn reading and parsing it, Flask, the view, writing the answer),
so the machine's load does not move it, and the extension's part of a real request reads off it
as instructions, where the ``http`` part's CPU time per request also holds what the caches make
of them. Each app is counted in :data:`~benchmarks.callgrind.LAYOUTS` masters of different
memory layouts, as :func:`benchmarks.callgrind.count` does and for its reasons; the figures are
the medians, an app's count over bare taken within a layout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import _http_apps
from ._report import standalone
from .callgrind import _LAYOUT, LAYOUTS, child_env, dump_total, medians, valgrind
from .http_load import APPS, ROOT, TENANTS, Server, _free_port, _get

__all__ = ["bench_http_instructions", "print_http_instructions"]

#: Requests per measured batch: the first, then the second.
FIRST, SECOND = 100, 500
#: Requests served after each tenant's first, before counting.
WARMUP = 200
#: gunicorn's own entry point, after the layout's objects (see :func:`benchmarks.callgrind.count`).
_GUNICORN = (
    _LAYOUT
    + """
from gunicorn.app.wsgiapp import run
sys.argv = ["gunicorn", *sys.argv[2:]]
run()
"""
)
SERVER = "gunicorn, 1 sync worker"


def _request(port: int, slug: str) -> None:
    status, _, body = _get(port, "/", {"X-Tenant-ID": slug})
    if status != 200 or slug.encode() not in body:
        raise RuntimeError(f"{slug} answered {status} {body[:200]!r}")


def _worker(master: int, timeout: float = 30.0) -> int:
    """The pid of the gunicorn master's one worker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise RuntimeError("gunicorn started no worker")


def _control(worker: int, command: str) -> None:
    """Send ``command`` to the callgrind of ``worker`` (it answers once it has run it)."""
    subprocess.run(["callgrind_control", command, str(worker)], check=True, capture_output=True)


def _dump(worker: int, out: Path, dumps: int, timeout: float = 60.0) -> Path:
    """Dump (and zero) the worker's counters; the file written, once it is whole."""
    _control(worker, "--dump")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(out.glob(f"callgrind.out.{worker}.*"), key=lambda p: int(p.suffix[1:]))
        if len(found) > dumps and "totals:" in found[-1].read_text():
            return found[-1]
        time.sleep(0.1)
    raise RuntimeError(f"callgrind did not dump worker {worker}")


def _count(factory: str, layout: int, database: str, slugs: list[str]) -> int:
    """Ir per request of ``factory`` (a callable of :mod:`benchmarks._http_apps`), its master
    started in memory layout ``layout`` (its worker, a fork, inherits it)."""
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-http-") as tmp:
        out = Path(tmp)
        port = _free_port()
        cmd = [
            # Not instrumented until the worker is told to: start-up runs at a fraction of the
            # cost, and the master's own work is never counted.
            *valgrind("--instr-atstart=no", "--trace-children=yes"),
            f"--callgrind-out-file={out}/callgrind.out.%p",
            *(sys.executable, "-c", _GUNICORN, str(layout)),
            *("--worker-class", "sync", "--workers", "1"),
            *("--bind", f"127.0.0.1:{port}", "--log-level", "warning", "--timeout", "300"),
            f"benchmarks._http_apps:{factory}",
        ]
        env = child_env(**{_http_apps.DATABASE_ENV: database})
        log = out / "gunicorn.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=sink, stderr=sink, start_new_session=True
            )
        server = Server(factory, None, port, process, log, token="")
        try:
            server.wait_ready(timeout=300)  # valgrind starts Python slowly
            worker = _worker(process.pid)
            _control(worker, "--instr=on")
            for i in range(len(slugs) + WARMUP):
                _request(port, slugs[i % len(slugs)])
            _control(worker, "--zero")
            totals = []
            for dumps, batch in enumerate((FIRST, SECOND)):
                for i in range(batch):
                    _request(port, slugs[i % len(slugs)])
                totals.append(dump_total(_dump(worker, out, dumps)))
        finally:
            server.stop()
    return round((totals[1] - totals[0]) / (SECOND - FIRST))


def bench_http_instructions(quick: bool) -> dict[str, Any]:
    """Ir per HTTP request of each app of :data:`~benchmarks.http_load.APPS`, and over bare:
    medians over :data:`~benchmarks.callgrind.LAYOUTS` layouts, an app's count over bare taken
    within a layout. ``quick`` changes nothing."""
    started = time.perf_counter()
    names = [name for name, _, _ in APPS]
    jobs = [(factory, layout) for layout in range(LAYOUTS) for _, factory, _ in APPS]
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-http-") as tmp:
        database = str(Path(tmp) / "tenants.sqlite3")
        slugs = _http_apps.seed(database, TENANTS)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            counts = list(pool.map(lambda job: _count(job[0], job[1], database, slugs), jobs))
    layouts = [counts[i : i + len(APPS)] for i in range(0, len(counts), len(APPS))]
    ir, over = medians(layouts)
    return {
        "server": SERVER,
        "requests": {"first": FIRST, "second": SECOND, "warmup": TENANTS + WARMUP},
        "layouts": [dict(zip(names, each, strict=True)) for each in layouts],
        "ir_per_request": dict(zip(names, ir, strict=True)),
        "over_bare": dict(zip(names, over, strict=True)),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def print_http_instructions(result: dict[str, Any]) -> None:
    print(
        f"\nInstructions per HTTP request ({result['server']}; callgrind Ir, medians over layouts)"
    )
    bare = result["ir_per_request"]["bare"]
    for name, ir in result["ir_per_request"].items():
        over = result["over_bare"][name]
        print(f"  {name:<6} {ir:>11,}  {over:>+9,} over bare  x{1 + over / bare:.3f}")


def main(argv: list[str] | None = None) -> int:
    return standalone(
        "python -m benchmarks.callgrind_http",
        __doc__,
        "no effect: instruction counts take as long either way",
        bench_http_instructions,
        print_http_instructions,
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
