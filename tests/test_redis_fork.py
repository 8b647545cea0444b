"""Forked workers: nothing per-process shared with the parent, nothing missed served from L1."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from benchmarks._cluster_app import WARM, create_app, seed
from tests.helpers import forks_with_threads
from tests.helpers.redis_server import PrivateRedis, free_port, stats, wait_for

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parent.parent


def _child(app: Flask, conn: Any) -> None:
    """In the forked child: use every lock the parent's thread holds, then report."""
    try:
        ext = app.extensions["test"]["ext"]
        client = app.test_client()
        assert client.get("/whoami", headers={"X-Tenant-ID": "globex"}).status_code == 200
        with app.app_context():
            ext.invalidate("globex")
            assert ext.set_rollout("v1")["scope"] == "cluster"
        conn.send(("done", stats(app)["redis"]["subscribes"]))
    except BaseException as exc:  # report, never hang the parent
        conn.send(("error", repr(exc)))


@forks_with_threads
def test_a_child_forked_while_redis_locks_are_held_shares_none_of_them(
    redis_apps: Callable[..., Flask], private_redis: PrivateRedis
) -> None:
    app = redis_apps(private_redis.config)
    assert app.test_client().get("/whoami", headers={"X-Tenant-ID": "acme"}).status_code == 200
    layer = app.extensions["tenant_cache"].redis
    subscribes = stats(app)["redis"]["subscribes"]
    locks = [layer.conn._lock, layer.l2._lock, layer.bus._lock, layer.rollout._lock]
    held, release = threading.Barrier(2), threading.Event()

    def hold() -> None:  # a thread in the middle of Redis work when the fork happens
        for lock in locks:
            lock.acquire()
        held.wait()
        release.wait()
        for lock in locks:
            lock.release()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    context = multiprocessing.get_context("fork")
    parent_conn, child_conn = context.Pipe()
    child = context.Process(target=_child, args=(app, child_conn))
    try:
        child.start()
        assert parent_conn.poll(20), "the child hung on a lock it inherited"
        message = parent_conn.recv()
        assert message == ("done", subscribes + 1), message  # it subscribed on its own
    finally:
        release.set()
        holder.join(5)
        child.join(10)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0


@pytest.fixture
def preloaded(private_redis: PrivateRedis) -> Iterator[tuple[int, str, dict[str, str]]]:
    """gunicorn --preload with 3 workers, warmed in the master; (port, db path, config)."""
    with tempfile.TemporaryDirectory(prefix="tc-preload-") as tmp:
        db_path = str(Path(tmp) / "tenants.db")
        seed(db_path)
        config = {"TENANT_CACHE_REDIS_URL": private_redis.url, "TENANT_CACHE_REDIS_PREFIX": "pre"}
        port = free_port()
        env = {
            **os.environ,
            **config,
            "BENCH_DB_PATH": db_path,
            "PYTHONPATH": str(ROOT),
        }
        cmd = [
            *(sys.executable, "-m", "gunicorn", "--preload", "--workers", "3"),
            *("--bind", f"127.0.0.1:{port}", "--log-level", "warning"),
            "tests.helpers.preload_app:warmed_app()",
        ]
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
            try:
                wait_for(lambda: _get(port, "/_bench/ready") is not None, what="gunicorn")
                time.sleep(0.5)  # every worker forked (they answer exempt routes only so far)
                yield port, db_path, config
            finally:
                proc.terminate()
                proc.wait(15)


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def test_preloaded_warmed_workers_never_serve_what_they_missed(
    preloaded: tuple[int, str, dict[str, str]],
) -> None:
    port, db_path, config = preloaded
    tenant_id = WARM[0]
    # After the workers forked with globex in L1, and before any served it: a rename.
    engine = sa.create_engine(f"sqlite:///{db_path}")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE tenants SET slug = 'globex-new' WHERE slug = 'globex'"))
    engine.dispose()
    admin = create_app(db_path, **config)
    with admin.app_context():
        admin.extensions["bench"]["ext"].invalidate(str(uuid.UUID(tenant_id)))
        admin.extensions["bench"]["ext"].close()
    pids: set[int] = set()
    for _ in range(30):
        answer = _get(port, "/whoami", {"X-Tenant-ID": tenant_id})
        assert answer is not None
        status, body = answer
        assert (status, body["slug"]) == (200, "globex-new"), body
        pids.add(body["pid"])
        assert _get(port, "/whoami", {"X-Tenant-ID": "globex"})[0] == 404
    assert len(pids) >= 2  # several workers answered
