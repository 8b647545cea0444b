"""Tests of the testing kit: ``flask_tenant_cache.testing`` and its pytest plugin."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from flask import Flask, jsonify

from flask_tenant_cache import Tenant, TenantCache, TenantIdentifier, current_tenant
from flask_tenant_cache.testing import (
    FakeClock,
    InMemoryTenantLoader,
    TenantClient,
    expect_loader_calls,
    loader_calls,
    tenant_headers,
    tenant_host,
)

ACME = Tenant(
    id=uuid.UUID("5f0c4f2a-1b2c-4d3e-8f9a-0b1c2d3e4f5a"),
    slug="acme",
    name="Acme",
    domains=("acme.test",),
)
GLOBEX = Tenant(id=42, slug="globex", name="Globex")

pytest_plugins = ["pytester"]


def make_app(loader: InMemoryTenantLoader, clock: FakeClock, **config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update({"TENANT_CACHE_BASE_DOMAINS": ["example.com"], **config})
    TenantCache(app, loader=loader, timer=clock)
    app.test_client_class = TenantClient

    @app.get("/")
    def index() -> Any:
        return jsonify(slug=current_tenant.slug if current_tenant else None)

    return app


@pytest.fixture
def kit() -> tuple[Flask, InMemoryTenantLoader, FakeClock]:
    loader, clock = InMemoryTenantLoader([ACME, GLOBEX]), FakeClock()
    return make_app(loader, clock), loader, clock


def test_in_memory_loader_by_every_alias() -> None:
    loader = InMemoryTenantLoader([ACME, GLOBEX])
    assert loader.load(TenantIdentifier.uuid(ACME.id)) == ACME
    assert loader.load(TenantIdentifier.slug("acme")) == ACME
    assert loader.load(TenantIdentifier.host("ACME.test")) == ACME
    assert loader.load(TenantIdentifier.id(42)) == GLOBEX
    assert loader.load(TenantIdentifier.slug("nobody")) is None
    assert len(loader.calls) == 5
    loader.remove(42)
    assert loader.load(TenantIdentifier.slug("globex")) is None
    assert sorted(t.slug for t in loader.iter_tenants()) == ["acme"]


def test_client_sends_requests_as_a_tenant(kit) -> None:
    app, _, _ = kit
    client = app.test_client()
    assert client.get("/", tenant=ACME).json == {"slug": "acme"}
    assert client.get("/", tenant="globex").json == {"slug": "globex"}
    assert client.get("/", tenant=ACME.id).json == {"slug": "acme"}
    assert client.get("/", tenant=ACME, via="host").json == {"slug": "acme"}
    assert client.get("/").status_code == 400
    client.tenant = GLOBEX
    assert client.get("/").json == {"slug": "globex"}
    # An explicit header wins over the client's tenant.
    assert client.get("/", headers={"X-Tenant-ID": "acme"}).json == {"slug": "acme"}


def test_headers_and_host_follow_the_config() -> None:
    app = make_app(
        InMemoryTenantLoader([ACME]),
        FakeClock(),
        TENANT_CACHE_HEADER="X-Org",
        TENANT_CACHE_BASE_DOMAINS=[],
    )
    assert tenant_headers(ACME, app=app) == {"X-Org": "acme"}
    assert tenant_host(ACME, app=app) == "acme.test"
    with pytest.raises(ValueError, match="header"):
        tenant_host(GLOBEX, app=app)
    assert app.test_client().get("/", tenant=ACME, via="host").json == {"slug": "acme"}


def test_fake_clock_expires_the_ttl_and_the_idle_timeout(kit) -> None:
    app, _, clock = kit
    client = app.test_client()
    with expect_loader_calls(1, app):
        client.get("/", tenant="acme")
        clock.advance(59)  # inside the 60 s idle timeout: a hit renews it
        client.get("/", tenant="acme")
    with expect_loader_calls(1, app):
        clock.advance(61)  # idle for longer than TENANT_CACHE_IDLE_TIMEOUT
        client.get("/", tenant="acme")
    app.config["TENANT_CACHE_USE_V2"] = False  # v1: TTL only
    with expect_loader_calls(1, app):
        client.get("/", tenant="acme")
        clock.advance(299)
        client.get("/", tenant="acme")
    with expect_loader_calls(1, app):
        clock.advance(2)  # past TENANT_CACHE_TTL
        client.get("/", tenant="acme")
    with pytest.raises(ValueError, match="back"):
        clock.advance(-1)


def test_loader_calls_counts_coalesced_concurrent_requests(kit) -> None:
    app, _, _ = kit
    barrier = threading.Barrier(8)

    def request() -> None:
        barrier.wait()
        assert app.test_client().get("/", tenant="globex").status_code == 200

    with loader_calls(app) as calls:
        threads = [threading.Thread(target=request) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    # Misses share loads: at most one per request, at least one in all.
    assert 1 <= calls.count <= 8
    assert set(calls.identifiers) == {TenantIdentifier.slug("globex")}


def test_expect_loader_calls_names_what_was_loaded(kit) -> None:
    app, _, _ = kit
    expected = r"expected 0 loader call\(s\), got 1: slug:acme"
    with pytest.raises(AssertionError, match=expected), expect_loader_calls(0, app):
        app.test_client().get("/", tenant="acme")
    # The spy is gone after the block, even when it failed.
    with app.app_context():
        assert app.extensions["tenant_cache"].resolvers["v2"].loader is kit[1]


def test_loader_failure_is_a_503(kit) -> None:
    app, loader, _ = kit
    loader.fail = ConnectionError("database down")
    assert app.test_client().get("/", tenant="acme").status_code == 503


# -- the pytest plugin --------------------------------------------------------------------------

USER_TESTS = """
import pytest
from flask import Flask, jsonify

from flask_tenant_cache import Tenant, TenantCache, current_tenant


@pytest.fixture
def app(tenant_loader, tenant_clock):
    tenant_loader.put(Tenant(id=7, slug="acme", name="Acme"))
    app = Flask(__name__)
    app.config["TENANT_CACHE_BASE_DOMAINS"] = ["example.com"]
    TenantCache(app, loader=tenant_loader, timer=tenant_clock)

    @app.get("/")
    def index():
        return jsonify(name=current_tenant.name)

    return app


def test_as_a_tenant(tenant_client, tenant_loader_calls, tenant_clock):
    with tenant_loader_calls() as calls:
        assert tenant_client.get("/", tenant="acme").json == {"name": "Acme"}
        assert tenant_client.get("/", tenant="acme", via="host").json == {"name": "Acme"}
    assert calls.count == 1
    tenant_clock.advance(3600)
    with tenant_loader_calls() as calls:
        tenant_client.get("/", tenant="acme")
    assert calls.count == 1
"""


def test_plugin_fixtures_in_an_apps_own_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_plugin_is_inert_without_its_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_plain="""
import sys

def test_nothing_of_the_kit_loaded():
    assert "flask_tenant_cache.testing" not in sys.modules

def test_app_fixture_not_required():
    assert True
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    listed = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    listed.stdout.fnmatch_lines(
        [
            "*tenant_loader -- *",
            "*tenant_clock -- *",
            "*tenant_client -- *",
            "*tenant_loader_calls -- *",
        ]
    )
