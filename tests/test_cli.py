"""``flask tenant-cache ...`` through Flask's CLI runner."""

from __future__ import annotations

import json

import pytest
from flask import Flask

from flask_tenant_cache import Tenant, TenantCache, TenantIdentifier
from tests.helpers.app import ACME_ID, GLOBEX_ID


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def tid(value: str) -> dict[str, str]:
    return {"X-Tenant-ID": value}


def test_group_is_registered(runner):
    result = runner.invoke(args=["tenant-cache", "--help"])
    assert result.exit_code == 0
    for command in ("stats", "invalidate", "warm"):
        assert command in result.output


def test_stats_prints_json(runner, client, ext):
    client.get("/whoami", headers=tid("acme"))
    client.get("/whoami", headers=tid("acme"))
    result = runner.invoke(args=["tenant-cache", "stats"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["v2"]["entry_count"] == 1
    assert stats["v2"]["hits"] == 1
    assert stats["v2"]["misses"] == 1
    assert stats == json.loads(json.dumps(ext.stats()))


def test_stats_on_an_empty_cache(runner):
    result = runner.invoke(args=["tenant-cache", "stats"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["v2"]["entry_count"] == 0


@pytest.mark.parametrize("identifier", ["acme", "ACME", str(ACME_ID), ACME_ID.hex, "acme.test"])
def test_invalidate_prints_the_count_and_the_next_request_reloads(
    runner, client, loader, identifier
):
    client.get("/whoami", headers=tid("acme"))
    client.get("/whoami", headers={"Host": "acme.test"})
    client.get("/whoami", headers=tid("globex"))
    assert len(loader.calls) == 2  # the load by slug cached acme under its domain too
    result = runner.invoke(args=["tenant-cache", "invalidate", identifier])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "invalidated 1 entries"
    assert client.get("/whoami", headers=tid("acme")).json["slug"] == "acme"
    assert len(loader.calls) == 3
    client.get("/whoami", headers=tid("globex"))
    assert len(loader.calls) == 3  # globex stayed cached


def test_invalidate_nothing_cached(runner):
    result = runner.invoke(args=["tenant-cache", "invalidate", "acme"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "invalidated 0 entries"


def test_invalidate_all(runner, client, loader, ext):
    for slug in ("acme", "globex", "nope"):
        client.get("/whoami", headers=tid(slug))
    result = runner.invoke(args=["tenant-cache", "invalidate", "--all"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "invalidated 3 entries"
    assert ext.stats()["v2"]["entry_count"] == 0
    client.get("/whoami", headers=tid("acme"))
    assert len(loader.calls) == 4


@pytest.mark.parametrize("args", [[], ["acme", "--all"], ["--all", "acme"]])
def test_invalidate_needs_exactly_one_of_identifier_or_all(runner, client, ext, args):
    client.get("/whoami", headers=tid("acme"))
    result = runner.invoke(args=["tenant-cache", "invalidate", *args])
    assert result.exit_code == 2
    assert "IDENTIFIER or --all" in result.output
    assert ext.stats()["v2"]["entry_count"] == 1


@pytest.mark.parametrize("identifier", ["a b", "-x", "acme_corp", "bad..host", "www.example.com"])
def test_invalidate_invalid_identifier(runner, client, ext, identifier):
    client.get("/whoami", headers=tid("acme"))
    result = runner.invoke(args=["tenant-cache", "invalidate", "--", identifier])
    assert result.exit_code == 2, result.output
    assert "Invalid value for IDENTIFIER" in result.output
    assert "Traceback" not in result.output
    assert ext.stats()["v2"]["entry_count"] == 1


def test_invalidate_malformed_uuid_says_why(runner):
    result = runner.invoke(args=["tenant-cache", "invalidate", str(ACME_ID)[:-1]])
    assert result.exit_code == 2
    assert "malformed UUID" in result.output


def test_warm_stores_entries_then_requests_make_no_loader_call(runner, client, loader, ext):
    result = runner.invoke(args=["tenant-cache", "warm"])
    assert result.exit_code == 0, result.output
    resolvers = [version for version in ext.stats() if version in ("v1", "v2")]
    assert result.output.strip() == f"warmed {3 * len(resolvers)} entries"
    assert ext.stats()["v2"]["entry_count"] == 3  # three tenants, under 8 keys
    assert ext.stats()["v2"]["weighted_size"] == 8
    for headers, slug in [
        (tid("acme"), "acme"),
        (tid(str(GLOBEX_ID)), "globex"),
        ({"Host": "portal.initech.example"}, "initech"),
        ({"Host": "acme.example.com:8000"}, "acme"),
    ]:
        assert client.get("/whoami", headers=headers).json["slug"] == slug
    assert loader.calls == []


def test_warm_without_iter_tenants_fails_clearly():
    class LoadOnly:
        def __init__(self) -> None:
            self.calls: list[TenantIdentifier] = []

        def load(self, identifier: TenantIdentifier) -> Tenant | None:
            self.calls.append(identifier)
            return None

    app = Flask(__name__)
    app.config["TESTING"] = True
    loader = LoadOnly()
    TenantCache(app, loader=loader)
    result = app.test_cli_runner().invoke(args=["tenant-cache", "warm"])
    assert result.exit_code == 1
    assert "Error:" in result.output
    assert "iter_tenants" in result.output
    assert "Traceback" not in result.output
    assert loader.calls == []
