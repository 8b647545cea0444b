"""The Redis key space: every key under its app's prefix, one cluster slot, patterns escaped."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from flask import Flask
from redis.cluster import RedisCluster

from flask_tenant_cache.redis_layer.keys import KeySpace, default_channel, escape_glob
from tests.helpers.app import ACME_ID
from tests.helpers.redis_server import PrivateRedis, free_port, stats, wait_for

pytestmark = pytest.mark.redis

SLUGS = ("acme", "globex", "initech")


def serve_all(app: Flask) -> None:
    client = app.test_client()
    for slug in SLUGS:
        assert client.get("/whoami", headers={"X-Tenant-ID": slug}).status_code == 200


def keys_of(server: PrivateRedis) -> set[bytes]:
    client = redis.Redis.from_url(server.url)
    try:
        return set(client.scan_iter(count=1000))
    finally:
        client.close()


def invalidate_all(app: Flask) -> None:
    with app.app_context():
        app.extensions["test"]["ext"].invalidate_all()


def test_escape_glob_makes_every_pattern_character_literal() -> None:
    assert escape_glob("a*b?c[d]e\\f") == "a\\*b\\?c\\[d\\]e\\\\f"
    assert KeySpace("tc*").pattern == "{tc\\*}:*"


def test_the_default_channel_follows_the_prefix() -> None:
    assert default_channel("myapp:tenants") == "{myapp:tenants}:invalidate"


@pytest.mark.parametrize(("mine", "theirs"), [("tc*", "tc"), ("tc", "tc*"), ("a", "a:b")])
def test_two_apps_on_one_redis_never_touch_each_others_keys(
    redis_apps: Callable[..., Flask], private_redis: PrivateRedis, mine: str, theirs: str
) -> None:
    app = redis_apps(private_redis.config, TENANT_CACHE_REDIS_PREFIX=mine)
    other = redis_apps(private_redis.config, TENANT_CACHE_REDIS_PREFIX=theirs)
    serve_all(app)
    serve_all(other)
    theirs_before = {
        k for k in keys_of(private_redis) if k.startswith(b"{" + theirs.encode() + b"}:")
    }
    assert len(theirs_before) > len(SLUGS)  # entries, alias sets, pointers, the epoch
    invalidate_all(app)
    after = keys_of(private_redis)
    assert theirs_before <= after  # every key of the other app is still there
    with other.app_context():
        other.extensions["tenant_cache"].flush_local()
    serve_all(other)
    assert stats(other)["v2"]["l2"]["l2_hits"] == len(SLUGS)  # and still served from L2


def test_every_key_and_the_channel_are_under_the_prefix(
    redis_apps: Callable[..., Flask], private_redis: PrivateRedis
) -> None:
    app = redis_apps(private_redis.config, TENANT_CACHE_REDIS_PREFIX="myapp:tenants")
    serve_all(app)
    with app.app_context():
        app.extensions["test"]["ext"].set_rollout("v1")
        app.extensions["test"]["ext"].invalidate("acme")
    keys = keys_of(private_redis)
    assert keys
    assert all(k.startswith(b"{myapp:tenants}:") for k in keys), keys
    assert app.extensions["tenant_cache"].redis.bus.channel == "{myapp:tenants}:invalidate"
    assert stats(app)["redis"]["published"] == 2  # the override and the invalidation


def test_on_a_cluster_node_every_script_stays_in_one_slot(
    redis_apps: Callable[..., Flask], start_redis: Callable[..., PrivateRedis]
) -> None:
    # A one-node cluster owns every slot, so nothing is MOVED: only a script that touches
    # keys of several slots fails (CROSSSLOT).
    node = start_redis(
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-port",
        str(free_port()),  # not port + 10000, which may be past 65535
    )
    admin = redis.Redis.from_url(node.url)
    admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
    wait_for(lambda: b"cluster_state:ok" in admin.execute_command("CLUSTER", "INFO"), what="ok")
    admin.close()
    # A plain client on a cluster node is refused at init_app: the cluster client it needs.
    app = redis_apps(redis=lambda: RedisCluster.from_url(node.url))
    other = redis_apps(redis=lambda: RedisCluster.from_url(node.url))
    serve_all(app)
    serve_all(other)
    assert stats(other)["v2"]["l2"] == {"l2_hits": 3, "l2_misses": 0, "l2_errors": 0}
    with app.app_context():
        app.extensions["test"]["ext"].invalidate(str(ACME_ID))
        app.extensions["test"]["ext"].invalidate_all()
    assert stats(app)["redis"]["errors"] == 0
    assert stats(app)["redis"]["pending"] == 0


def test_a_prefix_with_braces_is_refused(redis_apps: Callable[..., Flask]) -> None:
    with pytest.raises(ValueError, match="TENANT_CACHE_REDIS_PREFIX"):
        redis_apps(
            {"TENANT_CACHE_REDIS_URL": "redis://127.0.0.1:1/0"}, TENANT_CACHE_REDIS_PREFIX="a{b}"
        )
