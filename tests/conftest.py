"""Fixtures: a Flask app with a real SQLite tenant table, Redis (shared or private), deployments."""

from __future__ import annotations

import functools
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_tenant_cache import TenantCache
from tests.helpers.app import (
    ADMIN_TOKEN,
    CountingLoader,
    FakeTimer,
    build_app,
    need_service,
    update_tenant,
)
from tests.helpers.deployments import (
    AclRedis,
    Cluster,
    Node,
    SentinelSet,
    TlsFiles,
    binary,
    make_tls_files,
    running,
    tls_server,
    valkey_binary,
)
from tests.helpers.redis_server import SHARED_REDIS_URL, PrivateRedis
from tests.helpers.resolvers import ACME, GLOBEX, MemoryLoader


@pytest.fixture
def app() -> Iterator[Flask]:
    app = build_app()
    with app.app_context():
        yield app


@pytest.fixture
def loader(app: Flask) -> CountingLoader:
    result: CountingLoader = app.extensions["test"]["loader"]
    return result


@pytest.fixture
def ext(app: Flask) -> TenantCache:
    result: TenantCache = app.extensions["test"]["ext"]
    return result


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def rename(app: Flask) -> Callable[..., None]:
    """Change a tenant row in the database (as an admin would), without touching the cache."""
    return functools.partial(update_tenant, app)


@pytest.fixture
def timer() -> FakeTimer:
    return FakeTimer()


@pytest.fixture
def db() -> MemoryLoader:
    """An in-memory tenant table holding ``ACME`` and ``GLOBEX``."""
    return MemoryLoader(ACME, GLOBEX)


@pytest.fixture
def resolver(make: Any) -> Any:
    """A resolver from the test module's ``make`` fixture, with its defaults."""
    return make()


@pytest.fixture
def shared_redis() -> Iterator[dict[str, Any]]:
    """The Redis service, with a prefix (and so a channel) of this test's own, deleted after."""
    import redis

    client = redis.Redis.from_url(SHARED_REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        need_service("Redis", str(exc))
    prefix = f"tc-test-{uuid.uuid4().hex[:12]}"
    yield {
        "TENANT_CACHE_REDIS_URL": SHARED_REDIS_URL,
        "TENANT_CACHE_REDIS_PREFIX": prefix,
        "client": client,
    }
    for key in client.scan_iter(match="{" + prefix + "}:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def start_redis() -> Iterator[Callable[..., PrivateRedis]]:
    """``start_redis(*options)``: a running redis-server of this test's own, stopped after."""
    server_binary = binary("redis-server")
    servers: list[PrivateRedis] = []

    def start(*args: str) -> PrivateRedis:
        server = PrivateRedis(server_binary, *args)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of this test's own; never the shared one, since tests break it."""
    server = PrivateRedis(binary("redis-server"))
    server.start()
    yield server
    server.close()


@pytest.fixture
def redis_apps() -> Iterator[Callable[..., Flask]]:
    """``build_app`` apps on a Redis; their subscriber threads and connections close after the test.

    ``make(redis_config, **config)`` takes the ``TENANT_CACHE_*`` keys of ``redis_config`` (as
    ``shared_redis`` yields it) and the other settings; the caller adds views or rows itself.
    """
    apps: list[Flask] = []

    def make(redis_config: Mapping[str, Any] | None = None, **config: Any) -> Flask:
        settings = {k: v for k, v in (redis_config or {}).items() if k.startswith("TENANT_CACHE_")}
        app = build_app(**settings, **config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        with app.app_context():
            app.extensions["test"]["ext"].close()


# -- deployments (Cluster, Sentinel, ACL, TLS, Valkey), started once per session ------------


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    """A 3-master Redis Cluster of the session's own."""
    yield from running(Cluster(binary("redis-server"), binary("redis-cli")))


@pytest.fixture(scope="session")
def sentinel_set() -> Iterator[SentinelSet]:
    """A master, a replica and three sentinels of the session's own (tests fail it over)."""
    yield from running(SentinelSet(binary("redis-server")))


@pytest.fixture(scope="session")
def acl_redis() -> Iterator[AclRedis]:
    """A redis-server on which tests add ACL users of their own."""
    yield from running(AclRedis(binary("redis-server")))


@pytest.fixture(scope="session")
def tls_files() -> Iterator[TlsFiles]:
    directory = Path(tempfile.mkdtemp(prefix="tenant-cache-tls-"))
    try:
        yield make_tls_files(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def tls_redis(tls_files: TlsFiles) -> Iterator[Node]:
    """A TLS-only redis-server (no client certificate asked for)."""
    yield from running(tls_server(tls_files, auth_clients=False))


@pytest.fixture(scope="session")
def mtls_redis(tls_files: TlsFiles) -> Iterator[Node]:
    """A TLS-only redis-server that requires a client certificate signed by the CA."""
    yield from running(tls_server(tls_files, auth_clients=True))


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[Node]:
    """A valkey-server of the session's own."""
    yield from running(Node(valkey_binary()))
