"""The Redis client of the extension: given by the app, checked at init_app, errors told."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask
from redis.cluster import RedisCluster

from example_app.redis_deployments import ACL_COMMANDS, acl_rules, tls_client
from flask_tenant_cache.redis_layer.client import PROBES, script_commands
from flask_tenant_cache.redis_layer.layer import SCRIPTS
from tests.helpers.app import ACME_ID, update_tenant_in
from tests.helpers.deployments import AclRedis, Cluster, Node, TlsFiles, unique_prefix
from tests.helpers.redis_server import PrivateRedis, listening, stats, wait_for

pytestmark = pytest.mark.redis


def ext(app: Flask) -> Any:
    return app.extensions["test"]["ext"]


def whoami(app: Flask, tenant: str = "acme") -> Any:
    response = app.test_client().get("/whoami", headers={"X-Tenant-ID": tenant})
    assert response.status_code == 200, response.data
    return response.json


def invalidation_reaches(first: Flask, second: Flask) -> None:
    """An invalidation made in ``first`` makes ``second`` load acme again."""
    listening(first, second)
    update_tenant_in(second, ACME_ID, name="Acme Renamed")
    with first.app_context():
        ext(first).invalidate("acme")
    wait_for(lambda: whoami(second)["name"] == "Acme Renamed", what="the invalidation")


# -- misconfiguration refused at init_app ------------------------------------------------------


def test_a_plain_client_on_a_cluster_node_is_refused(
    redis_apps: Callable[..., Flask], redis_cluster: Cluster
) -> None:
    with pytest.raises(
        ValueError, match=r"Redis Cluster node with a plain client: pass redis=RedisCluster"
    ):
        redis_apps({"TENANT_CACHE_REDIS_URL": redis_cluster.url})


def test_a_client_on_a_replica_is_refused(
    redis_apps: Callable[..., Flask], private_redis: PrivateRedis
) -> None:
    admin = redis.Redis.from_url(private_redis.url)
    admin.replicaof("127.0.0.1", 1)  # a replica of a master that is not there: read-only
    try:
        with pytest.raises(ValueError, match=r"read-only replica.*master_for"):
            redis_apps(private_redis.config)
    finally:
        admin.replicaof("NO", "ONE")
        admin.close()


def test_a_url_of_a_sentinel_is_refused(
    redis_apps: Callable[..., Flask], sentinel_set: Any
) -> None:
    url = f"redis://127.0.0.1:{sentinel_set.sentinels[0].port}/0"
    with pytest.raises(ValueError, match=r"Sentinel.*master_for"):
        redis_apps({"TENANT_CACHE_REDIS_URL": url})


@pytest.mark.parametrize("command", ["sadd", "exec", "evalsha", "info"])
def test_an_acl_user_without_a_command_is_refused_naming_it(
    redis_apps: Callable[..., Flask], acl_redis: AclRedis, command: str
) -> None:
    prefix = unique_prefix()
    rules = [r for r in acl_rules(prefix) if r != f"+{command}"]
    user, password = acl_redis.add_user(rules)
    expected = rf"the command {command.upper()} \(add \+{command}\)"
    with pytest.raises(ValueError, match=expected):
        redis_apps(
            {"TENANT_CACHE_REDIS_URL": acl_redis.url(user, password)},
            TENANT_CACHE_REDIS_PREFIX=prefix,
        )


def test_an_acl_user_without_the_channel_is_refused_naming_it(
    redis_apps: Callable[..., Flask], acl_redis: AclRedis
) -> None:
    prefix = unique_prefix()
    # The channel the app used to default to, outside the prefix: refused, and named.
    user, password = acl_redis.add_user(acl_rules(prefix))
    with pytest.raises(ValueError, match=r"the channel 'tenant-cache:invalidate'"):
        redis_apps(
            {"TENANT_CACHE_REDIS_URL": acl_redis.url(user, password)},
            TENANT_CACHE_REDIS_PREFIX=prefix,
            TENANT_CACHE_INVALIDATION_CHANNEL="tenant-cache:invalidate",
        )


def test_an_acl_user_without_the_keys_is_refused(
    redis_apps: Callable[..., Flask], acl_redis: AclRedis
) -> None:
    user, password = acl_redis.add_user(acl_rules("another-app"))
    with pytest.raises(ValueError, match=r"the keys \{tc-test"):
        redis_apps(
            {"TENANT_CACHE_REDIS_URL": acl_redis.url(user, password)},
            TENANT_CACHE_REDIS_PREFIX=unique_prefix(),
        )


def test_an_unreachable_redis_at_init_app_is_served_around(
    redis_apps: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flask_tenant_cache")
    app = redis_apps({"TENANT_CACHE_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert whoami(app)["slug"] == "acme"
    assert "Connection refused" in caplog.text  # the error's text, not its class alone


def test_a_callable_that_cannot_reach_a_cluster_is_served_around(
    redis_apps: Callable[..., Flask],
) -> None:
    # RedisCluster raises RedisClusterException (no RedisError) when no node answers.
    app = redis_apps(redis=lambda: RedisCluster(host="127.0.0.1", port=1, socket_timeout=0.2))
    assert whoami(app)["slug"] == "acme"
    assert stats(app)["redis"]["errors"] >= 1


def test_both_a_url_and_a_client_are_refused(redis_apps: Callable[..., Flask]) -> None:
    with pytest.raises(ValueError, match="give one of them"):
        redis_apps({"TENANT_CACHE_REDIS_URL": "redis://127.0.0.1:1/0"}, redis=redis.Redis)


def test_a_redis_that_is_no_client_is_refused(redis_apps: Callable[..., Flask]) -> None:
    with pytest.raises(TypeError, match="TENANT_CACHE_REDIS_URL"):
        redis_apps(redis="redis://127.0.0.1:1/0")


def test_every_command_of_the_scripts_is_checked_and_documented() -> None:
    commands = script_commands(SCRIPTS)
    assert {"get", "set", "del", "sadd", "smembers", "expire", "incr"} <= set(commands)
    for command in commands:
        assert command in PROBES
        assert f"+{command}" in ACL_COMMANDS


def _forked_child(app: Flask, built: list[int], conn: Any) -> None:
    try:
        whoami(app)
        wait_for(lambda: stats(app)["redis"]["subscribes"] >= 1, what="the child's subscription")
        conn.send((built, os.getpid(), stats(app)["redis"]["errors"]))
    except BaseException as exc:  # report, never hang the parent
        conn.send(repr(exc))


def test_the_callable_builds_a_client_in_each_process(
    redis_apps: Callable[..., Flask], private_redis: PrivateRedis
) -> None:
    built: list[int] = []

    def connect() -> redis.Redis:
        built.append(os.getpid())
        return redis.Redis.from_url(private_redis.url, socket_timeout=2)

    app = redis_apps(redis=connect)  # init_app here, as in gunicorn --preload
    assert built == [os.getpid()]
    context = multiprocessing.get_context("fork")
    parent_conn, child_conn = context.Pipe()
    child = context.Process(target=_forked_child, args=(app, built, child_conn))
    child.start()
    try:
        assert parent_conn.poll(20)
        child_built, child_pid, errors = parent_conn.recv()
        assert child_built == [os.getpid(), child_pid]  # called again, in the child
        assert errors == 0
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    assert built == [os.getpid()]  # the parent's client is untouched


# -- run time -----------------------------------------------------------------------------------


def test_an_acl_refusal_at_run_time_is_a_counted_configuration_error(
    redis_apps: Callable[..., Flask], acl_redis: AclRedis, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = unique_prefix()
    user, password = acl_redis.add_user(acl_rules(prefix))
    app = redis_apps(
        {"TENANT_CACHE_REDIS_URL": acl_redis.url(user, password)},
        TENANT_CACHE_REDIS_PREFIX=prefix,
    )
    admin = acl_redis.client()
    admin.execute_command("ACL", "SETUSER", user, "-evalsha")  # an operator's change
    caplog.set_level(logging.WARNING, logger="flask_tenant_cache")
    assert whoami(app)["slug"] == "acme"  # served around it
    redis_stats = stats(app)["redis"]
    assert redis_stats["configuration_errors"] == 1
    assert "NOPERM" in caplog.text or "no permissions" in caplog.text
    assert "evalsha" in caplog.text
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    admin.execute_command("ACL", "SETUSER", user, "+evalsha")
    admin.close()


def test_least_privilege_acl_user_with_the_default_channel(
    redis_apps: Callable[..., Flask], acl_redis: AclRedis
) -> None:
    prefix = unique_prefix()
    user, password = acl_redis.add_user(acl_rules(prefix))
    config = {"TENANT_CACHE_REDIS_URL": acl_redis.url(user, password)}
    first = redis_apps(config, TENANT_CACHE_REDIS_PREFIX=prefix)
    second = redis_apps(config, TENANT_CACHE_REDIS_PREFIX=prefix)
    invalidation_reaches(first, second)
    whoami(first, "globex")
    assert whoami(second, "globex")["slug"] == "globex"  # from L2
    with first.app_context():
        assert ext(first).set_rollout("v1")["scope"] == "cluster"
        ext(first).invalidate_all()
        ext(first).set_rollout(None)
    for app in (first, second):
        assert stats(app)["redis"]["errors"] == 0, stats(app)["redis"]
    assert stats(second)["v2"]["l2"]["l2_hits"] >= 1
    admin = acl_redis.client()
    denied = [e for e in admin.acl_log() if e["username"] == user]
    admin.close()
    assert denied == []


# -- TLS and Valkey ------------------------------------------------------------------------------


def test_tls(redis_apps: Callable[..., Flask], tls_redis: Node, tls_files: TlsFiles) -> None:
    connect = tls_client("127.0.0.1", tls_redis.port, ca=tls_files.ca)
    first, second = redis_apps(redis=connect), redis_apps(redis=connect)
    invalidation_reaches(first, second)
    assert stats(first)["redis"]["errors"] == 0


def test_mutual_tls(
    redis_apps: Callable[..., Flask], mtls_redis: Node, tls_files: TlsFiles
) -> None:
    connect = tls_client(
        "127.0.0.1",
        mtls_redis.port,
        ca=tls_files.ca,
        cert=tls_files.client_cert,
        key=tls_files.client_key,
    )
    first, second = redis_apps(redis=connect), redis_apps(redis=connect)
    invalidation_reaches(first, second)
    assert stats(first)["redis"]["errors"] == 0


def test_a_tls_error_is_logged_with_its_text(
    redis_apps: Callable[..., Flask], tls_redis: Node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flask_tenant_cache")
    app = redis_apps({"TENANT_CACHE_REDIS_URL": f"rediss://127.0.0.1:{tls_redis.port}/0"})
    assert whoami(app)["slug"] == "acme"
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    warnings = [r for r in caplog.records if "failed, serving around it" in r.getMessage()]
    assert len(warnings) == 1  # once per outage


def test_valkey(redis_apps: Callable[..., Flask], valkey_server: Node) -> None:
    config = {
        "TENANT_CACHE_REDIS_URL": f"redis://127.0.0.1:{valkey_server.port}/0",
        "TENANT_CACHE_REDIS_PREFIX": unique_prefix(),
    }
    first, second = redis_apps(config), redis_apps(config)
    invalidation_reaches(first, second)
    whoami(first, "globex")
    assert whoami(second, "globex")["slug"] == "globex"
    assert stats(second)["v2"]["l2"]["l2_hits"] >= 1
    assert stats(first)["redis"]["errors"] == 0
