"""The Redis second layer and the invalidation bus, against a real Redis."""

from __future__ import annotations

import functools
import logging
import multiprocessing
import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from tests.helpers.app import ACME_ID, update_tenant_in
from tests.helpers.redis_server import PrivateRedis, listening, stats, wait_for

pytestmark = pytest.mark.redis

HEADERS = {"X-Tenant-ID": "acme"}


def calls(app: Flask) -> int:
    return len(app.extensions["test"]["loader"].calls)


def bus(app: Flask) -> Any:
    return app.extensions["tenant_cache"].redis


def serve(app: Flask, headers: dict[str, str] = HEADERS) -> Any:
    response = app.test_client().get("/whoami", headers=headers)
    assert response.status_code == 200, response.data
    return response.json


def test_a_load_is_shared_with_other_processes_through_l2(
    redis_apps: Any, shared_redis: Any
) -> None:
    first, second = redis_apps(shared_redis), redis_apps(shared_redis)
    serve(first)
    assert calls(first) == 1
    assert serve(second)["id"] == str(ACME_ID)
    assert calls(second) == 0  # read from Redis, not from its own database
    assert stats(second)["v2"]["l2"] == {"l2_hits": 1, "l2_misses": 0, "l2_errors": 0}
    raw = shared_redis["client"].get(f"{{{shared_redis['TENANT_CACHE_REDIS_PREFIX']}}}:t:slug:acme")
    assert b'"v": 1' in raw
    assert b'"uuid:' + str(ACME_ID).encode() in raw


def test_both_resolvers_share_l2(redis_apps: Any, shared_redis: Any) -> None:
    v2_app = redis_apps(shared_redis)
    v1_app = redis_apps(shared_redis, TENANT_CACHE_USE_V2=False)
    serve(v2_app)
    assert serve(v1_app)["version"] == "v1"
    assert calls(v1_app) == 0
    assert stats(v1_app)["v1"]["l2"]["l2_hits"] == 1


def test_an_invalidation_reaches_every_process(
    redis_apps: Any, shared_redis: Any, rename_in: Callable[..., None]
) -> None:
    writer, reader = redis_apps(shared_redis), redis_apps(shared_redis)
    listening(reader)
    serve(writer)
    for alias in ({"X-Tenant-ID": str(ACME_ID)}, {"Host": "acme.test"}):
        serve(reader, alias)
    before = calls(reader)
    rename_in(reader, name="Acme Renamed")
    rename_in(writer, name="Acme Renamed")
    with writer.app_context():
        writer.extensions["test"]["ext"].invalidate("acme")
    wait_for(lambda: stats(reader)["redis"]["received"] >= 1, what="the message")
    for alias in (HEADERS, {"X-Tenant-ID": str(ACME_ID)}, {"Host": "acme.test"}):
        assert serve(reader, alias)["name"] == "Acme Renamed"
    # Every alias was dropped, in L1 and in L2: one load, which cached every alias again.
    assert calls(reader) == before + 1
    assert stats(writer)["redis"]["published"] == 1


def test_a_load_racing_an_invalidation_does_not_write_l2(
    redis_apps: Any, shared_redis: Any
) -> None:
    slow, other = redis_apps(shared_redis), redis_apps(shared_redis)
    loader = slow.extensions["test"]["loader"]
    loader.hold()
    worker = threading.Thread(target=serve, args=(slow,))
    worker.start()
    assert loader.entered.wait(5)  # it read the epoch and went to the database...
    with other.app_context():
        other.extensions["test"]["ext"].invalidate(str(ACME_ID))  # ...an invalidation...
    loader.gate.set()  # ...and then its stale result comes back
    worker.join(5)
    key = f"{{{shared_redis['TENANT_CACHE_REDIS_PREFIX']}}}:t:slug:acme"
    assert shared_redis["client"].get(key) is None
    serve(other)
    assert calls(other) == 1


def test_redis_down_serves_every_request_and_logs_once(
    redis_apps: Any, private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    app = redis_apps(private_redis.config)
    private_redis.kill()
    caplog.set_level(logging.WARNING, logger="flask_tenant_cache")
    client = app.test_client()
    for slug in ["acme", "globex", "initech"] * 5:
        assert client.get("/whoami", headers={"X-Tenant-ID": slug}).status_code == 200
    with app.app_context():
        assert app.extensions["test"]["ext"].invalidate("acme") == 1
    redis_stats = stats(app)["redis"]
    assert redis_stats["errors"] >= 1
    assert redis_stats["pending"] == 1
    outages = [r for r in caplog.records if "serving around it" in r.getMessage()]
    assert len(outages) == 1


def test_after_a_restart_l1_is_flushed_and_queued_invalidations_are_sent(
    redis_apps: Any, private_redis: PrivateRedis
) -> None:
    redis_config = private_redis.config
    app, peer = redis_apps(redis_config), redis_apps(redis_config)
    listening(app, peer)
    serve(peer)
    serve(peer, {"X-Tenant-ID": "globex"})  # no invalidation names it: only a flush drops it
    private_redis.kill()
    wait_for(lambda: stats(app)["redis"]["disconnects"] >= 1, what="the disconnect")
    with app.app_context():
        app.extensions["test"]["ext"].invalidate("acme")  # lost on the bus: queued
    assert stats(app)["redis"]["pending"] == 1
    serve(peer)  # still served from L1 while Redis is down
    private_redis.start()
    wait_for(lambda: stats(app)["redis"]["resubscribes"] >= 1, what="the resubscription")
    wait_for(lambda: stats(app)["redis"]["pending_sent"] == 1, what="the queued invalidation")
    wait_for(lambda: stats(peer)["redis"]["resubscribes"] >= 1, what="the peer's resubscription")
    assert stats(peer)["v2"]["entry_count"] == 0  # flushed: it may have missed messages
    before = calls(peer)
    serve(peer)
    assert calls(peer) == before + 1


def test_a_paused_redis_costs_timeouts_not_failures(
    redis_apps: Any, private_redis: PrivateRedis
) -> None:
    app = redis_apps(private_redis.config, TENANT_CACHE_REDIS_SOCKET_TIMEOUT=0.1)
    private_redis.pause()
    try:
        for slug in ("acme", "globex", "initech"):
            serve(app, {"X-Tenant-ID": slug})
    finally:
        private_redis.resume()
    assert stats(app)["v2"]["l2"]["l2_errors"] >= 1
    assert calls(app) == 3


def _child(app: Flask, conn: Any) -> None:
    """In the forked child: serve, wait for the parent's invalidation, serve again."""
    try:
        layer = bus(app)
        serve(app)
        wait_for(lambda: stats(app)["redis"]["subscribes"] >= 1, what="the child's subscription")
        conn.send(("ready", layer.started, calls(app)))
        conn.recv()  # the parent has invalidated
        wait_for(lambda: stats(app)["redis"]["received"] >= 1, what="the message in the child")
        serve(app)
        conn.send(("done", calls(app), layer.node_id))
    except BaseException as exc:  # report, never hang the parent
        conn.send(("error", repr(exc), None))


def test_a_forked_worker_subscribes_on_its_own(redis_apps: Any, shared_redis: Any) -> None:
    app = redis_apps(shared_redis)  # init_app ran here, as in gunicorn --preload
    assert not bus(app).started
    parent_node = bus(app).node_id
    context = multiprocessing.get_context("fork")
    parent_conn, child_conn = context.Pipe()
    child = context.Process(target=_child, args=(app, child_conn))
    child.start()
    try:
        assert parent_conn.poll(20)
        message = parent_conn.recv()
        assert message[0] == "ready", message
        assert message[1:] == (True, 1)
        with app.app_context():
            app.extensions["test"]["ext"].invalidate("acme")
        parent_conn.send("invalidated")
        assert parent_conn.poll(20)
        message = parent_conn.recv()
        assert message[0] == "done", message
        assert message[1] == 2  # the child dropped acme and loaded it again
        assert message[2] != parent_node
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0


@pytest.fixture
def rename_in() -> Callable[..., None]:
    """``rename_in(app, **values)`` changes acme's row in ``app``'s database."""
    return functools.partial(update_tenant_in, tenant_id=ACME_ID)
