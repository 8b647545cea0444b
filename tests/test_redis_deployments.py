"""The test deployments themselves, proven with plain redis-py before the extension uses them."""

from __future__ import annotations

import contextlib

import pytest
import redis

from tests.helpers.deployments import AclRedis, Cluster, Node, SentinelSet, TlsFiles, unique_prefix
from tests.helpers.redis_server import wait_for

pytestmark = pytest.mark.redis


def test_cluster_spreads_keys_over_three_masters(redis_cluster: Cluster) -> None:
    client = redis_cluster.client()
    try:
        assert len(client.get_primaries()) == 3
        prefix = unique_prefix()
        keys = [f"{prefix}:{n}" for n in range(30)]
        for key in keys:
            client.set(key, "1", ex=60)
        # Without a hash tag keys land on every master; with one, on one slot.
        assert len({client.keyslot(key) for key in keys}) > 1
        assert len({client.keyslot("{" + prefix + "}:" + str(n)) for n in range(30)}) == 1
        assert all(client.get(key) == b"1" for key in keys)
        client.delete(*keys)
    finally:
        client.close()


def test_a_plain_client_on_a_cluster_node_is_redirected(redis_cluster: Cluster) -> None:
    plain = redis_cluster.nodes[0].client()
    cluster = redis_cluster.client()
    try:
        prefix = unique_prefix()
        elsewhere = next(
            f"{prefix}:{n}"
            for n in range(100)
            if cluster.get_node_from_key(f"{prefix}:{n}").port != redis_cluster.nodes[0].port
        )
        # A MovedError in recent redis-py; in 5.0, a ResponseError "MOVED ...".
        with pytest.raises(redis.ResponseError, match=r"127\.0\.0\.1:\d+"):
            plain.get(elsewhere)
    finally:
        plain.close()
        cluster.close()


def test_cluster_sharded_pubsub(redis_cluster: Cluster) -> None:
    client = redis_cluster.client()
    pubsub = client.pubsub()
    try:
        channel = unique_prefix() + ":bus"
        pubsub.ssubscribe(channel)
        # Polled: redis-py 5.0 may answer None before the confirmation is read.
        confirmation = wait_for(
            lambda: pubsub.get_sharded_message(timeout=0.1), what="the sharded message"
        )
        assert confirmation["type"] == "ssubscribe"
        assert client.spublish(channel, "hello") == 1
        message = wait_for(
            lambda: pubsub.get_sharded_message(timeout=0.1), what="the sharded message"
        )
        assert (message["type"], message["data"]) == ("smessage", b"hello")
    finally:
        pubsub.close()
        client.close()


def test_sentinel_failover_and_kill_move_the_master(sentinel_set: SentinelSet) -> None:
    sentinel = sentinel_set.sentinel()
    master = sentinel.master_for(sentinel_set.name, socket_timeout=2)
    key = unique_prefix() + ":k"
    try:
        master.set(key, "before")
        first = sentinel_set.master()
        new = sentinel_set.failover()
        assert new is not first
        assert sentinel.discover_master(sentinel_set.name) == new.address
        # redis-py drops a connection to the demoted master on its first READONLY answer
        # (raising ConnectionError), and the next command asks the sentinels again.
        with contextlib.suppress(redis.ConnectionError):
            master.set(key, "after-failover")
        master.set(key, "after-failover")
        # Replication is asynchronous: the old master must hold the write before the kill.
        assert master.wait(1, 5000) >= 1
        with pytest.raises(redis.ReadOnlyError):
            first.client().set(key, "on the old master, now a replica")

        killed = sentinel_set.kill_master()
        assert killed is first
        assert sentinel.discover_master(sentinel_set.name) == first.address
        with contextlib.suppress(redis.ConnectionError):
            master.get(key)
        assert master.get(key) == b"after-failover"  # replicated before the kill
    finally:
        master.close()


def test_acl_user_is_limited_to_its_keys_commands_and_channels(acl_redis: AclRedis) -> None:
    prefix = unique_prefix()
    name, password = acl_redis.add_user([f"~{prefix}*", f"&{prefix}*", "+get", "+set"])
    client = redis.Redis.from_url(acl_redis.url(name, password))
    try:
        assert client.set(f"{prefix}:k", "1")
        with pytest.raises(redis.exceptions.NoPermissionError, match="key"):
            client.get("another-app:k")
        with pytest.raises(redis.exceptions.NoPermissionError, match="del"):
            client.delete(f"{prefix}:k")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.publish(f"{prefix}:bus", "x")
    finally:
        client.close()


def test_tls_needs_the_ca(tls_redis: Node, tls_files: TlsFiles) -> None:
    url = f"rediss://127.0.0.1:{tls_redis.port}/0"
    client = redis.Redis.from_url(url, ssl_ca_certs=tls_files.ca)
    try:
        assert client.ping()
    finally:
        client.close()
    unverified = redis.Redis.from_url(url, socket_timeout=2)
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        unverified.ping()


def test_mutual_tls_needs_a_client_certificate(mtls_redis: Node, tls_files: TlsFiles) -> None:
    url = f"rediss://127.0.0.1:{mtls_redis.port}/0"
    client = redis.Redis.from_url(
        url,
        ssl_ca_certs=tls_files.ca,
        ssl_certfile=tls_files.client_cert,
        ssl_keyfile=tls_files.client_key,
    )
    try:
        assert client.ping()
    finally:
        client.close()
    anonymous = redis.Redis.from_url(url, ssl_ca_certs=tls_files.ca, socket_timeout=2)
    with pytest.raises(redis.ConnectionError):
        anonymous.ping()


def test_valkey_speaks_the_protocol(valkey_server: Node) -> None:
    client = valkey_server.client()
    try:
        assert client.info("server")["server_name"] == "valkey"
        assert client.set("k", "v")
        assert client.get("k") == b"v"
    finally:
        client.close()
