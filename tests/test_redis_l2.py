"""The single flight across processes: one database query per cold tenant in a cluster."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import build_app
from flask import Flask
from redis_support import shared_redis, wait_for

__all__ = ["shared_redis"]  # fixture

pytestmark = pytest.mark.redis


@pytest.fixture
def make_app() -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def make(redis_config: dict[str, Any], **config: Any) -> Flask:
        settings = {k: v for k, v in redis_config.items() if k.startswith("TENANT_CACHE_")}
        app = build_app(**settings, **config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        with app.app_context():
            app.extensions["test"]["ext"].close()


def loader_of(app: Flask) -> Any:
    return app.extensions["test"]["loader"]


def redis_stats(app: Flask) -> dict[str, int]:
    with app.app_context():
        result: dict[str, int] = app.extensions["test"]["ext"].stats()["redis"]
        return result


def get(app: Flask, slug: str, into: list[Any]) -> threading.Thread:
    """Request ``slug`` on ``app`` in a thread; the response goes into ``into``."""

    def run() -> None:
        into.append(app.test_client().get("/whoami", headers={"X-Tenant-ID": slug}))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def claimed(app: Flask, shared_redis: dict[str, Any], slug: str) -> bool:
    key = f"{shared_redis['TENANT_CACHE_REDIS_PREFIX']}:load:slug:{slug}"
    return shared_redis["client"].get(key) is not None


def test_a_process_waits_for_another_process_s_load(make_app: Any, shared_redis: Any) -> None:
    leader, follower = make_app(shared_redis), make_app(shared_redis)
    loader_of(leader).gate = threading.Event()
    first: list[Any] = []
    second: list[Any] = []
    lead = get(leader, "acme", first)
    assert loader_of(leader).entered.wait(5)
    assert claimed(leader, shared_redis, "acme")
    follow = get(follower, "acme", second)
    wait_for(lambda: redis_stats(follower)["waiting"] == 1, what="the follower to wait")
    loader_of(leader).gate.set()
    lead.join(5)
    follow.join(5)
    assert first[0].status_code == second[0].status_code == 200
    assert second[0].json["slug"] == "acme"
    assert loader_of(follower).calls == []  # one query in the whole cluster
    assert redis_stats(follower)["remote_hits"] == 1
    assert redis_stats(leader)["claims"] == 1


def test_a_not_found_answer_is_shared_with_the_waiting_processes(
    make_app: Any, shared_redis: Any
) -> None:
    leader, follower = make_app(shared_redis), make_app(shared_redis)
    loader_of(leader).gate = threading.Event()
    first: list[Any] = []
    second: list[Any] = []
    lead = get(leader, "nobody", first)
    assert loader_of(leader).entered.wait(5)
    follow = get(follower, "nobody", second)
    wait_for(lambda: redis_stats(follower)["waiting"] == 1, what="the follower to wait")
    loader_of(leader).gate.set()
    lead.join(5)
    follow.join(5)
    assert first[0].status_code == second[0].status_code == 404
    assert loader_of(follower).calls == []
    assert redis_stats(follower)["remote_hits"] == 1


def test_a_failed_load_lets_the_waiting_processes_load_for_themselves(
    make_app: Any, shared_redis: Any
) -> None:
    leader = make_app(shared_redis)
    follower = make_app(shared_redis, TENANT_CACHE_LOAD_TIMEOUT=30)
    loader_of(leader).gate = threading.Event()
    loader_of(leader).fail = RuntimeError("database down here")
    first: list[Any] = []
    second: list[Any] = []
    lead = get(leader, "acme", first)
    assert loader_of(leader).entered.wait(5)
    follow = get(follower, "acme", second)
    wait_for(lambda: redis_stats(follower)["waiting"] == 1, what="the follower to wait")
    loader_of(leader).gate.set()
    lead.join(5)
    follow.join(5)  # long before the 30 s claim would expire
    assert not follow.is_alive()
    assert first[0].status_code == 503
    assert second[0].status_code == 200
    assert len(loader_of(follower).calls) == 1
    assert not claimed(leader, shared_redis, "acme")


def test_an_invalidation_during_the_load_voids_its_not_found_answer(
    make_app: Any, shared_redis: Any
) -> None:
    leader, follower = make_app(shared_redis), make_app(shared_redis)
    loader_of(leader).gate = threading.Event()
    first: list[Any] = []
    lead = get(leader, "nobody", first)
    assert loader_of(leader).entered.wait(5)
    with follower.app_context():
        follower.extensions["test"]["ext"].invalidate("nobody")  # say "nobody" was just created
    loader_of(leader).gate.set()
    lead.join(5)
    marker = shared_redis["client"].get(
        f"{shared_redis['TENANT_CACHE_REDIS_PREFIX']}:load:slug:nobody"
    )
    assert marker is None  # no not-found answer written under the new epoch
    follower.test_client().get("/whoami", headers={"X-Tenant-ID": "nobody"})
    assert len(loader_of(follower).calls) == 1  # it asked its own database


def test_a_claim_whose_owner_died_expires(make_app: Any, shared_redis: Any) -> None:
    app = make_app(shared_redis, TENANT_CACHE_LOAD_TIMEOUT=0.3)
    prefix = shared_redis["TENANT_CACHE_REDIS_PREFIX"]
    shared_redis["client"].set(f"{prefix}:load:slug:acme", "a-dead-process", px=300)
    response = app.test_client().get("/whoami", headers={"X-Tenant-ID": "acme"})
    assert response.status_code == 200
    assert len(loader_of(app).calls) == 1
    assert redis_stats(app)["remote_waits"] == 1
    assert redis_stats(app)["remote_hits"] == 0
