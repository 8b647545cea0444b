"""A soak under faults: worker processes serving while Redis is killed and restarted.

Run with ``python -m benchmarks.soak [--quick] [--json PATH]``. ``WORKERS`` processes (each
an app with its own Redis connection and subscriber, as gunicorn workers are) serve requests
by tenant id from reader threads, while a writer process renames tenants in the shared
SQLite database and calls ``invalidate()`` after each rename. Meanwhile a redis-server of the
run's own is killed with SIGKILL and restarted ``RESTARTS`` times, alternately from its AOF
(``appendfsync always``) and empty (no persistence).

A read is *stale* when it serves a tenant's slug older than the last rename whose
``invalidate()`` had returned before the read began; stale reads while Redis is down are
counted apart (nothing can reach the other processes then). A stale read is *late* when it
began more than ``GRACE`` seconds (the pub/sub delay) after both that ``invalidate()``
returned and Redis was last back. The goal: no failed request and no late stale read.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.helpers.redis_server import PrivateRedis

from ._cluster_app import create_app, seed
from ._report import standalone

__all__ = ["SoakConfig", "run_soak"]

TENANTS = 20
GRACE = 1.0


@dataclass(frozen=True)
class SoakConfig:
    """How long, how many workers, and how many kills of Redis."""

    seconds: float = 30.0
    workers: int = 8
    restarts: int = 3
    readers: int = 2
    outage: float = 1.5


def _ids() -> list[str]:
    return [str(uuid.UUID(int=0xC0FFEE_0000_4000_8000_000000000000 + i)) for i in range(TENANTS)]


class Server(PrivateRedis):
    """A redis-server of the run's own, killed and restarted with or without its AOF."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server") or "redis-server"
        super().__init__(binary, "--appendonly", "yes", "--appendfsync", "always")

    def restart(self, *, persistent: bool) -> None:
        if not persistent:  # nothing survives: the data, the epoch and the sequence are gone
            shutil.rmtree(self.dir, ignore_errors=True)
            os.makedirs(self.dir)
        self.start()


class Shared:
    """What the writer made true and when Redis was up, shared by every process."""

    def __init__(self, context: Any) -> None:
        self.lock = context.Lock()
        #: Per tenant: the version of its last rename whose invalidate() returned, and when.
        self.version = context.Array("i", TENANTS, lock=False)
        self.returned = context.Array("d", TENANTS, lock=False)
        #: When Redis last answered again after a kill (0: never killed); whether it is down.
        self.back_at = context.Value("d", 0.0, lock=False)
        self.down = context.Value("b", 0, lock=False)
        self.stop = context.Event()

    def snapshot(self, index: int) -> tuple[int, float, float, bool]:
        with self.lock:
            return (
                self.version[index],
                self.returned[index],
                self.back_at.value,
                bool(self.down.value),
            )


def _worker(db_path: str, config: dict[str, str], shared: Shared, readers: int, out: Any) -> None:
    app = create_app(db_path, **config)
    ids = _ids()
    counts = {"requests": 0, "failed": 0, "stale": 0, "stale_while_down": 0, "late_stale": 0}
    worst = [0.0]
    failures: list[str] = []
    lock = threading.Lock()

    def read(seed_: int) -> None:
        rnd = random.Random(seed_)
        client = app.test_client()
        while not shared.stop.is_set():
            index = rnd.randrange(TENANTS)
            version, returned, back_at, down = shared.snapshot(index)
            began = time.time()
            try:
                response = client.get("/whoami", headers={"X-Tenant-ID": ids[index]})
                status = response.status_code
                body: Any = response.json
                served = int(body["slug"].rsplit("-v", 1)[1]) if status == 200 else -1
            except Exception as exc:
                status, served = 599, -1
                with lock:
                    failures.append(repr(exc))
            with lock:
                counts["requests"] += 1
                if status != 200:
                    counts["failed"] += 1
                    if len(failures) < 10:
                        failures.append(f"{ids[index]}: {status}")
                elif served < version and down:
                    counts["stale_while_down"] += 1
                elif served < version:
                    counts["stale"] += 1
                    lag = began - max(returned, back_at)
                    worst[0] = max(worst[0], lag)
                    if lag > GRACE:
                        counts["late_stale"] += 1
                        if len(failures) < 10:
                            failures.append(
                                f"late stale: tenant {index} v{served} < v{version}, "
                                f"{began - returned:.2f} s after invalidate(), "
                                f"{began - back_at:.2f} s after Redis was back"
                            )

    threads = [threading.Thread(target=read, args=(os.getpid() * 10 + i,)) for i in range(readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with app.app_context():
        redis_stats = app.extensions["bench"]["ext"].stats().get("redis", {})
        app.extensions["bench"]["ext"].close()
    out.put({**counts, "worst_lag_s": worst[0], "failures": failures, "redis": redis_stats})


def _writer(db_path: str, config: dict[str, str], shared: Shared, out: Any) -> None:
    app = create_app(db_path, **config)
    ext = app.extensions["bench"]["ext"]
    engine = sa.create_engine(f"sqlite:///{db_path}")
    ids, versions = _ids(), [0] * TENANTS
    rnd = random.Random(7)
    renames = 0
    while not shared.stop.is_set():
        index = rnd.randrange(TENANTS)
        versions[index] += 1
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE tenants SET slug = :slug WHERE id = :id"),
                {"slug": f"t{index}-v{versions[index]}", "id": uuid.UUID(ids[index]).hex},
            )
        with app.app_context():
            ext.invalidate(ids[index])
        with shared.lock:
            shared.version[index] = versions[index]
            shared.returned[index] = time.time()
        renames += 1
        time.sleep(rnd.uniform(0.005, 0.02))
    with app.app_context():
        redis_stats = ext.stats().get("redis", {})
        ext.close()
    engine.dispose()
    out.put({"renames": renames, "redis": redis_stats})


@contextlib.contextmanager
def _database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="tc-soak-") as tmp:
        path = str(Path(tmp) / "tenants.db")
        rows = tuple(
            (i, f"t{n}-v0", f"t{n}.soak.test", f"Tenant {n}") for n, i in enumerate(_ids())
        )
        seed(path, rows)
        engine = sa.create_engine(f"sqlite:///{path}")
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        engine.dispose()
        yield path


def run_soak(settings: SoakConfig) -> dict[str, Any]:
    """Run the soak; the figures, per worker summed, with what each restart was."""
    context = multiprocessing.get_context("fork")
    server = Server()
    server.start()
    config = {"TENANT_CACHE_REDIS_URL": server.url, "TENANT_CACHE_REDIS_PREFIX": "soak"}
    shared = Shared(context)
    out = context.Queue()
    restarts: list[dict[str, Any]] = []
    with _database() as db_path:
        procs = [
            context.Process(target=_worker, args=(db_path, config, shared, settings.readers, out))
            for _ in range(settings.workers)
        ]
        procs.append(context.Process(target=_writer, args=(db_path, config, shared, out)))
        try:
            for proc in procs:
                proc.start()
            started = time.monotonic()
            step = settings.seconds / (settings.restarts + 1)
            for n in range(settings.restarts):
                time.sleep(max(0.0, started + step * (n + 1) - settings.outage - time.monotonic()))
                persistent = n % 2 == 0
                with shared.lock:
                    shared.down.value = 1
                server.kill()
                time.sleep(settings.outage)
                server.restart(persistent=persistent)
                with shared.lock:
                    shared.back_at.value = time.time()
                    shared.down.value = 0
                restarts.append({"at_s": round(time.monotonic() - started, 1), "aof": persistent})
            time.sleep(max(0.0, started + settings.seconds - time.monotonic()))
            shared.stop.set()
            results = [out.get(timeout=60) for _ in procs]
        finally:
            shared.stop.set()
            for proc in procs:
                proc.join(30)
                if proc.is_alive():
                    proc.kill()
            server.close()
    workers = [r for r in results if "requests" in r]
    writer = next(r for r in results if "renames" in r)
    kinds = ("requests", "failed", "stale", "stale_while_down", "late_stale")
    total = {k: sum(w[k] for w in workers) for k in kinds}
    return {
        "settings": settings.__dict__,
        "restarts": restarts,
        **total,
        "renames": writer["renames"],
        "worst_stale_lag_s": round(max(w["worst_lag_s"] for w in workers), 3),
        "lost_writes_noticed": sum(w["redis"].get("lost_writes", 0) for w in workers),
        "gaps": sum(w["redis"].get("gaps", 0) for w in workers),
        "writer_pending_at_end": writer["redis"].get("pending", 0),
        "writer_bus": writer["redis"],
        "failures": [f for w in workers for f in w["failures"]][:10],
    }


def _bench(quick: bool) -> dict[str, Any]:
    return run_soak(SoakConfig(seconds=10, workers=4, restarts=2) if quick else SoakConfig())


def _show(result: dict[str, Any]) -> None:
    print(json.dumps({k: v for k, v in result.items() if k != "failures"}, indent=2))
    for failure in result["failures"]:
        print("  failure:", failure)


def main(argv: list[str] | None = None) -> int:
    return standalone(
        "python -m benchmarks.soak", __doc__, "10 s, 4 workers, 2 restarts", _bench, _show, argv
    )


if __name__ == "__main__":
    raise SystemExit(main())
