"""The before_request flow of ``TenantCache`` and its public methods, through HTTP."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest
from flask import Blueprint, Flask, jsonify
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Response

from flask_tenant_cache import (
    FlagContext,
    InvalidIdentifier,
    Tenant,
    TenantCache,
    TenantIdentifier,
    TenantNotFound,
    current_resolver_version,
    current_tenant,
)
from tests.helpers.app import ACME_ID, GLOBEX_ID, INITECH_ID, CountingLoader, build_app

# -- helpers --------------------------------------------------------------------------------------


def tid(value: str) -> dict[str, str]:
    return {"X-Tenant-ID": value}


def host(value: str) -> dict[str, str]:
    return {"Host": value}


# -- resolution by header and Host ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        str(ACME_ID),
        str(ACME_ID).upper(),
        ACME_ID.hex,
        ACME_ID.hex.upper(),
        "5F0c4F2a-1B2c-4D3e-8F9a-0B1c2D3e4F5a",
    ],
)
def test_header_uuid_in_any_case_with_or_without_hyphens(client, loader, value):
    r = client.get("/whoami", headers=tid(value))
    assert r.status_code == 200, r.data
    assert r.json == {"slug": "acme", "id": str(ACME_ID), "name": "Acme Corp", "version": "v2"}
    assert loader.calls == [TenantIdentifier("uuid", str(ACME_ID))]


def test_uuid_spellings_share_one_cache_entry(client, loader):
    for value in (ACME_ID.hex, str(ACME_ID).upper(), str(ACME_ID)):
        assert client.get("/whoami", headers=tid(value)).json["slug"] == "acme"
    assert len(loader.calls) == 1


@pytest.mark.parametrize("value", ["globex", "GLOBEX", "Globex"])
def test_header_slug(client, loader, value):
    r = client.get("/whoami", headers=tid(value))
    assert r.status_code == 200, r.data
    assert r.json["id"] == str(GLOBEX_ID)
    assert loader.calls == [TenantIdentifier("slug", "globex")]


def test_header_carrying_a_host_name(client, loader):
    r = client.get("/whoami", headers=tid("portal.initech.example"))
    assert r.json["id"] == str(INITECH_ID)
    assert loader.calls == [TenantIdentifier("host", "portal.initech.example")]


BY_SUBDOMAIN = ("globex", TenantIdentifier("slug", "globex"))
BY_CUSTOM_DOMAIN = ("initech", TenantIdentifier("host", "portal.initech.example"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("globex.example.com", BY_SUBDOMAIN),
        ("globex.example.com:8080", BY_SUBDOMAIN),
        ("GLOBEX.Example.COM:443", BY_SUBDOMAIN),
        ("globex.example.com.", BY_SUBDOMAIN),
        ("portal.initech.example", BY_CUSTOM_DOMAIN),
        ("Portal.Initech.Example:8443", BY_CUSTOM_DOMAIN),
        ("portal.initech.example.", BY_CUSTOM_DOMAIN),
    ],
)
def test_host_subdomain_of_base_domain_or_custom_domain(client, loader, value, expected):
    slug, identifier = expected
    r = client.get("/whoami", headers=host(value))
    assert r.status_code == 200, r.data
    assert r.json["slug"] == slug
    assert loader.calls == [identifier]


def test_host_subdomain_and_header_slug_share_one_entry(client, loader):
    assert client.get("/whoami", headers=host("acme.example.com:5000")).json["slug"] == "acme"
    assert client.get("/whoami", headers=tid("acme")).json["slug"] == "acme"
    assert len(loader.calls) == 1


def test_header_takes_precedence_over_host_when_the_first_wins():
    app = build_app(TENANT_CACHE_ON_CONFLICT="first")
    loader = app.extensions["test"]["loader"]
    r = app.test_client().get(
        "/whoami", headers={"X-Tenant-ID": "globex", "Host": "acme.example.com"}
    )
    assert r.json["slug"] == "globex"
    assert loader.calls == [TenantIdentifier("slug", "globex")]


def test_invalid_header_is_not_rescued_by_a_valid_host(client, loader):
    r = client.get("/whoami", headers={"X-Tenant-ID": "a b", "Host": "acme.example.com"})
    assert r.status_code == 400
    assert loader.calls == []


def test_custom_header_name():
    app = build_app(TENANT_CACHE_HEADER="X-Org")
    client = app.test_client()
    assert client.get("/whoami", headers={"X-Org": "globex"}).json["slug"] == "globex"
    # The default header means nothing now: no identifier at all.
    r = client.get("/whoami", headers=tid("globex"))
    assert r.status_code == 400
    assert r.json["error"] == "missing_tenant_identifier"


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        tid("a b"),
        tid("-acme"),
        tid("acme-"),
        tid("acme_corp"),
        tid("x" * 64),
        tid("5f0c4f2a-1b2c-4d3e-8f9a-0b1c2d3e4f5"),
        tid("../etc/passwd"),
        tid("acme%00"),
        tid("bad..host.example"),
        tid("www.example.com"),
        host("bad_label.example.com"),
        host("acme.example.com:http"),
    ],
)
def test_invalid_identifier_is_400_json_and_never_loaded(app, loader, headers):
    # Straight to the WSGI app, as a server sends it: Werkzeug's test client before 3.1.8
    # parses the Host itself (for its cookie jar, or to check it is trusted) and raises on a
    # port that is not a number before the app can answer.
    environ = EnvironBuilder(path="/whoami", headers=headers).get_environ()
    r = Response.from_app(app, environ, buffered=True)
    assert r.status_code == 400
    assert r.mimetype == "application/json"
    body = json.loads(r.data)
    assert set(body) == {"error", "message"}
    assert body["error"] == "invalid_tenant_identifier"
    assert isinstance(body["message"], str)
    assert body["message"]
    assert loader.calls == []


def test_unknown_tenant_is_404_json(client, loader):
    r = client.get("/whoami", headers=tid("nope"))
    assert r.status_code == 404
    assert r.mimetype == "application/json"
    assert json.loads(r.data)["error"] == "tenant_not_found"
    assert json.loads(r.data)["message"]
    # The not-found answer is cached too: no second query for the same unknown name.
    assert client.get("/whoami", headers=tid("nope")).status_code == 404
    assert loader.calls == [TenantIdentifier("slug", "nope")]


def test_unknown_custom_domain_is_404(client, loader):
    assert client.get("/whoami", headers=host("unknown.example.org")).status_code == 404
    assert loader.calls == [TenantIdentifier("host", "unknown.example.org")]


def test_inactive_tenant_is_404(client, loader, ext, rename):
    assert client.get("/whoami", headers=tid("acme")).status_code == 200
    rename(ACME_ID, active=False)
    # Still cached as active until the cache is told.
    assert client.get("/whoami", headers=tid("acme")).status_code == 200
    assert ext.invalidate("acme") == 1
    r = client.get("/whoami", headers=tid("acme"))
    assert r.status_code == 404
    assert json.loads(r.data)["error"] == "tenant_not_found"
    assert len(loader.calls) == 2


def test_tenant_inactive_from_the_start_is_404_by_every_alias(client, rename):
    rename(GLOBEX_ID, active=False)
    assert client.get("/whoami", headers=tid("globex")).status_code == 404
    assert client.get("/whoami", headers=tid(str(GLOBEX_ID))).status_code == 404
    assert client.get("/whoami", headers=host("globex.example.com")).status_code == 404


def test_loader_failure_is_503_and_not_cached(client, loader):
    loader.fail = RuntimeError("db down")
    r = client.get("/whoami", headers=tid("acme"))
    assert r.status_code == 503
    assert r.mimetype == "application/json"
    assert json.loads(r.data)["error"] == "tenant_lookup_failed"
    assert "db down" not in r.get_data(as_text=True)  # no internals leak to the client
    assert r.headers["Retry-After"] == "1"
    # Still failing: tried again, not answered from a cached error or a cached not-found.
    assert client.get("/whoami", headers=tid("acme")).status_code == 503
    assert len(loader.calls) == 2
    loader.fail = None
    r = client.get("/whoami", headers=tid("acme"))
    assert r.status_code == 200
    assert r.json["slug"] == "acme"
    assert len(loader.calls) == 3


def test_loader_failure_is_not_cached_as_not_found(client, loader):
    loader.fail = RuntimeError("db down")
    assert client.get("/whoami", headers=tid("acme")).status_code == 503
    loader.fail = None
    assert client.get("/whoami", headers=tid("acme")).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, host("localhost"), host("127.0.0.1:5000"), host("example.com"), host("www.example.com")],
)
def test_missing_identifier_is_400_when_required(client, loader, headers):
    r = client.get("/whoami", headers=headers)
    assert r.status_code == 400
    body = json.loads(r.data)
    assert body["error"] == "missing_tenant_identifier"
    assert "X-Tenant-ID" in body["message"]
    assert loader.calls == []


def test_missing_identifier_passes_when_not_required():
    app = build_app(TENANT_CACHE_REQUIRED=False)

    @app.get("/maybe")
    def maybe() -> Any:
        return jsonify(
            has_tenant=bool(current_tenant),
            slug=current_tenant.slug if current_tenant else None,
            version=current_resolver_version(),
        )

    client = app.test_client()
    assert client.get("/maybe").json == {"has_tenant": False, "slug": None, "version": None}
    assert app.extensions["test"]["loader"].calls == []
    # An identifier is still honoured, and still validated.
    assert client.get("/maybe", headers=tid("acme")).json == {
        "has_tenant": True,
        "slug": "acme",
        "version": "v2",
    }
    assert client.get("/maybe", headers=tid("a b")).status_code == 400
    assert client.get("/maybe", headers=tid("nope")).status_code == 404


# -- exempt views ---------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, tid("acme"), tid("a b"), tid("nope")])
def test_exempt_view_skips_resolution(client, loader, headers):
    r = client.get("/health", headers=headers)
    assert r.status_code == 200
    assert r.json == {"ok": True, "tenant": None}
    assert loader.calls == []


def test_exempt_decorator_returns_the_view(app, ext, client, loader):
    def ping() -> Any:
        return jsonify(tenant=bool(current_tenant))

    assert ext.exempt(ping) is ping
    app.add_url_rule("/ping", view_func=ping)
    assert client.get("/ping", headers=tid("a b")).json == {"tenant": False}
    assert loader.calls == []


def test_exempt_blueprint(app, ext, client, loader):
    public = Blueprint("public", __name__)

    @public.get("/public/info")
    def info() -> Any:
        return jsonify(tenant=bool(current_tenant), version=current_resolver_version())

    assert ext.exempt(public) is public
    app.register_blueprint(public)
    for headers in ({}, tid("acme"), tid("a b")):
        assert client.get("/public/info", headers=headers).json == {
            "tenant": False,
            "version": None,
        }
    assert loader.calls == []
    # Views outside that blueprint still resolve.
    assert client.get("/whoami", headers=tid("acme")).status_code == 200
    assert len(loader.calls) == 1


def test_exempt_parent_blueprint_covers_nested_blueprints(app, ext, client, loader):
    parent = Blueprint("docs", __name__)
    child = Blueprint("api_docs", __name__)

    @child.get("/page")
    def page() -> Any:
        return "page"

    parent.register_blueprint(child, url_prefix="/api")
    ext.exempt(parent)
    app.register_blueprint(parent, url_prefix="/docs")
    assert client.get("/docs/api/page", headers=tid("a b")).status_code == 200
    assert loader.calls == []


def test_non_exempt_blueprint_resolves(app, client, loader):
    private = Blueprint("private", __name__)

    @private.get("/private/me")
    def me() -> Any:
        return jsonify(slug=current_tenant.slug)

    app.register_blueprint(private)
    assert client.get("/private/me").status_code == 400
    assert client.get("/private/me", headers=tid("globex")).json == {"slug": "globex"}
    assert len(loader.calls) == 1


def test_static_files_skip_resolution(app, client, loader, tmp_path):
    (tmp_path / "style.css").write_text("body {}")
    app.static_folder = str(tmp_path)
    assert app.url_map.bind("localhost").match("/static/style.css")[0] == "static"
    r = client.get("/static/style.css", headers=tid("a b"))
    assert r.status_code == 200
    assert r.get_data(as_text=True) == "body {}"
    assert loader.calls == []


def test_admin_blueprint_skips_resolution(client, loader, admin_headers):
    r = client.get("/_tenant-cache/stats", headers={**admin_headers, "X-Tenant-ID": "a b"})
    assert r.status_code == 200
    assert loader.calls == []


@pytest.mark.parametrize("headers", [{}, tid("acme"), tid("a b")])
def test_unmatched_url_never_calls_the_loader(client, loader, headers):
    r = client.get("/no/such/page", headers=headers)
    assert r.status_code == 404
    assert r.mimetype != "application/json"  # Flask's own 404, not "tenant not found"
    assert loader.calls == []


def test_wrong_method_never_calls_the_loader(client, loader):
    assert client.post("/whoami", headers=tid("acme")).status_code == 405
    assert loader.calls == []


# -- current_tenant and current_resolver_version --------------------------------------------------


def test_current_tenant_inside_a_view(app, client):
    seen: dict[str, Any] = {}

    @app.get("/inspect")
    def inspect() -> Any:
        seen["tenant"] = current_tenant._get_current_object()  # type: ignore[attr-defined]
        seen["version"] = current_resolver_version()
        return "ok"

    assert client.get("/inspect", headers=host("portal.initech.example")).status_code == 200
    tenant = seen["tenant"]
    assert isinstance(tenant, Tenant)
    assert tenant.id == INITECH_ID
    assert tenant.slug == "initech"
    assert tenant.name == "Initech"
    assert tenant.domains == ("portal.initech.example",)
    assert tenant.is_active is True
    assert seen["version"] == "v2"


def test_current_tenant_stands_for_the_tenant_in_every_use(app, client):
    seen: dict[str, Any] = {}

    @app.get("/uses")
    def uses() -> Any:
        tenant = current_tenant._get_current_object()  # type: ignore[attr-defined]
        seen.update(
            truthy=bool(current_tenant),
            equal=current_tenant == tenant,
            is_tenant=isinstance(current_tenant, Tenant),
            repr=repr(current_tenant) == repr(tenant),
            slug=current_tenant.slug,  # type: ignore[union-attr]
            method=current_tenant.answers_to,  # type: ignore[union-attr]
            dunder=current_tenant.__class__,
        )
        with pytest.raises(AttributeError):
            current_tenant.no_such_field  # type: ignore[union-attr]  # noqa: B018
        return "ok"

    @app.get("/no-tenant")
    @app.extensions["test"]["ext"].exempt
    def no_tenant() -> Any:
        seen["exempt_truthy"] = bool(current_tenant)
        with pytest.raises(AttributeError):
            current_tenant.slug  # type: ignore[union-attr]  # noqa: B018
        return "ok"

    assert client.get("/uses", headers=tid("acme")).status_code == 200
    assert client.get("/no-tenant").status_code == 200
    assert seen.pop("slug") == "acme"
    assert seen.pop("method").__self__.id == ACME_ID
    assert seen.pop("dunder") is Tenant
    assert seen.pop("exempt_truthy") is False
    assert all(seen.values()), seen


def test_current_tenant_outside_an_app_context_says_so():
    with pytest.raises(RuntimeError, match="application context"):
        current_tenant.slug  # type: ignore[union-attr]  # noqa: B018
    with pytest.raises(RuntimeError, match="application context"):
        bool(current_tenant)


def test_tenant_does_not_leak_into_the_next_request(client):
    assert client.get("/whoami", headers=tid("acme")).json["slug"] == "acme"
    # The exempt view, in the same app context as the last request, sees no tenant.
    assert client.get("/health").json == {"ok": True, "tenant": None}
    assert client.get("/whoami", headers=tid("globex")).json["slug"] == "globex"


def test_app_errorhandler_overrides_the_json_body(app, client):
    @app.errorhandler(TenantNotFound)
    def no_tenant(exc: TenantNotFound) -> Any:
        return jsonify(custom=True, code=exc.code), 404

    r = client.get("/whoami", headers=tid("nope"))
    assert r.status_code == 404
    assert r.json == {"custom": True, "code": 404}


def test_app_404_handler_also_catches_tenant_not_found(app, client):
    @app.errorhandler(404)
    def not_found(exc: Any) -> Any:
        return "gone", 404

    r = client.get("/whoami", headers=tid("nope"))
    assert r.status_code == 404
    assert r.get_data(as_text=True) == "gone"


# -- invalidate, invalidate_all, stats, warm ------------------------------------------------------


def cache_acme_by_every_alias(client: Any) -> None:
    for headers in (tid("acme"), tid(str(ACME_ID)), host("acme.test")):
        assert client.get("/whoami", headers=headers).json["slug"] == "acme"


@pytest.mark.parametrize(
    "identifier",
    ["acme", "ACME", str(ACME_ID), ACME_ID.hex.upper(), ACME_ID, "acme.test", "Acme.Test:443"],
)
def test_invalidate_by_any_alias_drops_them_all(client, loader, ext, identifier):
    cache_acme_by_every_alias(client)
    assert client.get("/whoami", headers=tid("globex")).status_code == 200
    assert len(loader.calls) == 2  # a load caches its tenant under every alias
    assert ext.invalidate(identifier) == 1  # one entry, under three keys
    cache_acme_by_every_alias(client)
    assert len(loader.calls) == 3
    # Globex was not touched.
    assert client.get("/whoami", headers=tid("globex")).status_code == 200
    assert len(loader.calls) == 3


def test_invalidate_with_a_typed_identifier(client, loader, ext):
    cache_acme_by_every_alias(client)
    assert ext.invalidate(TenantIdentifier("host", "acme.test")) == 1


def test_invalidate_picks_up_a_renamed_tenant(client, loader, ext, rename):
    assert client.get("/whoami", headers=tid("acme")).json["name"] == "Acme Corp"
    rename(ACME_ID, name="Acme Inc")
    assert client.get("/whoami", headers=tid("acme")).json["name"] == "Acme Corp"
    assert ext.invalidate(ACME_ID) == 1
    assert client.get("/whoami", headers=tid("acme")).json["name"] == "Acme Inc"
    assert len(loader.calls) == 2


def test_invalidate_drops_not_found_entries(client, loader, ext, rename):
    assert client.get("/whoami", headers=tid("acme-new")).status_code == 404
    assert client.get("/whoami", headers=tid("acme")).status_code == 200
    rename(ACME_ID, slug="acme-new")
    assert ext.invalidate(ACME_ID) == 2
    assert client.get("/whoami", headers=tid("acme-new")).json["id"] == str(ACME_ID)
    assert client.get("/whoami", headers=tid("acme")).status_code == 404


def test_invalidate_nothing_cached_returns_zero(ext, loader):
    assert ext.invalidate("acme") == 0
    assert loader.calls == []


@pytest.mark.parametrize(
    "identifier", ["a b", "", "-acme", "acme_corp", "bad..host", "www.example.com", "x" * 300]
)
def test_invalidate_malformed_identifier_raises(ext, identifier):
    with pytest.raises(InvalidIdentifier) as info:
        ext.invalidate(identifier)
    assert isinstance(info.value, ValueError)
    assert str(info.value)


def test_invalidate_on_an_app_without_the_extension_raises():
    ext = TenantCache(loader=CountingLoader(None))
    with Flask(__name__).app_context(), pytest.raises(RuntimeError, match="not registered"):
        ext.invalidate("acme")


def test_invalidate_all(client, loader, ext):
    for value in ("acme", "globex", "nope"):
        client.get("/whoami", headers=tid(value))
    assert len(loader.calls) == 3
    assert ext.invalidate_all() == 3
    assert ext.stats()["v2"]["entry_count"] == 0
    for value in ("acme", "globex", "nope"):
        client.get("/whoami", headers=tid(value))
    assert len(loader.calls) == 6
    assert ext.invalidate_all() == 3
    assert ext.invalidate_all() == 0


def test_stats(client, ext):
    empty = ext.stats()
    assert empty["v2"]["hits"] == 0
    assert empty["v2"]["misses"] == 0
    assert empty["v2"]["entry_count"] == 0
    client.get("/whoami", headers=tid("acme"))
    client.get("/whoami", headers=tid("acme"))
    client.get("/whoami", headers=tid("ACME"))
    client.get("/whoami", headers=tid("nope"))
    stats = ext.stats()
    assert isinstance(stats["v2"], dict)
    assert stats["v2"]["hits"] == 2
    assert stats["v2"]["misses"] == 2
    assert stats["v2"]["entry_count"] == 2
    json.dumps(stats)  # the admin route and the CLI print it as JSON


def test_warm_then_no_loader_call(client, loader, ext):
    report = ext.warm()
    # id + slug + domain per tenant, per resolver, all kept; no Redis to share them.
    assert (report.read, report.rejected) == (3, 0)
    assert report.stored == {"v1": 3, "v2": 3}
    assert report.resident == {"v1": 3, "v2": 3}
    assert (report.shared, report.shared_error) == (None, "TENANT_CACHE_REDIS_URL is not set")
    assert loader.calls == []
    for headers, slug in [
        (tid(str(ACME_ID)), "acme"),
        (tid(GLOBEX_ID.hex), "globex"),
        (tid("initech"), "initech"),
        (host("globex.example.com:8080"), "globex"),
        (host("acme.test"), "acme"),
        (host("portal.initech.example"), "initech"),
    ]:
        assert client.get("/whoami", headers=headers).json["slug"] == slug
    assert loader.calls == []
    assert ext.stats()["v2"]["entry_count"] == 3  # three tenants, under 8 keys
    assert ext.stats()["v2"]["weighted_size"] == 8


def test_warm_keeps_inactive_tenants_out(client, loader, ext, rename):
    rename(GLOBEX_ID, active=False)
    ext.warm()
    assert client.get("/whoami", headers=tid("globex")).status_code == 404


def test_warm_needs_a_loader_that_lists_tenants():
    class LoadOnly:
        def load(self, identifier: TenantIdentifier) -> Tenant | None:
            return None

    app = Flask(__name__)
    ext = TenantCache(app, loader=LoadOnly())
    with app.app_context(), pytest.raises(TypeError, match="iter_tenants"):
        ext.warm()


# -- flag providers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer", [RuntimeError("flag service down"), None, "v3", 2, "V2", "", ["v2"]]
)
def test_failing_or_garbage_flag_provider_falls_back(answer, caplog):
    def provider(context: FlagContext) -> Any:
        if isinstance(answer, Exception):
            raise answer
        return answer

    app = build_app(flag_provider=provider)
    loader = app.extensions["test"]["loader"]
    with caplog.at_level(logging.ERROR, logger="flask_tenant_cache"):
        r = app.test_client().get("/whoami", headers=tid("acme"))
    assert r.status_code == 200, r.data
    assert (r.json["slug"], r.json["version"]) == ("acme", "v1")  # the older path, never the newer
    assert len(loader.calls) == 1
    assert any(rec.levelno >= logging.ERROR for rec in caplog.records)


def test_flag_provider_gets_a_flag_context():
    contexts: list[FlagContext] = []
    seen: list[dict[str, Any]] = []

    def provider(context: FlagContext) -> str:
        contexts.append(context)
        # The request is read here: after the request it may be gone.
        seen.append(
            {
                "path": context.request.path,
                "args": dict(context.request.args),
                "canary": context.request.headers.get("X-Canary"),
            }
        )
        return "v2"

    app = build_app(flag_provider=provider, MY_ROLLOUT=10)
    client = app.test_client()
    r = client.get("/whoami?x=1", headers={"X-Tenant-ID": "ACME", "X-Canary": "yes"})
    assert (r.json["slug"], r.json["version"]) == ("acme", "v2")
    assert len(contexts) == 1
    context = contexts[0]
    assert isinstance(context, FlagContext)
    assert context.identifier == TenantIdentifier("slug", "acme")
    assert seen[0] == {"path": "/whoami", "args": {"x": "1"}, "canary": "yes"}
    assert context.config["MY_ROLLOUT"] == 10
    # The provider is asked on every request, cache hits included.
    client.get("/whoami", headers=host("portal.initech.example"))
    assert len(contexts) == 2
    assert contexts[1].identifier == TenantIdentifier("host", "portal.initech.example")
    # Not asked when there is nothing to resolve.
    client.get("/whoami", headers=tid("a b"))
    client.get("/whoami")
    assert len(contexts) == 2


def test_flag_provider_reads_the_config_live():
    answers: list[str] = []

    def provider(context: FlagContext) -> str:
        answer = "v2" if context.config["MY_FLAG"] else "nope"
        answers.append(answer)
        return answer

    app = build_app(flag_provider=provider, MY_FLAG=True)
    client = app.test_client()
    assert client.get("/whoami", headers=tid("acme")).json["version"] == "v2"
    app.config["MY_FLAG"] = False
    assert client.get("/whoami", headers=tid("acme")).json["version"] == "v1"  # fallback
    assert answers == ["v2", "nope"]


def test_flag_provider_given_to_init_app():
    calls: list[FlagContext] = []

    def provider(context: FlagContext) -> str:
        calls.append(context)
        return "v2"

    app = build_app(flag_provider=provider)
    app.test_client().get("/whoami", headers=tid("globex"))
    assert [c.identifier.value for c in calls] == ["globex"]


@pytest.mark.parametrize("use_v2", [True, False])
def test_live_config_toggle_serves_every_request(client, app, ext, use_v2):
    # TENANT_CACHE_USE_V2 is read on every request; flipping it must never break requests,
    # whichever resolvers this app has built.
    assert client.get("/whoami", headers=tid("acme")).json["version"] == "v2"
    app.config["TENANT_CACHE_USE_V2"] = use_v2
    r = client.get("/whoami", headers=tid("acme"))
    assert r.status_code == 200, r.data
    expected = "v2" if use_v2 or "v1" not in ext.stats() else "v1"
    assert r.json["version"] == expected


# -- init_app -------------------------------------------------------------------------------------


def test_second_init_app_raises(app, ext):
    with pytest.raises(RuntimeError, match="already"):
        ext.init_app(app)


def test_loader_is_required():
    with pytest.raises(TypeError, match="loader"):
        TenantCache(Flask(__name__))


def test_bad_config_value_names_the_key():
    app = Flask(__name__)
    app.config["TENANT_CACHE_TTL"] = -1
    with pytest.raises(ValueError, match="TENANT_CACHE_TTL"):
        TenantCache(app, loader=CountingLoader(None))


def test_two_apps_do_not_share_a_cache(client, loader):
    other = build_app()
    other_loader = other.extensions["test"]["loader"]
    assert client.get("/whoami", headers=tid("acme")).status_code == 200
    assert other.test_client().get("/whoami", headers=tid("acme")).status_code == 200
    assert len(loader.calls) == 1
    assert len(other_loader.calls) == 1
    with other.app_context():
        assert other.extensions["tenant_cache"].ext.invalidate("acme") == 1
    # The first app's entry is still there.
    assert client.get("/whoami", headers=tid("acme")).status_code == 200
    assert len(loader.calls) == 1


def test_uuid_identifier_type(ext):
    assert ext.parse_identifier(uuid.UUID(str(ACME_ID))) == TenantIdentifier("uuid", str(ACME_ID))
