"""Two apps on one 3-master Redis Cluster, through a ``RedisCluster`` client."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from redis.cluster import RedisCluster

from tests.helpers.app import ACME_ID, GLOBEX_ID, INITECH_ID, update_tenant_in
from tests.helpers.deployments import Cluster, unique_prefix
from tests.helpers.redis_server import listening, stats, wait_for

pytestmark = pytest.mark.redis


def ext(app: Flask) -> Any:
    return app.extensions["test"]["ext"]


def calls(app: Flask) -> int:
    return len(app.extensions["test"]["loader"].calls)


def whoami(app: Flask, tenant: str) -> Any:
    response = app.test_client().get("/whoami", headers={"X-Tenant-ID": tenant})
    assert response.status_code == 200, response.data
    return response.json


@pytest.fixture
def two_apps(redis_apps: Callable[..., Flask], redis_cluster: Cluster) -> tuple[Flask, Flask]:
    """Two apps (two processes, as far as Redis can tell) on the cluster, one prefix."""
    prefix = unique_prefix()
    apps = [
        redis_apps(redis=redis_cluster.client, TENANT_CACHE_REDIS_PREFIX=prefix) for _ in range(2)
    ]
    listening(*apps)
    for app in apps:
        with app.app_context():
            app.extensions["tenant_cache"].flush_local()  # forget the request of listening()
        app.extensions["test"]["loader"].calls.clear()
    return apps[0], apps[1]


def test_the_cluster_client_is_the_apps_and_pubsub_is_sharded(
    two_apps: tuple[Flask, Flask],
) -> None:
    layer = two_apps[0].extensions["tenant_cache"].redis
    assert isinstance(layer.conn.client, RedisCluster)
    assert len(layer.conn.client.get_primaries()) == 3
    # Sharded pub/sub: the channel's messages stay on its slot's shard.
    channels = layer.conn.client.get_node_from_key(layer.bus.channel).redis_connection
    assert layer.bus.channel.encode() in channels.execute_command("PUBSUB", "SHARDCHANNELS")


def test_the_run_id_is_the_one_of_the_apps_slot(two_apps: tuple[Flask, Flask]) -> None:
    layer = two_apps[0].extensions["tenant_cache"].redis
    client = layer.conn.client
    for key in (layer.keys.sequence, layer.keys.epoch):
        node = client.get_node_from_key(key).redis_connection
        assert layer.conn.run_id(key) == node.info("server")["run_id"]


def test_l2_hits_across_apps(two_apps: tuple[Flask, Flask]) -> None:
    first, second = two_apps
    for tenant in ("globex", str(INITECH_ID)):  # acme is in L2 already: listening() read it
        whoami(first, tenant)
    assert calls(first) == 2
    assert whoami(second, "globex")["id"] == str(GLOBEX_ID)
    assert whoami(second, str(INITECH_ID))["name"] == "Initech"
    assert calls(second) == 0
    assert stats(second)["v2"]["l2"] == {"l2_hits": 3, "l2_misses": 0, "l2_errors": 0}  # + acme
    assert stats(first)["redis"]["errors"] == 0


def test_invalidation_reaches_the_other_app_within_a_second(
    two_apps: tuple[Flask, Flask],
) -> None:
    first, second = two_apps
    assert whoami(second, "acme")["name"] == "Acme Corp"
    update_tenant_in(second, ACME_ID, name="Acme Renamed")  # each app has its own database
    with first.app_context():
        ext(first).invalidate("acme")
    wait_for(
        lambda: whoami(second, "acme")["name"] == "Acme Renamed",
        timeout=1.0,
        what="the invalidation on the other app",
    )
    assert stats(first)["redis"]["pending"] == 0


def test_one_load_for_concurrent_cold_requests_across_both_apps(
    two_apps: tuple[Flask, Flask],
) -> None:
    per_app = 4
    barrier = threading.Barrier(per_app * 2)
    statuses: list[int] = []

    def request(app: Flask) -> None:
        client = app.test_client()
        barrier.wait()
        statuses.append(client.get("/whoami", headers={"X-Tenant-ID": "globex"}).status_code)

    threads = [
        threading.Thread(target=request, args=(app,)) for app in two_apps for _ in range(per_app)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert statuses == [200] * per_app * 2
    assert calls(two_apps[0]) + calls(two_apps[1]) == 1


def test_rollout_override_has_cluster_scope(two_apps: tuple[Flask, Flask]) -> None:
    first, second = two_apps
    with first.app_context():
        assert ext(first).set_rollout("v1") == {"override": "v1", "scope": "cluster"}
    wait_for(lambda: stats(second)["rollout"]["override"] == "v1", what="the override")
    with second.app_context():
        assert ext(second).set_rollout(None)["scope"] == "cluster"
    wait_for(lambda: stats(first)["rollout"]["override"] is None, what="the lifted override")


def test_invalidate_all_empties_the_apps_keys_on_every_primary(
    two_apps: tuple[Flask, Flask], redis_cluster: Cluster
) -> None:
    first, second = two_apps
    for tenant in ("acme", "globex", "initech"):
        whoami(first, tenant)
        whoami(second, tenant)
    layer = first.extensions["tenant_cache"].redis
    client = layer.conn.client

    def entries() -> list[bytes]:
        return [k for k in client.scan_iter(match=layer.keys.pattern) if b":t:" in k]

    assert len(entries()) == 3
    with first.app_context():
        ext(first).invalidate_all()
    assert entries() == []
    wait_for(lambda: stats(second)["redis"]["received"] >= 1, what="the flush on the other app")
    whoami(second, "acme")
    assert calls(second) == 1  # loaded again: its L1 was flushed too
    assert stats(first)["redis"]["errors"] == stats(second)["redis"]["errors"] == 0
