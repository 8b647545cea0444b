"""The example app: resolution by header and Host, and an admin edit served at once."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_app import create_app, db
from example_app.models import ACME_ID, GLOBEX_ID, INITECH_ID, Tenant, seed_demo_tenants

TOKEN = "example-test-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def example() -> Flask:
    return create_app(
        {"TESTING": True, "SQLALCHEMY_DATABASE_URI": "sqlite://", "EXAMPLE_ADMIN_TOKEN": TOKEN}
    )


@pytest.fixture
def web(example: Flask) -> FlaskClient:
    return example.test_client()


def slug_of(web: FlaskClient, **headers: str) -> Any:
    r = web.get("/", headers=headers)
    assert r.status_code == 200, r.data
    return r.json["tenant"]["slug"]


def test_seeded_once(example: Flask) -> None:
    with example.app_context():
        assert seed_demo_tenants() == 0
        assert db.session.query(Tenant).count() == 3


def test_by_header(web: FlaskClient) -> None:
    r = web.get("/", headers={"X-Tenant-ID": str(ACME_ID)})
    assert r.status_code == 200
    assert r.json["resolver"] == "v2"
    tenant = r.json["tenant"]
    assert (tenant["id"], tenant["slug"], tenant["name"]) == (
        str(ACME_ID),
        "acme",
        "Acme Corporation",
    )
    assert tenant["domains"] == []
    assert slug_of(web, **{"X-Tenant-ID": "GLOBEX"}) == "globex"
    assert slug_of(web, **{"X-Tenant-ID": str(INITECH_ID).upper()}) == "initech"


def test_by_host(web: FlaskClient) -> None:
    assert slug_of(web, Host="globex.localtest.me") == "globex"
    assert slug_of(web, Host="ACME.localtest.me:5000") == "acme"
    assert slug_of(web, Host="portal.initech.test") == "initech"


def test_html_page(web: FlaskClient) -> None:
    r = web.get("/", headers={"X-Tenant-ID": "acme", "Accept": "text/html"})
    assert r.status_code == 200
    assert r.mimetype == "text/html"
    assert b"<h1>Acme Corporation</h1>" in r.data


def test_unknown_and_invalid(web: FlaskClient) -> None:
    assert web.get("/", headers={"X-Tenant-ID": "nobody"}).status_code == 404
    assert web.get("/", headers={"Host": "nobody.localtest.me"}).status_code == 404
    assert web.get("/", headers={"Host": "unknown.example"}).status_code == 404
    r = web.get("/", headers={"X-Tenant-ID": "../etc"})
    assert r.status_code == 400
    assert r.json["error"] == "invalid_tenant_identifier"
    assert web.get("/", headers={"X-Tenant-ID": "a b"}).status_code == 400
    assert web.get("/", headers={"Host": "localhost"}).status_code == 400  # names no tenant


def test_health_needs_no_tenant(web: FlaskClient) -> None:
    r = web.get("/health", headers={"Host": "localhost"})
    assert r.status_code == 200
    assert r.json == {"ok": True}


def test_admin_needs_token(web: FlaskClient) -> None:
    url = f"/admin/tenants/{ACME_ID}"
    assert web.get(url).status_code == 401
    assert web.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert web.post(url, data={"name": "X", "slug": "x"}).status_code == 401
    r = web.get(url, headers=BEARER)
    assert r.status_code == 200
    assert b'value="Acme Corporation"' in r.data
    assert web.get(url, query_string={"token": TOKEN}).status_code == 200
    assert b"Globex Corporation" in web.get("/admin/tenants", headers=BEARER).data


def test_rename_is_served_at_once(web: FlaskClient) -> None:
    # Warm the cache: acme found by slug and id, "acme-inc" cached as not found.
    assert slug_of(web, **{"X-Tenant-ID": "acme"}) == "acme"
    assert slug_of(web, **{"X-Tenant-ID": str(ACME_ID)}) == "acme"
    assert web.get("/", headers={"X-Tenant-ID": "acme-inc"}).status_code == 404

    r = web.post(
        f"/admin/tenants/{ACME_ID}",
        headers=BEARER,
        data={"name": "Acme Inc", "slug": "acme-inc", "domain": "www.acme.test", "active": "on"},
    )
    assert r.status_code == 200, r.data
    assert b"Saved" in r.data

    r = web.get("/", headers={"X-Tenant-ID": "acme-inc"})
    assert r.status_code == 200
    assert r.json["tenant"]["name"] == "Acme Inc"
    assert web.get("/", headers={"X-Tenant-ID": "acme"}).status_code == 404
    assert web.get("/", headers={"Host": "acme.localtest.me"}).status_code == 404
    assert slug_of(web, **{"X-Tenant-ID": str(ACME_ID)}) == "acme-inc"
    assert slug_of(web, Host="www.acme.test") == "acme-inc"


def test_domain_change_and_deactivation(web: FlaskClient) -> None:
    assert slug_of(web, Host="portal.initech.test") == "initech"
    url = f"/admin/tenants/{INITECH_ID}"
    form = {"name": "Initech", "slug": "initech", "domain": "initech.example", "active": "off"}
    assert web.post(url, headers=BEARER, data=form).status_code == 200
    assert web.get("/", headers={"Host": "portal.initech.test"}).status_code == 404
    assert web.get("/", headers={"Host": "initech.example"}).status_code == 404  # inactive
    form["active"] = "on"
    assert web.post(url, headers=BEARER, data=form).status_code == 200
    assert slug_of(web, Host="initech.example") == "initech"


def test_bad_edits_change_nothing(example: Flask, web: FlaskClient) -> None:
    url = f"/admin/tenants/{GLOBEX_ID}"
    assert slug_of(web, **{"X-Tenant-ID": "globex"}) == "globex"
    bad = [
        ({"name": "G", "slug": "not a slug"}, 400),
        ({"name": "", "slug": "globex"}, 400),
        ({"name": "G", "slug": "globex", "domain": "x.localtest.me"}, 400),
        ({"name": "G", "slug": "acme"}, 409),
        ({"name": "G", "slug": "globex", "domain": "portal.initech.test"}, 409),
    ]
    for form, status in bad:
        r = web.post(url, headers=BEARER, data=form)
        assert r.status_code == status, (form, r.data)
    with example.app_context():
        row = db.session.get(Tenant, GLOBEX_ID)
        assert row is not None
        assert (row.slug, row.name, row.domain) == ("globex", "Globex Corporation", None)
    assert slug_of(web, **{"X-Tenant-ID": "globex"}) == "globex"


def test_stats_route_needs_token(web: FlaskClient) -> None:
    assert web.get("/_tenant-cache/stats").status_code == 401
    assert (
        web.get("/_tenant-cache/stats", headers={"Authorization": "Bearer no"}).status_code == 401
    )
    slug_of(web, **{"X-Tenant-ID": "acme"})
    r = web.get("/_tenant-cache/stats", headers=BEARER)
    assert r.status_code == 200
    assert r.json["v2"]["misses"] >= 1
    assert r.json["v2"]["entry_count"] >= 1
