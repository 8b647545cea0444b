"""The admin blueprint: GET {prefix}/stats and POST {prefix}/invalidate, over HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask, request

from tests.helpers.app import ACME_ID, ADMIN_TOKEN, build_app

STATS = "/_tenant-cache/stats"
INVALIDATE = "/_tenant-cache/invalidate"


def acme(client: Any) -> Any:
    return client.get("/whoami", headers={"X-Tenant-ID": "acme"})


def entry_count(app: Flask) -> int:
    with app.app_context():
        count: int = app.extensions["tenant_cache"].ext.stats()["v2"]["entry_count"]
    return count


# -- access control -------------------------------------------------------------------------------


def test_closed_without_token_or_authorizer():
    app = build_app(TENANT_CACHE_ADMIN_TOKEN=None)
    client = app.test_client()
    assert acme(client).status_code == 200
    for headers in ({}, {"Authorization": f"Bearer {ADMIN_TOKEN}"}, {"Authorization": "Bearer "}):
        r = client.get(STATS, headers=headers)
        assert r.status_code == 403
        assert r.mimetype == "application/json"
        body = json.loads(r.data)
        assert body["error"] == "admin_forbidden"
        assert "TENANT_CACHE_ADMIN_TOKEN" in body["message"]
        r = client.post(INVALIDATE, json={"all": True}, headers=headers)
        assert r.status_code == 403
    assert entry_count(app) == 1  # nothing was dropped


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong-token",
        f"Bearer {ADMIN_TOKEN[:-1]}",
        f"Bearer {ADMIN_TOKEN}x",
        f"Basic {ADMIN_TOKEN}",
        ADMIN_TOKEN,
        f"Token {ADMIN_TOKEN}",
    ],
)
def test_missing_or_wrong_token_is_401(client, ext, authorization):
    acme(client)
    headers = {} if authorization is None else {"Authorization": authorization}
    for r in (
        client.get(STATS, headers=headers),
        client.post(INVALIDATE, headers=headers, json={"all": True}),
    ):
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert r.mimetype == "application/json"
        assert json.loads(r.data)["error"] == "admin_auth_required"
    assert ext.stats()["v2"]["entry_count"] == 1


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_right_token_is_200(client, scheme):
    acme(client)
    r = client.get(STATS, headers={"Authorization": f"{scheme} {ADMIN_TOKEN}"})
    assert r.status_code == 200
    body = r.json
    assert body["v2"]["entry_count"] == 1
    assert body["v2"]["misses"] == 1
    assert body["v2"]["hits"] == 0


def test_stats_route_matches_ext_stats(client, ext, admin_headers):
    acme(client)
    acme(client)
    assert client.get(STATS, headers=admin_headers).json == ext.stats()


def test_authorizer_alone_grants_access():
    asked: list[str] = []

    def authorizer() -> bool:
        asked.append(request.path)
        return request.headers.get("X-Role") == "admin"

    app = build_app(TENANT_CACHE_ADMIN_TOKEN=None, admin_authorizer=authorizer)
    client = app.test_client()
    assert client.get(STATS, headers={"X-Role": "admin"}).status_code == 200
    assert client.post(INVALIDATE, json={"all": True}, headers={"X-Role": "admin"}).json == {
        "invalidated": 0
    }
    r = client.get(STATS, headers={"X-Role": "user"})
    assert r.status_code == 403
    assert json.loads(r.data)["error"] == "admin_forbidden"
    assert "WWW-Authenticate" not in r.headers
    assert client.get(STATS).status_code == 403
    assert asked == [STATS, INVALIDATE, STATS, STATS]


@pytest.mark.parametrize(("answer", "status"), [(True, 200), (False, 403)])
def test_authorizer_answer(answer, status):
    app = build_app(TENANT_CACHE_ADMIN_TOKEN=None, admin_authorizer=lambda: answer)
    assert app.test_client().get(STATS).status_code == status


def test_admin_authorizer_is_a_decorator(app, ext, client):
    @ext.admin_authorizer
    def allow() -> bool:
        return request.headers.get("X-Role") == "admin"

    assert callable(allow)
    assert allow.__name__ == "allow"
    assert client.get(STATS, headers={"X-Role": "admin"}).status_code == 200


def test_token_and_authorizer_together(app, ext, client, admin_headers):
    ext.admin_authorizer(lambda: False)
    # The token still opens the routes; without it, the authorizer's "no" is a 403.
    assert client.get(STATS, headers=admin_headers).status_code == 200
    assert client.get(STATS).status_code == 403
    assert client.get(STATS, headers={"Authorization": "Bearer wrong"}).status_code == 403


def test_custom_url_prefix():
    app = build_app(TENANT_CACHE_URL_PREFIX="/ops/tenants")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert client.get("/ops/tenants/stats", headers=headers).status_code == 200
    assert client.post("/ops/tenants/invalidate", json={"all": True}, headers=headers).json == {
        "invalidated": 0
    }
    assert client.get(STATS, headers=headers).status_code == 404
    assert client.post(INVALIDATE, json={"all": True}, headers=headers).status_code == 404
    # Still no tenant needed on the moved routes.
    assert app.extensions["test"]["loader"].calls == []


def test_admin_routes_need_no_tenant(client, loader, admin_headers):
    # TENANT_CACHE_REQUIRED is True and the default Host names no tenant.
    assert client.get("/whoami").status_code == 400
    assert client.get(STATS, headers=admin_headers).status_code == 200
    assert client.post(INVALIDATE, json={"all": True}, headers=admin_headers).status_code == 200
    assert (
        client.get(STATS, headers={**admin_headers, "Host": "nope.example.com"}).status_code == 200
    )
    assert loader.calls == []


def test_stats_is_get_only_and_invalidate_post_only(client, admin_headers):
    assert client.post(STATS, headers=admin_headers).status_code == 405
    assert client.get(INVALIDATE, headers=admin_headers).status_code == 405


# -- invalidate -----------------------------------------------------------------------------------


@pytest.mark.parametrize("identifier", ["acme", "ACME", str(ACME_ID), ACME_ID.hex, "acme.test"])
def test_invalidate_identifier(client, loader, admin_headers, identifier):
    acme(client)
    assert client.get("/whoami", headers={"Host": "acme.test"}).status_code == 200
    assert client.get("/whoami", headers={"X-Tenant-ID": "globex"}).status_code == 200
    assert len(loader.calls) == 2  # the load by slug cached acme under its domain too
    r = client.post(INVALIDATE, json={"identifier": identifier}, headers=admin_headers)
    assert r.status_code == 200
    assert r.json == {"invalidated": 1}
    assert acme(client).json == {
        "slug": "acme",
        "id": str(ACME_ID),
        "name": "Acme Corp",
        "version": "v2",
    }
    assert len(loader.calls) == 3
    # globex stayed cached.
    assert client.get("/whoami", headers={"X-Tenant-ID": "globex"}).status_code == 200
    assert len(loader.calls) == 3


def test_invalidate_picks_up_a_change(client, rename, admin_headers):
    assert acme(client).json["name"] == "Acme Corp"
    rename(ACME_ID, name="Acme Renamed")
    assert acme(client).json["name"] == "Acme Corp"
    assert client.post(INVALIDATE, json={"identifier": "acme"}, headers=admin_headers).json == {
        "invalidated": 1
    }
    assert acme(client).json["name"] == "Acme Renamed"


def test_invalidate_unknown_identifier_is_zero(client, admin_headers):
    r = client.post(INVALIDATE, json={"identifier": "nobody"}, headers=admin_headers)
    assert r.status_code == 200
    assert r.json == {"invalidated": 0}


def test_invalidate_all(client, loader, admin_headers):
    for slug in ("acme", "globex", "initech", "nope"):
        client.get("/whoami", headers={"X-Tenant-ID": slug})
    assert len(loader.calls) == 4
    r = client.post(INVALIDATE, json={"all": True}, headers=admin_headers)
    assert r.status_code == 200
    assert r.json == {"invalidated": 4}
    assert acme(client).status_code == 200
    assert len(loader.calls) == 5
    assert client.post(INVALIDATE, json={"all": True}, headers=admin_headers).json == {
        "invalidated": 1
    }


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("not json", "application/json"),
        ("{", "application/json"),
        ("", "application/json"),
        ('{"identifier": "acme"}', "text/plain"),
        ('{"identifier": "acme"}', None),
        ("identifier=acme", "application/x-www-form-urlencoded"),
        ("null", "application/json"),
        ('"acme"', "application/json"),
        ("5", "application/json"),
        ("true", "application/json"),
        ('["acme"]', "application/json"),
        ("[]", "application/json"),
        ("{}", "application/json"),
        ('{"identifier": 5}', "application/json"),
        ('{"identifier": null}', "application/json"),
        ('{"identifier": ["acme"]}', "application/json"),
        ('{"identifier": {"slug": "acme"}}', "application/json"),
        ('{"identifier": true}', "application/json"),
        ('{"all": false}', "application/json"),
        ('{"all": 1}', "application/json"),
        ('{"all": "true"}', "application/json"),
        ('{"all": null}', "application/json"),
        ('{"identifier": "acme", "all": true}', "application/json"),
        ('{"identifier": "acme", "extra": 1}', "application/json"),
        ('{"all": true, "extra": 1}', "application/json"),
        ('{"Identifier": "acme"}', "application/json"),
        ('{"identifier": "a b"}', "application/json"),
        ('{"identifier": ""}', "application/json"),
        ('{"identifier": "-acme"}', "application/json"),
        ('{"identifier": "www.example.com"}', "application/json"),
        ('{"identifier": "../../etc"}', "application/json"),
        ('{"identifier": "' + "x" * 400 + '"}', "application/json"),
        ('{"identifier": "acme\\u0000"}', "application/json"),
    ],
)
def test_malformed_body_is_400_json(client, ext, admin_headers, data, content_type):
    acme(client)
    r = client.post(INVALIDATE, data=data, content_type=content_type, headers=admin_headers)
    assert r.status_code == 400, r.data
    assert r.mimetype == "application/json"
    body = json.loads(r.data)
    assert body["error"] == "invalid_request"
    assert isinstance(body["message"], str)
    assert body["message"]
    assert ext.stats()["v2"]["entry_count"] == 1  # nothing dropped
