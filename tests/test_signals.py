"""The blinker signals: tenant_resolved and tenant_invalidated, with the app as sender."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from flask_tenant_cache import Tenant, TenantIdentifier, signals
from tests.helpers.app import ACME_ID, ADMIN_TOKEN, GLOBEX_ID, Recorder, build_app


@pytest.fixture
def resolved(app: Flask) -> Iterator[Recorder]:
    recorder = Recorder()
    with signals.tenant_resolved.connected_to(recorder, sender=app):
        yield recorder


@pytest.fixture
def invalidated(app: Flask) -> Iterator[Recorder]:
    recorder = Recorder()
    with signals.tenant_invalidated.connected_to(recorder, sender=app):
        yield recorder


def tid(value: str) -> dict[str, str]:
    return {"X-Tenant-ID": value}


# -- tenant_resolved ------------------------------------------------------------------------------


def test_resolved_sent_on_each_resolved_request(app, client, resolved):
    assert client.get("/whoami", headers=tid("ACME")).status_code == 200
    assert client.get("/whoami", headers=tid("acme")).status_code == 200  # a cache hit
    assert client.get("/whoami", headers={"Host": "portal.initech.example"}).status_code == 200
    assert len(resolved.events) == 3
    for sender, _ in resolved.events:
        assert sender is app
    _, first = resolved.events[0]
    assert set(first) == {"tenant", "identifier", "version"}
    assert isinstance(first["tenant"], Tenant)
    assert first["tenant"].id == ACME_ID
    assert first["identifier"] == TenantIdentifier("slug", "acme")
    assert first["version"] == "v2"
    assert resolved.events[1][1]["tenant"] == first["tenant"]
    _, third = resolved.events[2]
    assert third["tenant"].slug == "initech"
    assert third["identifier"] == TenantIdentifier("host", "portal.initech.example")


def test_resolved_is_sent_before_the_view_runs(app, client):
    order: list[str] = []

    @app.get("/order")
    def view() -> str:
        order.append("view")
        return "ok"

    def receiver(sender: Any, **kwargs: Any) -> None:
        order.append("signal")

    with signals.tenant_resolved.connected_to(receiver, sender=app):
        client.get("/order", headers=tid("acme"))
    assert order == ["signal", "view"]


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/whoami", tid("nope"), 404),
        ("/whoami", tid("a b"), 400),
        ("/whoami", {}, 400),
        ("/health", tid("acme"), 200),
        ("/no/such/page", tid("acme"), 404),
    ],
)
def test_resolved_not_sent_without_a_resolved_tenant(client, resolved, path, headers, status):
    assert client.get(path, headers=headers).status_code == status
    assert resolved.events == []


def test_resolved_not_sent_on_loader_failure(client, loader, resolved):
    loader.fail = RuntimeError("db down")
    assert client.get("/whoami", headers=tid("acme")).status_code == 503
    assert resolved.events == []


def test_resolved_not_sent_for_an_inactive_tenant(client, rename, resolved):
    rename(GLOBEX_ID, active=False)
    assert client.get("/whoami", headers=tid("globex")).status_code == 404
    assert resolved.events == []


def test_resolved_sender_is_the_app_that_served(app, client):
    other = build_app()
    mine, theirs = Recorder(), Recorder()
    with (
        signals.tenant_resolved.connected_to(mine, sender=app),
        signals.tenant_resolved.connected_to(theirs, sender=other),
    ):
        other.test_client().get("/whoami", headers=tid("globex"))
    assert mine.events == []
    assert [(s, kw["tenant"].slug) for s, kw in theirs.events] == [(other, "globex")]


# -- tenant_invalidated ---------------------------------------------------------------------------


def test_invalidated_sent_on_invalidate(app, client, ext, invalidated):
    client.get("/whoami", headers=tid("acme"))
    client.get("/whoami", headers={"Host": "acme.test"})
    assert ext.invalidate("ACME") == 1  # one tenant, under its uuid, slug and domain
    assert ext.invalidate(str(GLOBEX_ID)) == 0
    assert invalidated.events == [
        (app, {"identifier": TenantIdentifier("slug", "acme"), "dropped": 1}),
        (app, {"identifier": TenantIdentifier("uuid", str(GLOBEX_ID)), "dropped": 0}),
    ]


def test_invalidated_sent_on_invalidate_all(app, client, ext, invalidated):
    for slug in ("acme", "globex", "nope"):
        client.get("/whoami", headers=tid(slug))
    assert ext.invalidate_all() == 3
    assert ext.invalidate_all() == 0
    assert invalidated.events == [
        (app, {"identifier": None, "dropped": 3}),
        (app, {"identifier": None, "dropped": 0}),
    ]


def test_invalidated_not_sent_for_a_malformed_identifier(ext, invalidated):
    with pytest.raises(ValueError, match="whitespace"):
        ext.invalidate("a b")
    assert invalidated.events == []


def test_invalidated_sent_by_the_admin_route_and_invalidate_all(app, ext, client, invalidated):
    client.get("/whoami", headers=tid("acme"))
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert client.post(
        "/_tenant-cache/invalidate", json={"identifier": "acme"}, headers=headers
    ).json == {"invalidated": 1}
    ext.invalidate_all()
    assert invalidated.events == [
        (app, {"identifier": TenantIdentifier("slug", "acme"), "dropped": 1}),
        (app, {"identifier": None, "dropped": 0}),
    ]
