"""The invalidation bus under faults: unreadable messages, a dying subscriber, queues, gaps."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask

from tests.helpers.app import ACME_ID, update_tenant_in
from tests.helpers.redis_server import PrivateRedis, listening, stats, wait_for

pytestmark = pytest.mark.redis

HEADERS = {"X-Tenant-ID": "acme"}


def layer(app: Flask) -> Any:
    return app.extensions["tenant_cache"].redis


def bus_stats(app: Flask) -> dict[str, int]:
    result: dict[str, int] = stats(app)["redis"]
    return result


def name_of(app: Flask, headers: dict[str, str] = HEADERS) -> str:
    response = app.test_client().get("/whoami", headers=headers)
    assert response.status_code == 200, response.data
    name: str = response.json["name"]
    return name


def rename_and_invalidate(app: Flask, name: str, *others: Flask) -> None:
    """Rename acme in the databases of ``app`` and ``others``, then invalidate it in ``app``."""
    for each in (app, *others):
        update_tenant_in(each, ACME_ID, name=name)
    with app.app_context():
        app.extensions["test"]["ext"].invalidate("acme")


UNREADABLE = [
    b"[" * 100_000,  # RecursionError in the decoder
    b"\xff\xfe not utf-8",
    b"[1, 2]",
    b'"a string"',
    b"42",
    b"null",
    b'{"k": "slug:acme", "ids": []}',
    b'{"o": 1, "k": "slug:acme", "ids": []}',
    b'{"o": "x", "k": 5, "ids": []}',
    b'{"o": "x", "k": "slug:acme", "ids": "5f0c4f2a"}',
    b'{"o": "x", "k": "slug:acme", "ids": [{"a": 1}]}',
    b'{"o": "x", "k": "slug:acme", "ids": ["not a tenant id"]}',  # whitespace: no key has it
    b"{" + b'"o": "x", "pad": "' + b"x" * 70_000 + b'"}',
]


def test_unreadable_messages_are_dropped_and_counted_and_the_bus_goes_on(
    redis_apps: Callable[..., Flask], shared_redis: dict[str, Any], caplog: Any
) -> None:
    reader, writer = redis_apps(shared_redis), redis_apps(shared_redis)
    listening(reader)
    channel = layer(reader).bus.channel
    for data in UNREADABLE:
        shared_redis["client"].publish(channel, data)
    wait_for(lambda: bus_stats(reader)["dropped_messages"] == len(UNREADABLE), what="the drops")
    assert len([r for r in caplog.records if "unreadable bus message" in r.getMessage()]) == 1
    rename_and_invalidate(writer, "Acme After", reader)
    wait_for(lambda: bus_stats(reader)["received"] >= 1, what="the invalidation")
    assert name_of(reader) == "Acme After"
    assert bus_stats(reader)["subscriber_deaths"] == 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_subscriber_that_dies_is_restarted_and_counted(
    redis_apps: Callable[..., Flask], shared_redis: dict[str, Any]
) -> None:
    reader, writer = redis_apps(shared_redis), redis_apps(shared_redis)
    listening(reader)
    bus = layer(reader).bus
    handler = bus._on_invalidate

    def dies(key: str | None, ids: list[str]) -> object:
        bus._on_invalidate = handler
        raise SystemExit  # what no handler catches: the thread ends

    bus._on_invalidate = dies
    with writer.app_context():
        writer.extensions["test"]["ext"].invalidate("globex")
    wait_for(lambda: bus_stats(reader)["subscriber_deaths"] == 1, what="the death")
    assert not layer(reader).started
    name_of(reader)  # the next request starts it again...
    wait_for(lambda: bus_stats(reader)["subscribes"] + bus_stats(reader)["resubscribes"] >= 2)
    assert bus_stats(reader)["subscriber_restarts"] == 1
    rename_and_invalidate(writer, "Acme Later", reader)  # ...and it hears again
    wait_for(lambda: name_of(reader) == "Acme Later", what="the invalidation after the restart")


def test_a_failing_handler_flushes_instead_of_losing_the_invalidation(
    redis_apps: Callable[..., Flask], shared_redis: dict[str, Any]
) -> None:
    reader, writer = redis_apps(shared_redis), redis_apps(shared_redis)
    listening(reader)
    bus = layer(reader).bus

    def fails(key: str | None, ids: list[str]) -> object:
        raise RuntimeError("a bug in a handler")

    bus._on_invalidate = fails
    rename_and_invalidate(writer, "Acme Flushed", reader)
    wait_for(lambda: bus_stats(reader)["handler_errors"] == 1, what="the failure")
    assert name_of(reader) == "Acme Flushed"
    assert bus_stats(reader)["subscriber_deaths"] == 0


def test_messages_are_json_with_the_sender(shared_redis: dict[str, Any]) -> None:
    from flask_tenant_cache.redis_layer.bus import decode

    good = {"o": "node", "k": "slug:acme", "ids": [str(ACME_ID)]}
    assert decode(json.dumps(good).encode()) == good
    assert all(decode(data) is None for data in UNREADABLE)


def test_a_worker_that_served_no_tenant_delivers_its_queue_when_redis_returns(
    redis_apps: Callable[..., Flask], private_redis: PrivateRedis
) -> None:
    admin, peer = redis_apps(private_redis.config), redis_apps(private_redis.config)
    listening(peer)
    assert name_of(peer) == "Acme Corp"
    private_redis.kill()
    rename_and_invalidate(admin, "Acme Renamed", peer)  # an admin-only worker: no request
    assert bus_stats(admin)["pending"] == 1
    private_redis.start()
    wait_for(lambda: bus_stats(admin)["pending"] == 0, what="the queue to be sent")
    assert bus_stats(admin)["pending_sent"] == 1
    wait_for(lambda: name_of(peer) == "Acme Renamed", what="the peer to drop acme")


def test_while_an_invalidation_is_queued_l2_is_not_read_and_sending_applies_it_again(
    redis_apps: Callable[..., Flask], start_redis: Callable[..., PrivateRedis]
) -> None:
    server = start_redis("--appendonly", "yes", "--appendfsync", "always")
    app, peer = redis_apps(server.config), redis_apps(server.config)
    assert name_of(peer) == "Acme Corp"  # the old row is in L2, and in the AOF
    server.kill()
    update_tenant_in(app, ACME_ID, name="Acme Renamed")
    with app.app_context():
        app.extensions["test"]["ext"].invalidate("acme")  # queued; L1 dropped
    server.start()  # from its AOF: the old entry is back
    wait_for(lambda: layer(app).conn.available(), what="the breaker to close")
    assert name_of(app) == "Acme Renamed"  # not the old entry read back from L2
    wait_for(lambda: bus_stats(app)["pending"] == 0, what="the queue to be sent")
    assert name_of(app) == "Acme Renamed"
    assert stats(app)["v2"]["l2"]["l2_hits"] == 0


def test_a_reconnect_that_missed_nothing_keeps_the_local_caches(
    redis_apps: Callable[..., Flask], private_redis: PrivateRedis
) -> None:
    # A slow answer to the sequence read proves nothing (and flushes): give it time.
    config = {**private_redis.config, "TENANT_CACHE_REDIS_SOCKET_TIMEOUT": 2}
    app, peer = redis_apps(config), redis_apps(config)
    listening(app, peer)
    with app.app_context():
        app.extensions["test"]["ext"].invalidate("globex")  # numbered 1: heard by the peer
    wait_for(lambda: bus_stats(peer)["received"] == 1, what="the message")
    name_of(peer)
    entries = stats(peer)["v2"]["entry_count"]
    assert entries >= 1
    admin = redis.Redis.from_url(private_redis.url)
    admin.client_kill_filter(_type="pubsub")
    wait_for(lambda: bus_stats(peer)["resubscribes"] == 1, what="the resubscription")
    assert stats(peer)["v2"]["entry_count"] == entries  # the sequence proves nothing was lost
    assert bus_stats(peer)["gaps"] == 0
    admin.incr("{tenant-cache}:seq")  # a message it will never receive...
    rename_and_invalidate(app, "Acme Next", peer)  # ...then one it does: a gap
    wait_for(lambda: bus_stats(peer)["gaps"] == 1, what="the gap")
    assert stats(peer)["v2"]["entry_count"] == 0
    assert name_of(peer) == "Acme Next"
    admin.close()


def test_redis_restarted_from_an_older_snapshot_has_its_l2_discarded_not_served(
    redis_apps: Callable[..., Flask], start_redis: Callable[..., PrivateRedis]
) -> None:
    server = start_redis()
    app, peer = redis_apps(server.config), redis_apps(server.config)
    listening(app, peer)
    assert name_of(peer) == "Acme Corp"  # in L2
    admin = redis.Redis.from_url(server.url)
    admin.save()  # the snapshot holds the old entry and the epoch of the time
    admin.close()
    rename_and_invalidate(app, "Acme Renamed", peer)
    wait_for(lambda: bus_stats(peer)["received"] >= 1, what="the invalidation")
    assert name_of(peer) == "Acme Renamed"
    server.kill()
    server.start()  # from the older snapshot: the invalidation is gone from it
    wait_for(lambda: bus_stats(peer)["lost_writes"] >= 1, what="the peer to notice")
    assert name_of(peer) == "Acme Renamed"
    fresh = redis_apps(server.config)  # a process started after: nothing old in L2 for it
    update_tenant_in(fresh, ACME_ID, name="Acme Renamed")
    assert name_of(fresh) == "Acme Renamed"


def test_redis_restarted_empty_never_repeats_an_epoch_or_a_sequence_number(
    redis_apps: Callable[..., Flask], private_redis: PrivateRedis
) -> None:
    app, peer = redis_apps(private_redis.config), redis_apps(private_redis.config)
    listening(app, peer)
    for slug in ("acme", "globex", "initech"):
        with app.app_context():
            app.extensions["test"]["ext"].invalidate(slug)
    wait_for(lambda: bus_stats(peer)["received"] == 3, what="the invalidations")
    admin = redis.Redis.from_url(private_redis.url)
    epoch, seq = (int(v) for v in admin.mget("{tenant-cache}:epoch", "{tenant-cache}:seq"))
    private_redis.kill()
    private_redis.start()  # no persistence: everything, counters included, is gone
    wait_for(lambda: bus_stats(peer)["lost_writes"] >= 1, what="the peer to notice")
    wait_for(lambda: bus_stats(app)["lost_writes"] >= 1, what="the app to notice")
    # A load that read an epoch before the restart can never match one after it.
    assert int(admin.get("{tenant-cache}:epoch") or 0) > epoch
    assert int(admin.get("{tenant-cache}:seq") or 0) >= seq
    rename_and_invalidate(app, "Acme Again", peer)  # and the bus numbers on
    wait_for(lambda: name_of(peer) == "Acme Again", what="the invalidation after the restart")
    admin.close()
