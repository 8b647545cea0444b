"""What the cluster benchmarks run: the app, the invalidation processes, a burst HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa
from flask import Flask, jsonify

from example_app.models import Base, db
from example_app.models import Tenant as TenantRow
from flask_tenant_cache import SQLAlchemyTenantLoader, TenantCache, require_tenant
from flask_tenant_cache.state import AppState

__all__ = [
    "COLD",
    "WARM",
    "burst",
    "create_app",
    "database",
    "invalidation_receiver",
    "invalidation_sender",
    "on_queries",
    "queries_key",
    "redis_prefix",
    "seed",
    "serve",
]

Row = tuple[str, str, str, str]

ROOT = Path(__file__).resolve().parent.parent

#: Tenants each asked for once, cold, by a stampede; and the one that warms the workers up.
COLD: tuple[Row, ...] = tuple(
    (
        str(uuid.UUID(int=0x5F0C4F2A_1B2C_4D3E_8F9A_0B1C2D3E4F00 + i)),
        f"cold-{i}",
        f"cold-{i}.test",
        f"Cold Tenant {i}",
    )
    for i in range(16)
)
WARM: Row = ("7d9e2b1c-3a4f-4b6d-9e8f-1a2b3c4d5e6f", "globex", "globex.test", "Globex")

#: Environment variables read by :func:`create_app` (gunicorn passes no arguments).
CONFIG_ENV = (
    "TENANT_CACHE_REDIS_URL",
    "TENANT_CACHE_REDIS_PREFIX",
    "TENANT_CACHE_INVALIDATION_CHANNEL",
)


def queries_key(prefix: str) -> str:
    """The Redis hash where gunicorn workers count their queries, one field per pid."""
    return f"{{{prefix}}}:bench:queries"


def create_app(db_path: str | None = None, **config: Any) -> Flask:
    """An app on the SQLite file ``db_path`` (default: ``$BENCH_DB_PATH``).

    Under gunicorn it is configured from the environment: the ``TENANT_CACHE_*`` variables in
    :data:`CONFIG_ENV`, ``BENCH_USE_V2`` (``0`` serves v1), and ``BENCH_COUNT_QUERIES=1``, which
    counts every statement in the Redis hash :func:`queries_key`, by pid.
    """
    path = db_path or os.environ["BENCH_DB_PATH"]
    env: dict[str, Any] = {k: os.environ[k] for k in CONFIG_ENV if k in os.environ}
    if "BENCH_USE_V2" in os.environ:
        env["TENANT_CACHE_USE_V2"] = os.environ["BENCH_USE_V2"] != "0"
    app = Flask("bench_cluster")
    app.config.update({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}", **env, **config})
    db.init_app(app)  # the example app's table: one tenant model in the project
    ext = TenantCache(app, loader=SQLAlchemyTenantLoader(db, TenantRow, active_column="active"))
    app.extensions["bench"] = {"db": db, "ext": ext}

    @app.get("/whoami")
    def whoami() -> Any:
        return jsonify(pid=os.getpid(), slug=require_tenant().slug)

    @app.get("/_bench/ready")
    @ext.exempt
    def ready() -> Any:
        return jsonify(pid=os.getpid())

    @app.get("/_bench/stats")
    @ext.exempt
    def stats() -> Any:
        state: AppState = app.extensions["tenant_cache"]
        data = state.stats()
        return jsonify(pid=os.getpid(), v1=data["v1"], v2=data["v2"], redis=data.get("redis"))

    if os.environ.get("BENCH_COUNT_QUERIES") == "1":
        client = redis.Redis.from_url(env["TENANT_CACHE_REDIS_URL"])
        key, field = queries_key(env["TENANT_CACHE_REDIS_PREFIX"]), str(os.getpid())
        on_queries(app, lambda: client.hincrby(key, field, 1))
    return app


def on_queries(app: Flask, callback: Callable[[], object]) -> None:
    """Call ``callback`` before every statement the app's engine sends to the database."""

    def before_cursor_execute(*_args: Any) -> None:
        callback()

    with app.app_context():
        engine = app.extensions["bench"]["db"].engine
        sa.event.listen(engine, "before_cursor_execute", before_cursor_execute)


def seed(db_path: str, rows: tuple[Row, ...] = (*COLD, WARM)) -> None:
    """Create the tenant table in the SQLite file ``db_path`` with ``rows``."""
    engine = sa.create_engine(f"sqlite:///{db_path}")
    try:
        Base.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                sa.insert(TenantRow),
                [
                    {"id": uuid.UUID(i), "slug": s, "domain": d, "name": n, "active": True}
                    for i, s, d, n in rows
                ],
            )
    finally:
        engine.dispose()


@contextlib.contextmanager
def redis_prefix(url: str) -> Iterator[dict[str, str]]:
    """A prefix and channel of this run's own on the shared Redis; their keys deleted after."""
    client = redis.Redis.from_url(url, socket_timeout=2)
    client.ping()
    prefix = f"tc-bench-{uuid.uuid4().hex[:12]}"
    try:
        yield {
            "TENANT_CACHE_REDIS_URL": url,
            "TENANT_CACHE_REDIS_PREFIX": prefix,
            "TENANT_CACHE_INVALIDATION_CHANNEL": prefix + ":bus",
        }
    finally:
        for key in client.scan_iter(match="{" + prefix + "}:*", count=500):
            client.delete(key)
        client.close()


@contextlib.contextmanager
def database() -> Iterator[str]:
    """A temporary SQLite file seeded with the cold tenants and the warm-up one."""
    with tempfile.TemporaryDirectory(prefix="tc-bench-") as tmp:
        path = str(Path(tmp) / "tenants.db")
        seed(path)
        yield path


# -- gunicorn ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            conn.request("GET", "/_bench/ready")
            if conn.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(0.05)
    raise RuntimeError("gunicorn did not answer in time")


@contextlib.contextmanager
def serve(
    db_path: str, config: dict[str, str], version: str, workers: int, threads: int
) -> Iterator[tuple[int, list[str]]]:
    """gunicorn serving :func:`create_app` on a free loopback port, stopped on exit.

    Yields the port and a list that receives gunicorn's stderr when it has stopped.
    """
    port = _free_port()
    env = {
        **os.environ,
        **config,
        "BENCH_DB_PATH": db_path,
        "BENCH_USE_V2": "1" if version == "v2" else "0",
        "BENCH_COUNT_QUERIES": "1",
        "PYTHONPATH": str(ROOT),
    }
    cmd = [
        *(sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}"),
        *("--workers", str(workers), "--worker-class", "gthread", "--threads", str(threads)),
        *("--backlog", "2048", "--timeout", "60", "--log-level", "warning"),
        "benchmarks._cluster_app:create_app()",
    ]
    stderr: list[str] = []
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            _wait_ready(port, proc)
            yield port, stderr
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.seek(0)
            stderr.append(log.read().decode(errors="replace").strip()[-2000:])


# -- the two processes of the invalidation-delay benchmark ----------------------------------------


def invalidation_receiver(conn: Connection, db_path: str, config: dict[str, Any]) -> None:
    """Process B: cache the cold tenant in both resolvers, then time each remote drop of it.

    On each ``"go"`` it caches the tenant and answers ``("ready", entries)``; when a message of
    the bus has dropped it (the bus handler has returned), it answers ``("ack", ns, dropped)``,
    ``ns`` being ``time.time_ns()`` right after the handler.
    """
    app = create_app(db_path, **config)
    state: AppState = app.extensions["tenant_cache"]
    layer = state.redis
    if layer is None:
        raise RuntimeError("the receiver needs TENANT_CACHE_REDIS_URL")
    handled = threading.Event()
    box: list[tuple[int, int]] = []
    original = layer.bus._on_invalidate

    def timed(key: str | None, ids: list[str]) -> object:
        result = original(key, ids)
        box.append((time.time_ns(), int(result) if isinstance(result, int) else -1))
        handled.set()
        return result

    layer.bus._on_invalidate = timed
    layer.start()
    deadline = time.monotonic() + 10
    while layer.stats()["subscribes"] < 1:
        if time.monotonic() > deadline:
            raise RuntimeError("the receiver never subscribed")
        time.sleep(0.005)
    time.sleep(0.1)  # the subscribe flush runs after the counter moves
    ident = state.validator.parse(COLD[0][1])
    with app.app_context():
        while conn.recv() == "go":
            handled.clear()
            box.clear()
            for resolver in state.resolvers.values():
                resolver.resolve(ident)
            conn.send(("ready", None))
            if handled.wait(2.0):
                conn.send(("ack", *box[0]))
            else:
                conn.send(("lost", None))
    layer.stop()


def invalidation_sender(
    conn: Connection, out: Connection, db_path: str, config: dict[str, Any], rounds: int
) -> None:
    """Process A: ``rounds`` times, wait until B has cached the tenant, then invalidate it.

    Sends ``out`` a JSON list of ``[delay_ns, invalidate_call_ns, dropped]`` (None for a lost
    message).
    """
    app = create_app(db_path, **config)
    ext: TenantCache = app.extensions["bench"]["ext"]
    results: list[list[int | None]] = []
    with app.app_context():
        for _ in range(rounds):
            conn.send("go")
            kind, _ = conn.recv()
            if kind != "ready":
                raise RuntimeError(f"the receiver answered {kind!r}")
            started = time.time_ns()
            ext.invalidate(COLD[0][1])
            returned = time.time_ns()
            reply = conn.recv()
            if reply[0] == "ack":
                results.append([reply[1] - started, returned - started, reply[2]])
            else:
                results.append([None, returned - started, None])
        conn.send("stop")
        ext.close()
    out.send(json.dumps(results))


# -- a burst of simultaneous requests -------------------------------------------------------------


@dataclass
class _Gate:
    """Holds every request until all ``total`` connections are open (accepted, with gthread)."""

    total: int
    opened: int = 0
    all_open: asyncio.Event = field(default_factory=asyncio.Event)
    start: asyncio.Event = field(default_factory=asyncio.Event)


Response = tuple[int, dict[str, Any]]


async def _one(port: int, request: bytes, gate: _Gate) -> Response:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    finally:
        gate.opened += 1
        if gate.opened == gate.total:
            gate.all_open.set()
    try:
        await gate.start.wait()
        writer.write(request)
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    try:
        data: dict[str, Any] = json.loads(body) if status == 200 else {}
    except ValueError:
        data = {}
    return status, data


async def _burst(port: int, count: int, request: bytes) -> tuple[list[Response], float]:
    gate = _Gate(count)
    tasks = [asyncio.create_task(_one(port, request, gate)) for _ in range(count)]
    await asyncio.wait_for(gate.all_open.wait(), 30)
    began = time.perf_counter()
    gate.start.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    return list(results), time.perf_counter() - began


def burst(
    port: int, count: int, path: str, tenant: str | None = None
) -> tuple[list[Response], float]:
    """``count`` GETs of ``path`` on 127.0.0.1:``port``, each on its own connection, all
    connections opened first and the requests then written at once.

    :returns: ``(status, JSON body)`` per request, and seconds from the first write to the
        last response.
    """
    header = f"X-Tenant-ID: {tenant}\r\n" if tenant else ""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}Connection: close\r\n\r\n"
    return asyncio.run(_burst(port, count, request.encode()))
