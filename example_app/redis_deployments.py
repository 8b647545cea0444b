"""The extension's Redis for each kind of deployment (the deployment guide shows these)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

#: Every command the extension runs, for an ACL user limited to the app's
#: prefix: the start-up check (HELLO), the server's run id (INFO), the
#: scripts (EVALSHA, SCRIPT LOAD and what they call), the shadow mismatch
#: records (the lists, in a transaction), the flush of ``invalidate_all``
#: (SCAN, UNLINK), the bus and the health checks (PING). On a cluster the
#: bus is sharded: ``+spublish +ssubscribe`` instead of ``+subscribe``.
ACL_COMMANDS = [
    *("+hello", "+ping", "+info", "+evalsha", "+script|load"),
    *("+get", "+mget", "+set", "+del", "+incr", "+incrby"),
    *("+expire", "+sadd", "+smembers"),
    *("+lpush", "+ltrim", "+lrange", "+multi", "+exec"),
    *("+scan", "+unlink", "+publish", "+subscribe"),
]


def acl_rules(prefix: str, *, cluster: bool = False) -> list[str]:
    """``ACL SETUSER`` rules of a least-privilege user for ``prefix``.

    Keys and channels are ``{prefix}:...`` (the prefix is the hash tag).
    """
    commands = ACL_COMMANDS
    if cluster:
        commands = [*ACL_COMMANDS[:-1], "+spublish", "+ssubscribe"]
    scope = f"{{{prefix}}}:*"
    return ["resetkeys", "resetchannels", f"~{scope}", f"&{scope}", *commands]


def sentinel_client(sentinels: list[tuple[str, int]], name: str) -> Callable[[], Any]:
    """Sentinel: the master of ``name``, found again after a failover."""

    def connect() -> Any:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            sentinels, socket_timeout=0.5
        )
        return sentinel.master_for(  # type: ignore[no-untyped-call]
            name, socket_timeout=0.5, socket_connect_timeout=0.5
        )

    return connect


def cluster_client(url: str) -> Callable[[], Any]:
    """Redis Cluster, or a managed service in cluster mode: one node's URL
    (the configuration endpoint); the client finds the others."""

    def connect() -> Any:
        return RedisCluster.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)

    return connect


def tls_client(
    host: str,
    port: int,
    *,
    ca: str,
    cert: str | None = None,
    key: str | None = None,
    username: str | None = None,
    password: str | None = None,
) -> Callable[[], Any]:
    """TLS, the server verified against ``ca``; with ``cert`` and ``key``,
    mutual TLS."""

    def connect() -> Any:
        return redis.Redis(
            host=host,
            port=port,
            ssl=True,
            ssl_ca_certs=ca,
            ssl_certfile=cert,
            ssl_keyfile=key,
            username=username,
            password=password,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
        )

    return connect
