"""``flask tenant-cache ...`` through Flask's CLI runner: each command reaches the servers
through Redis, or says it cannot and exits non-zero."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from flask_tenant_cache import Tenant, TenantCache, TenantIdentifier
from tests.helpers.app import ACME_ID, GLOBEX_ID, update_tenant_in
from tests.helpers.redis_server import PrivateRedis, listening, stats, wait_for


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def tid(value: str) -> dict[str, str]:
    return {"X-Tenant-ID": value}


def cli(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["tenant-cache", *args])


def test_group_is_registered(runner):
    result = runner.invoke(args=["tenant-cache", "--help"])
    assert result.exit_code == 0
    for command in ("stats", "invalidate", "warm", "rollout"):
        assert command in result.output


# -- usage errors (before anything is reached) --------------------------------------------------


@pytest.mark.parametrize("args", [[], ["acme", "--all"]])
def test_invalidate_needs_exactly_one_of_identifier_or_all(runner, args):
    result = runner.invoke(args=["tenant-cache", "invalidate", *args])
    assert result.exit_code == 2
    assert "IDENTIFIER or --all" in result.output


@pytest.mark.parametrize("identifier", ["a b", "-acme", "acme..test", "x" * 300])
def test_invalidate_invalid_identifier(runner, identifier):
    result = runner.invoke(args=["tenant-cache", "invalidate", "--", identifier])
    assert result.exit_code == 2, result.output
    assert "Invalid value for IDENTIFIER" in result.output
    assert "Traceback" not in result.output


def test_invalidate_malformed_uuid_says_why(runner):
    result = runner.invoke(args=["tenant-cache", "invalidate", str(ACME_ID)[:-1]])
    assert result.exit_code == 2
    assert "malformed UUID" in result.output


def test_warm_without_iter_tenants_fails_clearly():
    class LoadOnly:
        def load(self, identifier: TenantIdentifier) -> Tenant | None:
            return None

    app = Flask(__name__)
    TenantCache(app, loader=LoadOnly())
    result = app.test_cli_runner().invoke(args=["tenant-cache", "warm"])
    assert result.exit_code == 1
    assert "iter_tenants" in result.output
    assert "Traceback" not in result.output


# -- without Redis: nothing reaches the servers, and each command says so -----------------------


@pytest.mark.parametrize(
    "args", [["invalidate", "acme"], ["invalidate", "--all"], ["rollout", "v1"], ["rollout"]]
)
def test_without_redis_commands_fail_and_say_why(app, args):
    result = cli(app, *args)
    assert result.exit_code == 1, result.output
    assert "cannot reach the running servers" in result.stderr
    assert "TENANT_CACHE_REDIS_URL is not set" in result.stderr


def test_warm_without_redis_reports_what_it_read_and_fails(app, loader):
    result = cli(app, "warm")
    assert result.exit_code == 1, result.output
    assert "read 3 tenants from the loader" in result.stdout
    assert "this process keeps v1: 3 of 3 tenants, v2: 3 of 3 tenants" in result.stdout
    assert "nothing reached the running servers: TENANT_CACHE_REDIS_URL is not set" in (
        result.stderr
    )


def test_warm_reports_what_stays_resident_against_what_it_read():
    from tests.helpers.app import build_app

    app = build_app(TENANT_CACHE_MAX_ENTRIES=2, TENANT_CACHE_V1_MAX_ENTRIES=1)
    result = cli(app, "warm")
    assert "read 3 tenants" in result.stdout
    assert "v1: 1 of 3 tenants, v2: 2 of 3 tenants" in result.stdout


def test_stats_says_whose_counters_it_shows(app):
    result = cli(app, "stats")
    assert result.exit_code == 0, result.stderr
    assert "counters of this command's own process" in result.stderr
    assert "use --server URL" in result.stderr
    assert set(json.loads(result.stdout)) >= {"v1", "v2", "rollout"}


@pytest.fixture
def serving(app: Flask) -> Iterator[str]:
    """``app`` served over HTTP on a free port, as a running server."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


def test_stats_of_a_running_server(app, serving):
    import urllib.request

    request = urllib.request.Request(serving + "/whoami", headers=tid("globex"))
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.load(response)["slug"] == "globex"
    result = cli(app, "stats", "--server", serving)
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["v2"]["misses"] == 1
    assert shown["rollout"]["served"] == {"v1": 0, "v2": 1}


def test_stats_of_an_unreachable_server_fails_cleanly(app):
    result = cli(app, "stats", "--server", "http://127.0.0.1:9")
    assert result.exit_code == 1
    assert "could not read http://127.0.0.1:9/_tenant-cache/stats" in result.stderr


# -- with Redis: the commands reach every process -----------------------------------------------


@pytest.mark.redis
def test_warm_fills_the_l2_that_every_process_reads(redis_apps, shared_redis):
    cli_app, server = redis_apps(shared_redis), redis_apps(shared_redis)
    result = cli(cli_app, "warm")
    assert result.exit_code == 0, result.stderr
    assert "stored 3 tenants in Redis: every process reads them on a miss" in result.stdout
    for headers in (tid("acme"), tid(str(GLOBEX_ID)), {"Host": "portal.initech.example"}):
        assert server.test_client().get("/whoami", headers=headers).status_code == 200
    assert server.extensions["test"]["loader"].calls == []  # all from the L2


@pytest.mark.redis
def test_invalidate_reaches_every_process(redis_apps, shared_redis):
    cli_app, server = redis_apps(shared_redis), redis_apps(shared_redis)
    listening(server)
    update_tenant_in(server, ACME_ID, name="Acme Renamed")
    result = cli(cli_app, "invalidate", "acme")
    assert result.exit_code == 0, result.stderr
    assert "slug:acme: deleted from Redis and announced to every process" in result.stdout

    def renamed() -> bool:
        response = server.test_client().get("/whoami", headers=tid(str(ACME_ID)))
        return response.json["name"] == "Acme Renamed"

    wait_for(renamed, what="the invalidation on the server")
    result = cli(cli_app, "invalidate", "--all")
    assert result.exit_code == 0, result.stderr
    wait_for(lambda: stats(server)["v2"]["entry_count"] == 0, what="the flush on the server")


@pytest.mark.redis
def test_rollout_reaches_every_process_and_is_read_back(redis_apps, shared_redis):
    cli_app, server = redis_apps(shared_redis), redis_apps(shared_redis)
    listening(server)
    result = cli(cli_app, "rollout", "v1")
    assert result.exit_code == 0, result.stderr
    assert "rollout override set to v1 (cluster): every process follows it" in result.stdout
    wait_for(lambda: stats(server)["rollout"]["override"] == "v1", what="the override")
    fresh = redis_apps(shared_redis)  # another command, later: reads what Redis holds
    shown = json.loads(cli(fresh, "rollout").stdout)
    assert (shown["mode"], shown["override"]) == ("override", "v1")
    assert "served" not in shown
    assert cli(cli_app, "rollout", "clear").exit_code == 0
    wait_for(lambda: stats(server)["rollout"]["override"] is None, what="the lifted override")


@pytest.mark.redis
@pytest.mark.parametrize(
    "args",
    [["invalidate", "acme"], ["invalidate", "--all"], ["rollout", "v1"], ["rollout"], ["warm"]],
)
def test_with_redis_down_commands_fail_and_say_so(redis_apps, private_redis: PrivateRedis, args):
    app = redis_apps(private_redis.config)
    private_redis.kill()
    result = cli(app, *args)
    assert result.exit_code == 1, result.output
    assert "Redis is unreachable" in result.stderr
    assert "Traceback" not in result.output
