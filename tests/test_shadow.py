"""Shadow comparison: sampled requests resolved again by the other version, off the response."""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, current_app

from flask_tenant_cache import Tenant, TenantIdentifier, signals
from flask_tenant_cache.errors import TenantLookupError
from flask_tenant_cache.shadow import ShadowComparer, outcome_of
from tests.helpers import redis_server
from tests.helpers.app import ACME_ID, CountingLoader, Recorder, build_app

ACME = {"X-Tenant-ID": "acme"}


#: Poll a predicate until it holds; fail after 5 seconds.
wait_for = functools.partial(redis_server.wait_for, timeout=5.0)


def in_shadow() -> bool:
    return threading.current_thread().name.startswith("tenant-cache-shadow")


@pytest.fixture
def make_app() -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def make(**config: Any) -> Flask:
        config.setdefault("TENANT_CACHE_SHADOW_PERCENT", 100)
        app = build_app(**config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["tenant_cache"].shadow.close()


def shadow_stats(app: Flask) -> dict[str, Any]:
    result: dict[str, Any] = app.extensions["tenant_cache"].stats()["shadow"]
    return result


def loader_of(app: Flask) -> CountingLoader:
    result: CountingLoader = app.extensions["test"]["loader"]
    return result


def patch_shadow_load(
    monkeypatch: pytest.MonkeyPatch, app: Flask, shadow_load: Callable[..., Any]
) -> None:
    """Make the loader call ``shadow_load(original, ident)`` in shadow threads only."""
    loader = loader_of(app)
    original = loader.load

    def load(ident: TenantIdentifier) -> Tenant | None:
        if in_shadow():
            result: Tenant | None = shadow_load(original, ident)
            return result
        return original(ident)

    monkeypatch.setattr(loader, "load", load)


def rename_in_db(app: Flask, **values: Any) -> None:
    """Change acme's row without invalidating the cache."""
    db, model = app.extensions["test"]["db"], app.extensions["test"]["model"]
    with app.app_context():
        row = db.session.get(model, ACME_ID)
        for key, value in values.items():
            setattr(row, key, value)
        db.session.commit()


@pytest.mark.parametrize(("use_v2", "primary", "other"), [(True, "v2", "v1"), (False, "v1", "v2")])
def test_every_request_is_shadowed_by_the_other_version(
    make_app: Callable[..., Flask], use_v2: bool, primary: str, other: str
) -> None:
    app = make_app(TENANT_CACHE_USE_V2=use_v2)
    client = app.test_client()
    for _ in range(3):
        response = client.get("/whoami", headers=ACME)
        assert response.status_code == 200
        assert response.json["version"] == primary
    wait_for(lambda: shadow_stats(app)["matched"] == 3)
    stats = shadow_stats(app)
    assert stats["submitted"] == 3
    assert stats["mismatched"] == stats["dropped"] == stats["slow"] == stats["failed"] == 0
    assert stats["lookups"] == {primary: 0, other: 3}
    resolver_stats = app.extensions["tenant_cache"].stats()[other]
    # The other version really resolved each one (two workers may both miss, coalesced).
    assert resolver_stats["hits"] + resolver_stats["misses"] == 3
    assert resolver_stats["misses"] >= 1


def test_close_drains_the_pool_and_a_later_submit_builds_a_new_one(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app()
    client = app.test_client()
    shadow = app.extensions["tenant_cache"].shadow
    for _ in range(2):
        assert client.get("/whoami", headers=ACME).status_code == 200
    shadow.close()
    # close() waited for every queued shadow: no polling needed.
    assert shadow_stats(app)["matched"] == 2

    # A request after close() is still shadowed (a new pool), not dropped.
    assert client.get("/whoami", headers=ACME).status_code == 200
    wait_for(lambda: shadow_stats(app)["matched"] == 3)
    assert shadow_stats(app)["dropped"] == 0
    assert shadow_stats(app)["submitted"] == 3


def test_stale_v1_cache_is_a_mismatch_logged_and_signalled(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(TENANT_CACHE_USE_V2=False, TENANT_CACHE_SHADOW_PERCENT=0)
    client = app.test_client()
    assert client.get("/whoami", headers=ACME).json["name"] == "Acme Corp"  # v1 caches it
    rename_in_db(app, name="Acme Renamed")
    app.config.update(TENANT_CACHE_USE_V2=True, TENANT_CACHE_SHADOW_PERCENT=100)
    recorder = Recorder()
    caplog.set_level(logging.WARNING, logger="flask_tenant_cache")
    with signals.shadow_mismatch.connected_to(recorder, sender=app):
        response = client.get("/whoami", headers=ACME)
        # The user gets the primary (v2, fresh from the database) result.
        assert response.status_code == 200
        assert response.json == {
            "slug": "acme",
            "id": str(ACME_ID),
            "name": "Acme Renamed",
            "version": "v2",
        }
        wait_for(lambda: len(recorder.events) == 1)
    stats = shadow_stats(app)
    assert stats["mismatched"] == 1
    assert stats["matched"] == 0
    sender, event = recorder.events[0]
    assert sender is app
    assert event["identifier"] == TenantIdentifier.slug("acme")
    assert event["primary_version"] == "v2"
    assert event["shadow_version"] == "v1"
    assert isinstance(event["primary"], Tenant)
    assert event["primary"].name == "Acme Renamed"
    assert isinstance(event["shadow"], Tenant)
    assert event["shadow"].name == "Acme Corp"
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "shadow mismatch" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert "Acme Renamed" in warnings[0]
    assert "Acme Corp" in warnings[0]


def test_a_failing_shadow_is_a_mismatch_and_the_request_still_succeeds(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()

    def fail(_original: Any, _ident: TenantIdentifier) -> None:
        raise ConnectionError("database down, for the shadow only")

    patch_shadow_load(monkeypatch, app, fail)
    recorder = Recorder()
    with signals.shadow_mismatch.connected_to(recorder, sender=app):
        response = app.test_client().get("/whoami", headers=ACME)
        assert response.status_code == 200
        assert response.json["name"] == "Acme Corp"
        wait_for(lambda: len(recorder.events) == 1)
    _sender, event = recorder.events[0]
    assert isinstance(event["primary"], Tenant)
    assert event["shadow"] == "TenantLookupError"
    stats = shadow_stats(app)
    assert stats["mismatched"] == 1
    assert stats["failed"] == 0  # a lookup error is an outcome, not a shadow failure


def test_a_failing_primary_is_compared_with_a_succeeding_shadow(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    loader = loader_of(app)
    original = loader.load

    def load(ident: TenantIdentifier) -> Tenant | None:
        if not in_shadow():
            raise ConnectionError("database down, for the request only")
        return original(ident)

    monkeypatch.setattr(loader, "load", load)
    recorder = Recorder()
    with signals.shadow_mismatch.connected_to(recorder, sender=app):
        assert app.test_client().get("/whoami", headers=ACME).status_code == 503
        wait_for(lambda: len(recorder.events) == 1)
    _sender, event = recorder.events[0]
    assert event["primary"] == "TenantLookupError"
    assert isinstance(event["shadow"], Tenant)
    assert event["shadow"].slug == "acme"


def test_the_response_does_not_wait_for_the_shadow(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(TENANT_CACHE_SHADOW_TIMEOUT=30)
    gate, entered = threading.Event(), threading.Event()

    def blocked(original: Any, ident: TenantIdentifier) -> Tenant | None:
        entered.set()
        assert gate.wait(10)
        result: Tenant | None = original(ident)
        return result

    patch_shadow_load(monkeypatch, app, blocked)
    try:
        response = app.test_client().get("/whoami", headers=ACME)
        assert response.status_code == 200
        # The request is done while the shadow is still held inside its loader.
        assert entered.wait(5)
        assert not gate.is_set()
        assert shadow_stats(app)["matched"] == 0
    finally:
        gate.set()
    wait_for(lambda: shadow_stats(app)["matched"] == 1)


def test_a_full_pool_drops_and_counts_and_requests_still_succeed(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(TENANT_CACHE_SHADOW_TIMEOUT=30)
    gate = threading.Event()

    def blocked(original: Any, ident: TenantIdentifier) -> Tenant | None:
        assert gate.wait(10)
        result: Tenant | None = original(ident)
        return result

    patch_shadow_load(monkeypatch, app, blocked)
    client = app.test_client()
    try:
        # The default pool keeps 64 shadows queued or running; the rest are dropped.
        statuses = [client.get("/whoami", headers=ACME).status_code for _ in range(70)]
        assert statuses == [200] * 70
        stats = shadow_stats(app)
        assert stats["submitted"] == 64
        assert stats["dropped"] == 6
    finally:
        gate.set()
    wait_for(lambda: shadow_stats(app)["matched"] == 64)
    # Slots are given back: once drained, a new request is shadowed again.
    assert client.get("/whoami", headers=ACME).status_code == 200
    wait_for(lambda: shadow_stats(app)["matched"] == 65)
    assert shadow_stats(app)["dropped"] == 6


def test_max_pending_bounds_a_comparer_built_directly(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    state = app.extensions["tenant_cache"]
    loader = loader_of(app)
    loader.hold()
    comparer = ShadowComparer(app, state.resolvers, timeout=30, workers=1, max_pending=2)
    ident = TenantIdentifier.slug("acme")
    try:
        for _ in range(5):
            comparer.submit("v2", ident, None)
        assert comparer.stats()["submitted"] == 2
        assert comparer.stats()["dropped"] == 3
    finally:
        loader.gate.set()
        comparer.close()
    # Both ran after the gate opened; acme exists, so "not found" was a mismatch.
    assert comparer.stats()["mismatched"] == 2


def test_submit_to_a_pool_shutting_down_is_dropped(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    state = app.extensions["tenant_cache"]
    comparer = ShadowComparer(app, state.resolvers, timeout=30, max_pending=1)
    comparer._pool().shutdown(wait=True)  # as if another thread were closing it
    comparer.submit("v2", TenantIdentifier.slug("acme"), None)
    assert comparer.stats()["dropped"] == 1
    # Its slot was given back, and it never counted as a submitted shadow.
    assert comparer.stats()["submitted"] == 0
    comparer.close()
    comparer.submit("v2", TenantIdentifier.slug("acme"), None)
    comparer.close()
    assert comparer.stats()["submitted"] == 1
    assert comparer.stats()["mismatched"] == 1


def test_a_slow_shadow_is_counted_and_not_compared(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(TENANT_CACHE_SHADOW_TIMEOUT=0.05)

    def slow_and_wrong(_original: Any, _ident: TenantIdentifier) -> None:
        time.sleep(0.2)
        raise ConnectionError("would be a mismatch if it were compared")

    patch_shadow_load(monkeypatch, app, slow_and_wrong)
    recorder = Recorder()
    with signals.shadow_mismatch.connected_to(recorder, sender=app):
        assert app.test_client().get("/whoami", headers=ACME).status_code == 200
        wait_for(lambda: shadow_stats(app)["slow"] == 1)
        app.extensions["tenant_cache"].shadow.close()
    stats = shadow_stats(app)
    assert stats["mismatched"] == stats["matched"] == stats["failed"] == 0
    assert recorder.events == []


def test_zero_percent_submits_nothing(make_app: Callable[..., Flask]) -> None:
    app = make_app(TENANT_CACHE_SHADOW_PERCENT=0)
    client = app.test_client()
    for _ in range(20):
        assert client.get("/whoami", headers=ACME).status_code == 200
    app.extensions["tenant_cache"].shadow.close()
    stats = shadow_stats(app)
    assert stats["submitted"] == stats["dropped"] == 0
    assert stats["lookups"] == {"v1": 0, "v2": 0}
    # v1 was never asked.
    assert app.extensions["tenant_cache"].stats()["v1"]["misses"] == 0


def test_a_percentage_samples_about_that_share(make_app: Callable[..., Flask]) -> None:
    app = make_app(TENANT_CACHE_SHADOW_PERCENT=50)
    client = app.test_client()
    random.seed(20240611)
    for _ in range(400):
        assert client.get("/whoami", headers=ACME).status_code == 200
    app.extensions["tenant_cache"].shadow.close()
    stats = shadow_stats(app)
    sampled = stats["submitted"] + stats["dropped"]
    assert 120 <= sampled <= 280
    assert stats["matched"] == stats["submitted"]


def test_served_counts_exclude_shadow_lookups(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    client = app.test_client()
    for _ in range(5):
        assert client.get("/whoami", headers=ACME).status_code == 200
    app.config["TENANT_CACHE_USE_V2"] = False
    for _ in range(2):
        assert client.get("/whoami", headers=ACME).status_code == 200
    app.extensions["tenant_cache"].shadow.close()
    stats = app.extensions["tenant_cache"].stats()
    assert stats["shadow"]["lookups"] == {"v1": 5, "v2": 2}
    assert stats["rollout"]["served"] == {"v1": 2, "v2": 5}


def test_an_exception_inside_the_shadow_is_counted_failed(
    make_app: Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app()
    v1 = app.extensions["tenant_cache"].resolvers["v1"]

    def broken(_ident: TenantIdentifier) -> Tenant | None:
        raise RuntimeError("a bug in the shadow resolver")

    monkeypatch.setattr(v1, "resolve", broken)
    response = app.test_client().get("/whoami", headers=ACME)
    assert response.status_code == 200
    assert response.json["name"] == "Acme Corp"
    app.extensions["tenant_cache"].shadow.close()
    stats = shadow_stats(app)
    assert stats["failed"] == 1
    assert stats["matched"] == stats["mismatched"] == 0
    assert any("shadow comparison failed" in r.getMessage() for r in caplog.records)


def test_a_raising_mismatch_receiver_is_counted_failed(make_app: Callable[..., Flask]) -> None:
    app = make_app(TENANT_CACHE_USE_V2=False, TENANT_CACHE_SHADOW_PERCENT=0)
    client = app.test_client()
    assert client.get("/whoami", headers=ACME).status_code == 200
    rename_in_db(app, name="Acme Renamed")
    app.config.update(TENANT_CACHE_USE_V2=True, TENANT_CACHE_SHADOW_PERCENT=100)

    def receiver(_sender: Any, **_kwargs: Any) -> None:
        raise RuntimeError("a broken receiver")

    with signals.shadow_mismatch.connected_to(receiver, sender=app):
        assert client.get("/whoami", headers=ACME).status_code == 200
        app.extensions["tenant_cache"].shadow.close()
    stats = shadow_stats(app)
    assert stats["mismatched"] == 1
    assert stats["failed"] == 1


def test_outcome_of_turns_lookup_errors_into_names_only() -> None:
    def lookup_error() -> Tenant | None:
        raise TenantLookupError("down")

    def other_error() -> Tenant | None:
        raise KeyError("bug")

    assert outcome_of(lookup_error) == "TenantLookupError"
    assert outcome_of(lambda: None) is None
    with pytest.raises(KeyError):
        outcome_of(other_error)


def test_mismatch_receivers_run_in_the_app_context(make_app: Callable[..., Flask]) -> None:
    app = make_app(TENANT_CACHE_USE_V2=False, TENANT_CACHE_SHADOW_PERCENT=0)
    client = app.test_client()
    client.get("/whoami", headers=ACME)
    rename_in_db(app, name="Acme Renamed")
    app.config.update(TENANT_CACHE_USE_V2=True, TENANT_CACHE_SHADOW_PERCENT=100)
    seen: list[Any] = []

    def receiver(sender: Flask, **event: Any) -> None:
        seen.append(current_app.name)

    with signals.shadow_mismatch.connected_to(receiver, sender=app):
        client.get("/whoami", headers=ACME)
        wait_for(lambda: seen)
    assert seen == [app.name]


def test_the_mismatch_log_leaves_the_tenant_s_extra_out(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(TENANT_CACHE_USE_V2=False, TENANT_CACHE_SHADOW_PERCENT=0)
    client = app.test_client()
    client.get("/whoami", headers=ACME)
    rename_in_db(app, name="Acme Renamed")
    app.config.update(TENANT_CACHE_USE_V2=True, TENANT_CACHE_SHADOW_PERCENT=100)
    caplog.set_level(logging.WARNING, logger="flask_tenant_cache")
    client.get("/whoami", headers=ACME)
    logged = wait_for(
        lambda: [r.getMessage() for r in caplog.records if "shadow mismatch" in r.getMessage()]
    )
    message = logged[0]
    assert "(name differ)" in message
    assert "extra" not in message
