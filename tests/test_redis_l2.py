"""The single flight across processes: one database query per cold tenant in a cluster."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from flask import Flask

from tests.helpers.redis_server import PrivateRedis, listening, stats, wait_for

pytestmark = pytest.mark.redis


def loader_of(app: Flask) -> Any:
    return app.extensions["test"]["loader"]


def redis_stats(app: Flask) -> dict[str, int]:
    result: dict[str, int] = stats(app)["redis"]
    return result


def get(app: Flask, slug: str, into: list[Any]) -> threading.Thread:
    """Request ``slug`` on ``app`` in a thread; the response goes into ``into``."""

    def run() -> None:
        into.append(app.test_client().get("/whoami", headers={"X-Tenant-ID": slug}))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def claimed(app: Flask, shared_redis: dict[str, Any], slug: str) -> bool:
    key = f"{{{shared_redis['TENANT_CACHE_REDIS_PREFIX']}}}:load:slug:{slug}"
    return shared_redis["client"].get(key) is not None


def follow_a_gated_load(
    leader: Flask, follower: Flask, slug: str, shared_redis: dict[str, Any]
) -> tuple[Any, Any, threading.Thread, bool]:
    """``leader`` loads ``slug`` behind a gate while ``follower`` asks for it and waits.

    The gate opens once the follower waits. Returns both responses, the follower's thread
    (joined for 5 s) and whether the load was claimed in Redis while the leader ran it.
    """
    loader_of(leader).hold()
    first: list[Any] = []
    second: list[Any] = []
    lead = get(leader, slug, first)
    assert loader_of(leader).entered.wait(5)
    was_claimed = claimed(leader, shared_redis, slug)
    follow = get(follower, slug, second)
    wait_for(lambda: redis_stats(follower)["waiting"] == 1, what="the follower to wait")
    loader_of(leader).gate.set()
    lead.join(5)
    follow.join(5)
    return first[0], second[0], follow, was_claimed


def test_a_process_waits_for_another_process_s_load(redis_apps: Any, shared_redis: Any) -> None:
    leader, follower = redis_apps(shared_redis), redis_apps(shared_redis)
    first, second, _, was_claimed = follow_a_gated_load(leader, follower, "acme", shared_redis)
    assert was_claimed
    assert first.status_code == second.status_code == 200
    assert second.json["slug"] == "acme"
    assert loader_of(follower).calls == []  # one query in the whole cluster
    assert redis_stats(follower)["remote_hits"] == 1
    assert redis_stats(leader)["claims"] == 1


def test_a_not_found_answer_is_shared_with_the_waiting_processes(
    redis_apps: Any, shared_redis: Any
) -> None:
    leader, follower = redis_apps(shared_redis), redis_apps(shared_redis)
    first, second, _, _ = follow_a_gated_load(leader, follower, "nobody", shared_redis)
    assert first.status_code == second.status_code == 404
    assert loader_of(follower).calls == []
    assert redis_stats(follower)["remote_hits"] == 1


def test_a_failed_load_lets_the_waiting_processes_load_for_themselves(
    redis_apps: Any, shared_redis: Any
) -> None:
    leader = redis_apps(shared_redis)
    follower = redis_apps(shared_redis, TENANT_CACHE_LOAD_TIMEOUT=30)
    loader_of(leader).fail = RuntimeError("database down here")
    first, second, follow, _ = follow_a_gated_load(leader, follower, "acme", shared_redis)
    assert not follow.is_alive()  # joined long before the 30 s claim would expire
    assert first.status_code == 503
    assert second.status_code == 200
    assert len(loader_of(follower).calls) == 1
    assert not claimed(leader, shared_redis, "acme")


def test_an_invalidation_during_the_load_voids_its_not_found_answer(
    redis_apps: Any, shared_redis: Any
) -> None:
    leader, follower = redis_apps(shared_redis), redis_apps(shared_redis)
    loader_of(leader).hold()
    first: list[Any] = []
    lead = get(leader, "nobody", first)
    assert loader_of(leader).entered.wait(5)
    with follower.app_context():
        follower.extensions["test"]["ext"].invalidate("nobody")  # say "nobody" was just created
    loader_of(leader).gate.set()
    lead.join(5)
    marker = shared_redis["client"].get(
        f"{{{shared_redis['TENANT_CACHE_REDIS_PREFIX']}}}:load:slug:nobody"
    )
    assert marker is None  # no not-found answer written under the new epoch
    follower.test_client().get("/whoami", headers={"X-Tenant-ID": "nobody"})
    assert len(loader_of(follower).calls) == 1  # it asked its own database


def test_a_claim_whose_owner_died_expires(redis_apps: Any, shared_redis: Any) -> None:
    app = redis_apps(shared_redis, TENANT_CACHE_LOAD_TIMEOUT=0.3)
    prefix = shared_redis["TENANT_CACHE_REDIS_PREFIX"]
    shared_redis["client"].set(f"{{{prefix}}}:load:slug:acme", "a-dead-process", px=300)
    response = app.test_client().get("/whoami", headers={"X-Tenant-ID": "acme"})
    assert response.status_code == 200
    assert len(loader_of(app).calls) == 1
    assert redis_stats(app)["remote_waits"] == 1
    assert redis_stats(app)["remote_hits"] == 0


ACME = "5f0c4f2a-1b2c-4d3e-8f9a-0b1c2d3e4f5a"
UNREADABLE_ENTRIES = [
    b"[1, 2]",
    b'"a string"',
    b"42",
    b"\xff not utf-8",
    b'{"v": 1}',
    b'{"v": 1, "tenant": [1]}',
    b'{"v": 1, "tenant": {"id": "' + ACME.encode() + b'", "slug": 5}}',
    b'{"v": 1, "tenant": {"id": "not-a-uuid", "slug": "acme"}}',
    b'{"v": 1, "tenant": {"id": "' + ACME.encode() + b'", "slug": "acme", "domains": "x"}}',
    b'{"v": 1, "tenant": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
]


@pytest.mark.parametrize("raw", UNREADABLE_ENTRIES, ids=range(len(UNREADABLE_ENTRIES)))
def test_an_unreadable_entry_is_a_counted_miss_the_loader_answers(
    redis_apps: Any, shared_redis: Any, raw: bytes
) -> None:
    app = redis_apps(shared_redis)
    prefix = shared_redis["TENANT_CACHE_REDIS_PREFIX"]
    shared_redis["client"].set(f"{{{prefix}}}:t:slug:acme", raw, ex=60)
    response = app.test_client().get("/whoami", headers={"X-Tenant-ID": "acme"})
    assert response.status_code == 200, response.data
    assert response.json["slug"] == "acme"
    assert len(loader_of(app).calls) == 1
    assert redis_stats(app)["unreadable_entries"] == 1


def count_reads(app: Flask) -> list[int]:
    """Count the read-or-claim calls ``app``'s L2 makes to Redis from now on."""
    l2 = app.extensions["tenant_cache"].redis.l2
    script = l2._scripts()._get_script
    calls = [0]

    def counted(**kwargs: Any) -> Any:
        calls[0] += 1
        return script(**kwargs)

    l2._get_script = counted
    return calls


def test_a_waiter_is_woken_by_the_result_not_by_polling(redis_apps: Any, shared_redis: Any) -> None:
    leader = redis_apps(shared_redis)
    follower = redis_apps(shared_redis, TENANT_CACHE_LOAD_TIMEOUT=30)
    listening(follower, serve=lambda app: get(app, "globex", []).join(5))
    calls = count_reads(follower)
    loader_of(leader).hold()
    first: list[Any] = []
    second: list[Any] = []
    lead = get(leader, "acme", first)
    assert loader_of(leader).entered.wait(5)
    follow = get(follower, "acme", second)
    wait_for(lambda: redis_stats(follower)["waiting"] == 1, what="the follower to wait")
    time.sleep(0.3)  # a polling waiter would make ~150 calls meanwhile
    loader_of(leader).gate.set()
    lead.join(5)
    follow.join(5)
    assert second[0].status_code == 200
    assert redis_stats(follower)["remote_hits"] == 1
    assert calls[0] <= 5, calls


def test_a_stall_during_a_load_does_not_leave_the_waiters_waiting(
    redis_apps: Any, private_redis: PrivateRedis
) -> None:
    leader = redis_apps(private_redis.config, TENANT_CACHE_REDIS_SOCKET_TIMEOUT=0.5)
    follower = redis_apps(
        private_redis.config, TENANT_CACHE_LOAD_TIMEOUT=30, TENANT_CACHE_REDIS_SOCKET_TIMEOUT=5
    )
    listening(leader, follower)
    loader_of(leader).hold()
    first: list[Any] = []
    second: list[Any] = []
    lead = get(leader, "initech", first)
    assert loader_of(leader).entered.wait(5)
    follow = get(follower, "initech", second)
    wait_for(
        lambda: redis_stats(follower)["waiting"] == 1,
        what=lambda: (
            f"the follower to wait; its Redis counters {redis_stats(follower)}, its "
            f"loader's calls {loader_of(follower).calls}; the leader's {redis_stats(leader)}"
        ),
    )
    # Stopped until the leader's finish has timed out, however late a loaded machine runs the
    # leader's thread: a stall of fixed length (CLIENT PAUSE 1000) could end before the finish
    # was sent.
    private_redis.pause()
    try:
        loader_of(leader).gate.set()
        lead.join(10)
        assert first[0].status_code == 200
        l2 = leader.extensions["tenant_cache"].redis.l2  # read in process: Redis is stopped
        wait_for(lambda: l2.unfinished == 1, what="the finish to time out")
    finally:
        private_redis.resume()
    follow.join(10)  # long before its 30 s: the finish was sent when Redis answered again
    assert not follow.is_alive()
    assert second[0].status_code == 200
    assert loader_of(follower).calls == []  # it got the leader's result
    # The retry counts itself once its script ran, which may be after the follower woke.
    wait_for(lambda: redis_stats(leader)["finishes_retried"] == 1, what="the retry's count")
    assert redis_stats(leader)["unfinished"] == 0


# -- primary keys that are not UUIDs -------------------------------------------------------------


def test_invalidating_an_integer_keyed_tenant_drops_every_alias_from_l2(
    shared_redis: dict[str, Any],
) -> None:
    from flask_tenant_cache import Tenant, TenantCache
    from flask_tenant_cache.redis_layer.keys import KeySpace
    from flask_tenant_cache.testing import InMemoryTenantLoader

    answer = Tenant(id=42, slug="answer", name="Answer", domains=("answer.test",))
    apps = []
    for _ in range(2):  # two processes: each fills the L2 under the alias it was asked by
        app = Flask(__name__)
        app.config.update({k: v for k, v in shared_redis.items() if k.startswith("TENANT_CACHE_")})
        TenantCache(app, loader=InMemoryTenantLoader([answer]))
        app.add_url_rule("/", "index", lambda: "ok")
        apps.append(app)
    try:
        assert apps[0].test_client().get("/", headers={"X-Tenant-ID": "answer"}).status_code == 200
        assert apps[1].test_client().get("/", headers={"Host": "answer.test"}).status_code == 200
        keys = KeySpace(shared_redis["TENANT_CACHE_REDIS_PREFIX"])
        client = shared_redis["client"]
        assert client.get(keys.entry("host:answer.test")) is not None
        with apps[0].app_context():
            apps[0].extensions["tenant_cache"].ext.invalidate("answer")
        # Every alias of the tenant, not only the one named.
        assert client.get(keys.entry("host:answer.test")) is None
        assert client.get(keys.entry("slug:answer")) is None
    finally:
        for app in apps:
            with app.app_context():
                app.extensions["tenant_cache"].ext.close()
