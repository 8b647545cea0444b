"""The example app: resolution by header and Host, and an admin edit served at once."""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa
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


@pytest.mark.parametrize("host", ["acme.localtest.me", "portal.initech.test"])
def test_a_header_cannot_move_a_host_to_another_tenant(web: FlaskClient, host: str) -> None:
    r = web.get("/", headers={"Host": host, "X-Tenant-ID": "globex"})
    assert (r.status_code, r.json["error"]) == (400, "conflicting_tenant_identifiers")
    r = web.get("/", headers={"Host": "portal.initech.test", "X-Tenant-ID": "initech"})
    assert (r.status_code, r.json["tenant"]["slug"]) == (200, "initech")


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
    # Never from the query string: URLs end up in browser history and server logs.
    assert web.get(url, query_string={"token": TOKEN}).status_code == 401
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


# -- the admin dashboard: browser sign-in, CSRF, invalidate, rollout, stats -------------------

HTML = {"Accept": "text/html"}
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def log_in(web: FlaskClient) -> str:
    """Sign in through the form, as a browser does; return the page's CSRF token."""
    r = web.post("/admin/login", data={"token": TOKEN, "next": "/admin/tenants"})
    assert r.status_code == 303
    assert r.headers["Location"] == "/admin/tenants"
    page = web.get("/admin/tenants", headers=HTML)
    assert page.status_code == 200
    match = CSRF_RE.search(page.text)
    assert match is not None
    return match.group(1)


def served(web: FlaskClient, slug: str) -> Any:
    r = web.get("/", headers={"X-Tenant-ID": slug})
    assert r.status_code == 200, r.data
    return r.json


def test_browser_is_sent_to_sign_in(web: FlaskClient) -> None:
    r = web.get("/admin/tenants", headers=HTML)
    assert r.status_code == 302
    assert r.headers["Location"] == "/admin/login?next=/admin/tenants"
    assert web.get("/admin/tenants").status_code == 401  # not a browser: no redirect
    assert b'name="token"' in web.get("/admin/login").data
    r = web.post("/admin/login", data={"token": "wrong", "next": "/admin/tenants"})
    assert r.status_code == 401
    assert b"wrong token" in r.data
    assert web.get("/admin/tenants", headers=HTML).status_code == 302  # still signed out


def test_sign_in_and_out(web: FlaskClient) -> None:
    csrf = log_in(web)
    page = web.get("/admin/tenants", headers=HTML).text
    assert "Globex Corporation" in page
    assert TOKEN not in page  # the token never lands in a page or a link
    r = web.post("/admin/logout", data={"csrf_token": csrf})
    assert r.status_code == 303
    assert web.get("/admin/tenants", headers=HTML).status_code == 302


def test_sign_in_never_redirects_off_site(web: FlaskClient) -> None:
    for target in ["https://evil.example/", "//evil.example/admin/", "/health", "/\\evil"]:
        r = web.post("/admin/login", data={"token": TOKEN, "next": target})
        assert r.status_code == 303
        assert r.headers["Location"] == "/admin/tenants", target


def test_session_forms_need_the_csrf_token(example: Flask, web: FlaskClient) -> None:
    csrf = log_in(web)
    form = {"name": "Evil", "slug": "evil", "domain": ""}
    for token in [None, "", "forged"]:
        data = form if token is None else {**form, "csrf_token": token}
        assert web.post(f"/admin/tenants/{ACME_ID}", data=data).status_code == 400
        assert web.post("/admin/rollout", data={**data, "rollout": "v1"}).status_code == 400
    assert served(web, "acme")["resolver"] == "v2"
    with example.app_context():
        row = db.session.get(Tenant, ACME_ID)
        assert row is not None
        assert row.name == "Acme Corporation"
    r = web.post(f"/admin/tenants/{ACME_ID}", data={**form, "csrf_token": csrf})
    assert r.status_code == 200
    assert served(web, "evil")["tenant"]["name"] == "Evil"


def test_a_new_admin_token_ends_sessions(example: Flask, web: FlaskClient) -> None:
    log_in(web)
    example.config["EXAMPLE_ADMIN_TOKEN"] = "another-token-0123456789"
    assert web.get("/admin/tenants", headers=HTML).status_code == 302


def test_edit_through_the_browser_form_is_auto_invalidated(web: FlaskClient) -> None:
    csrf = log_in(web)
    assert served(web, "globex")["tenant"]["name"] == "Globex Corporation"
    assert web.get("/", headers={"X-Tenant-ID": "globex-2"}).status_code == 404  # cached
    form = {"name": "Globex 2", "slug": "globex-2", "domain": "", "active": ["off", "on"]}
    r = web.post(f"/admin/tenants/{GLOBEX_ID}", data={**form, "csrf_token": csrf})
    assert r.status_code == 200
    assert b"invalidated on commit" in r.data
    assert served(web, "globex-2")["tenant"]["name"] == "Globex 2"
    assert web.get("/", headers={"X-Tenant-ID": "globex"}).status_code == 404


def test_the_edit_view_relies_on_the_listener() -> None:
    # Without TENANT_CACHE_AUTO_INVALIDATE the same edit leaves the cached tenant served:
    # the view no longer invalidates by hand, the commit listener does it.
    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": "sqlite://",
            "EXAMPLE_ADMIN_TOKEN": TOKEN,
            "TENANT_CACHE_AUTO_INVALIDATE": False,
        }
    )
    web = app.test_client()
    assert served(web, "acme")["tenant"]["name"] == "Acme Corporation"
    form = {"name": "Acme Inc", "slug": "acme", "domain": ""}
    assert web.post(f"/admin/tenants/{ACME_ID}", headers=BEARER, data=form).status_code == 200
    assert served(web, "acme")["tenant"]["name"] == "Acme Corporation"


def test_invalidate_button(example: Flask, web: FlaskClient) -> None:
    csrf = log_in(web)
    assert served(web, "acme")["tenant"]["name"] == "Acme Corporation"
    with example.app_context():
        # A bulk UPDATE bypasses the ORM's change tracking, hence the listener.
        db.session.execute(sa.update(Tenant).where(Tenant.id == ACME_ID).values(name="Renamed"))
        db.session.commit()
    assert served(web, "acme")["tenant"]["name"] == "Acme Corporation"  # stale, as documented

    r = web.post(f"/admin/tenants/{ACME_ID}/invalidate", data={"csrf_token": csrf})
    assert r.status_code == 303
    assert served(web, "acme")["tenant"]["name"] == "Renamed"
    page = web.get("/admin/tenants", headers=HTML).text
    assert re.search(r"Renamed: [1-9]\d* cache entries invalidated\.", page), page
    # The bearer token works for scripts, without a session or a CSRF token.
    api = example.test_client()
    assert api.post(f"/admin/tenants/{ACME_ID}/invalidate", headers=BEARER).status_code == 303
    assert api.post(f"/admin/tenants/{ACME_ID}/invalidate").status_code == 401


def effective_rollout(web: FlaskClient) -> str:
    match = re.search(r'id="rollout-effective">([^<]*)<', web.get("/admin/tenants").text)
    assert match is not None
    return match.group(1)


def test_rollout_controls(web: FlaskClient) -> None:
    csrf = log_in(web)
    assert served(web, "acme")["resolver"] == "v2"
    assert effective_rollout(web) == "every request on v2 (TENANT_CACHE_USE_V2)"

    def choose(rollout: str, percent: str = "") -> int:
        data = {"csrf_token": csrf, "rollout": rollout, "percent": percent}
        return web.post("/admin/rollout", data=data).status_code

    assert choose("v1") == 303
    assert "Rollout override set on this process." in web.get("/admin/tenants").text  # flashed
    assert effective_rollout(web) == "every request on v1 (forced)"
    assert {served(web, slug)["resolver"] for slug in ["acme", "globex", "initech"]} == {"v1"}

    assert choose("v2") == 303
    assert served(web, "acme")["resolver"] == "v2"
    assert choose("percent", "0") == 303
    assert effective_rollout(web) == "0% of tenants on v2, the rest on v1 (forced)"
    assert served(web, "acme")["resolver"] == "v1"
    assert choose("percent", "100") == 303
    assert served(web, "acme")["resolver"] == "v2"

    for bad in ["150", "-1", "lots", ""]:
        r = web.post(
            "/admin/rollout", data={"csrf_token": csrf, "rollout": "percent", "percent": bad}
        )
        assert r.status_code == 400, bad
        assert b'class="error"' in r.data
    assert choose("everything") == 400
    assert effective_rollout(web) == "100% of tenants on v2, the rest on v1 (forced)"

    assert choose("v1") == 303
    assert choose("clear") == 303
    assert effective_rollout(web) == "every request on v2 (TENANT_CACHE_USE_V2)"
    assert served(web, "acme")["resolver"] == "v2"


def stats_table(web: FlaskClient) -> dict[str, tuple[str, str]]:
    html = web.get("/admin/tenants").text
    table = html[html.index('<table id="stats">') :]
    rows = re.findall(
        r'<tr><td>([^<]+)</td><td class="num">([^<]*)</td><td class="num">([^<]*)<', table
    )
    return {label: (v1, v2) for label, v1, v2 in rows}


def test_stats_are_shown(example: Flask, web: FlaskClient) -> None:
    log_in(web)
    before = stats_table(web)
    assert before["Requests served"] == ("0", "0")
    for _ in range(3):
        served(web, "acme")
    assert web.get("/", headers={"X-Tenant-ID": "nobody"}).status_code == 404
    with example.app_context():
        example.extensions["tenant_cache"].set_rollout("v1")
    served(web, "globex")
    served(web, "globex")

    table = stats_table(web)
    assert table["Requests served"] == ("2", "4")
    assert table["Hits"] == ("1", "2")
    assert table["Misses"] == ("1", "2")
    assert table["Not-found hits"] == ("0", "-")
    assert table["Loads"] == ("1", "2")
    assert table["Entries"] == ("1 + 0 not found", "2")
    assert table["Hit rate"][0] == "50.0%"
    assert set(table) >= {"Invalidated", "Evicted", "Expired", "Coalesced loads", "Slowest load"}
