"""The Prometheus metrics: the /metrics route, the collector, and the missing extras."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flask_tenant_cache import TenantCache
from tests.helpers.app import ADMIN_TOKEN, CountingLoader, build_app
from tests.helpers.redis_server import wait_for
from tests.helpers.resolvers import ACME, MemoryLoader

METRICS = "/_tenant-cache/metrics"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

Samples = dict[tuple[str, str | None], float]


def samples(text: str) -> Samples:
    """``{(sample name, version label or None): value}`` of a Prometheus text body."""
    return {
        (sample.name, sample.labels.get("version")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def types(text: str) -> dict[str, str]:
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def serve(app: Flask, slug: str, status: int = 200) -> None:
    response = app.test_client().get("/whoami", headers={"X-Tenant-ID": slug})
    assert response.status_code == status, response.data


def scrape(app: Flask) -> str:
    response = app.test_client().get(METRICS, headers=ADMIN)
    assert response.status_code == 200, response.data
    text: str = response.get_data(as_text=True)
    return text


@pytest.fixture
def app() -> Flask:
    return build_app()


def test_metrics_need_the_admin_token(app: Flask) -> None:
    serve(app, "acme")
    client = app.test_client()
    for headers in ({}, {"Authorization": "Bearer wrong-token"}):
        response = client.get(METRICS, headers=headers)
        assert response.status_code == 401
        assert b"tenant_cache_hits" not in response.data


def test_metrics_are_the_prometheus_text_format(app: Flask) -> None:
    response = app.test_client().get(METRICS, headers=ADMIN)
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert "version=0.0.4" in response.content_type
    kinds = types(response.get_data(as_text=True))
    assert kinds["tenant_cache_hits"] == "counter"
    assert kinds["tenant_cache_load_seconds"] == "counter"
    assert kinds["tenant_cache_entries"] == "gauge"
    assert kinds["tenant_cache_load_seconds_max"] == "gauge"


def test_metrics_count_v2_then_v1_after_a_live_switch(app: Flask) -> None:
    for slug in ("acme", "acme", "acme"):
        serve(app, slug)
    serve(app, "nobody", 404)
    values = samples(scrape(app))
    assert values[("tenant_cache_hits_total", "v2")] == 2
    assert values[("tenant_cache_misses_total", "v2")] == 2
    assert values[("tenant_cache_loads_total", "v2")] == 2
    assert values[("tenant_cache_load_errors_total", "v2")] == 0
    assert values[("tenant_cache_entries", "v2")] == 2
    assert values[("tenant_cache_hits_total", "v1")] == 0
    assert values[("tenant_cache_misses_total", "v1")] == 0
    assert ("tenant_cache_negative_hits_total", "v2") not in values  # v1 only
    assert ("tenant_cache_entries", "v1") not in values  # v2 only

    app.config["TENANT_CACHE_USE_V2"] = False
    for slug in ("acme", "acme", "globex"):
        serve(app, slug)
    for _ in range(3):
        serve(app, "nobody", 404)
    values = samples(scrape(app))
    assert values[("tenant_cache_hits_total", "v1")] == 1
    assert values[("tenant_cache_negative_hits_total", "v1")] == 2
    assert values[("tenant_cache_misses_total", "v1")] == 3
    assert values[("tenant_cache_loads_total", "v1")] == 3
    assert values[("tenant_cache_positive_entries", "v1")] == 2
    assert values[("tenant_cache_negative_entries", "v1")] == 1
    assert values[("tenant_cache_hits_total", "v2")] == 2  # untouched since the switch
    assert values[("tenant_cache_misses_total", "v2")] == 2
    assert len(app.extensions["test"]["loader"].calls) == 5


def test_invalidations_and_loader_errors_reach_the_metrics(app: Flask) -> None:
    serve(app, "acme")
    app.extensions["test"]["loader"].fail = RuntimeError("database down")
    serve(app, "globex", 503)
    with app.app_context():
        assert app.extensions["test"]["ext"].invalidate("acme") == 1
    values = samples(scrape(app))
    assert values[("tenant_cache_load_errors_total", "v2")] == 1
    assert values[("tenant_cache_invalidations_total", "v2")] == 1
    assert values[("tenant_cache_invalidations_total", "v1")] == 1
    assert values[("tenant_cache_entries", "v2")] == 0


def test_the_collector_registers_in_a_fresh_registry_and_reads_at_scrape_time(
    app: Flask,
) -> None:
    for slug in ("acme", "acme", "acme"):
        serve(app, slug)
    with app.app_context():
        collector = app.extensions["test"]["ext"].prometheus_collector()
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()  # outside any app context
    values = samples(text)
    assert values == samples(scrape(app))
    assert values[("tenant_cache_hits_total", "v2")] == 2
    assert values[("tenant_cache_misses_total", "v2")] == 1
    assert values[("tenant_cache_entries", "v2")] == 1
    assert registry.get_sample_value("tenant_cache_loads_total", {"version": "v2"}) == 1
    serve(app, "acme")
    assert registry.get_sample_value("tenant_cache_hits_total", {"version": "v2"}) == 3


def test_two_apps_have_their_own_collectors() -> None:
    first, second = build_app(), build_app()
    serve(first, "acme")
    serve(first, "acme")
    registries = []
    for app in (first, second):
        with app.app_context():
            registry = CollectorRegistry()
            registry.register(app.extensions["test"]["ext"].prometheus_collector())
            registries.append(registry)
    hits = [r.get_sample_value("tenant_cache_hits_total", {"version": "v2"}) for r in registries]
    assert hits == [1, 0]


# -- with Redis -------------------------------------------------------------------------------


@pytest.fixture
def redis_app(shared_redis: dict[str, Any]) -> Iterator[Flask]:
    settings = {k: v for k, v in shared_redis.items() if k.startswith("TENANT_CACHE_")}
    app = build_app(**settings)
    yield app
    with app.app_context():
        app.extensions["test"]["ext"].close()


@pytest.mark.redis
def test_bus_metrics_appear_with_redis(redis_app: Flask) -> None:
    serve(redis_app, "acme")  # starts the subscriber; an L2 miss, then a load
    wait_for(
        lambda: samples(scrape(redis_app)).get(("tenant_cache_bus_subscribes_total", None)),
        what="the subscription",
    )
    before = samples(scrape(redis_app))
    assert before[("tenant_cache_bus_published_total", None)] == 0
    with redis_app.app_context():
        redis_app.extensions["test"]["ext"].invalidate("acme")
    text = scrape(redis_app)
    values = samples(text)
    assert values[("tenant_cache_bus_published_total", None)] == 1
    assert values[("tenant_cache_bus_errors_total", None)] == 0
    assert values[("tenant_cache_bus_pending", None)] == 0
    assert values[("tenant_cache_l2_misses_total", "v2")] == 1
    assert values[("tenant_cache_l2_errors_total", "v2")] == 0
    kinds = types(text)
    assert kinds["tenant_cache_bus_published"] == "counter"
    assert kinds["tenant_cache_bus_pending"] == "gauge"


def test_no_bus_metrics_without_redis(app: Flask) -> None:
    serve(app, "acme")
    assert not [name for name in types(scrape(app)) if name.startswith("tenant_cache_bus_")]


# -- missing extras -----------------------------------------------------------------------------


def test_without_prometheus_client_the_route_answers_501(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve(app, "acme")
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "flask_tenant_cache.prometheus", raising=False)
    client = app.test_client()
    response = client.get(METRICS, headers=ADMIN)
    assert response.status_code == 501
    assert "flask-tenant-cache[prometheus]" in response.get_data(as_text=True)
    assert client.get(METRICS).status_code == 401  # still closed to strangers
    assert client.get("/_tenant-cache/stats", headers=ADMIN).status_code == 200
    with app.app_context(), pytest.raises(ImportError, match=r"flask-tenant-cache\[prometheus\]"):
        app.extensions["test"]["ext"].prometheus_collector()


def test_a_redis_url_without_redis_installed_fails_init_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    for name in [m for m in sys.modules if m.startswith("flask_tenant_cache.redis_layer")]:
        monkeypatch.delitem(sys.modules, name)
    app = Flask(__name__)
    app.config["TENANT_CACHE_REDIS_URL"] = "redis://127.0.0.1:6379/0"
    ext = TenantCache(loader=CountingLoader(MemoryLoader(ACME)))
    with pytest.raises(ImportError, match=r"flask-tenant-cache\[redis\]"):
        ext.init_app(app)
    assert "tenant_cache" not in app.extensions  # nothing half registered


def test_rollout_shadow_and_stale_metrics_are_exported(admin_headers: dict[str, str]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from tests.helpers.app import build_app

    app = build_app(TENANT_CACHE_SHADOW_PERCENT=0)
    client = app.test_client()
    for slug in ("acme", "acme", "globex"):
        client.get("/whoami", headers={"X-Tenant-ID": slug})
    body = client.get("/_tenant-cache/metrics", headers=admin_headers).get_data(as_text=True)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    assert samples[("tenant_cache_served_total", (("version", "v2"),))] == 3
    assert samples[("tenant_cache_served_total", (("version", "v1"),))] == 0
    assert samples[("tenant_cache_provider_errors_total", ())] == 0
    assert samples[("tenant_cache_shadow_submitted_total", ())] == 0
    assert samples[("tenant_cache_stale_serves_total", (("version", "v2"),))] == 0
    assert samples[("tenant_cache_max_negative_entries", (("version", "v2"),))] == 1000


def test_identification_counters_are_exported() -> None:
    app = build_app(TENANT_CACHE_HEADER_TRUSTED=["10.0.0.0/8"])
    client = app.test_client()
    conflict = {"X-Tenant-ID": "globex", "Host": "acme.example.com"}
    assert (
        client.get(
            "/whoami", headers=conflict, environ_base={"REMOTE_ADDR": "10.0.0.2"}
        ).status_code
        == 400
    )
    assert client.get("/whoami", headers=conflict).status_code == 403
    found = samples(scrape(app))
    assert found[("tenant_cache_identification_conflicts_total", None)] == 1
    assert found[("tenant_cache_identification_untrusted_refused_total", None)] == 1
    assert found[("tenant_cache_identification_untrusted_ignored_total", None)] == 0
    assert found[("tenant_cache_identification_second_lookups_total", None)] == 1
