"""Flask integration of ``TenantCache``: exemptions, preflights, hooks, templates, live config,
admin bodies and error bodies."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from flask import Blueprint, Flask, jsonify, render_template_string
from flask.json.provider import DefaultJSONProvider

from flask_tenant_cache import (
    FlagContext,
    current_resolver_version,
    current_rollout_decision,
    current_tenant,
    require_tenant,
)
from tests.helpers.app import ADMIN_TOKEN, build_app


def tid(value: str) -> dict[str, str]:
    return {"X-Tenant-ID": value}


def _blueprint(name: str, route: str, **kwargs: Any) -> Blueprint:
    bp = Blueprint(name, __name__, **kwargs)

    @bp.get(route)
    def view() -> Any:
        return jsonify(tenant=current_tenant.slug if current_tenant else None)

    return bp


# -- exemptions ---------------------------------------------------------------------------------


def test_exempt_blueprint_does_not_exempt_a_nested_namesake(app, ext, client, loader):
    reports = _blueprint("reports", "/reports")
    ext.exempt(reports)
    app.register_blueprint(reports, url_prefix="/public")
    admin = Blueprint("admin", __name__)
    admin.register_blueprint(_blueprint("reports", "/reports"))  # another "reports"
    app.register_blueprint(admin, url_prefix="/admin")
    assert client.get("/public/reports").json == {"tenant": None}
    assert client.get("/admin/reports").status_code == 400  # resolved: no tenant named
    assert client.get("/admin/reports", headers=tid("acme")).json == {"tenant": "acme"}
    assert len(loader.calls) == 1


def test_a_user_blueprint_named_like_the_admin_one_is_resolved(app, client, loader):
    parent = Blueprint("app_admin", __name__)
    parent.register_blueprint(_blueprint("tenant_cache", "/mine"))
    app.register_blueprint(parent, url_prefix="/x")
    assert client.get("/x/mine").status_code == 400
    assert client.get("/x/mine", headers=tid("globex")).json == {"tenant": "globex"}


def test_exempt_blueprint_registered_under_another_name_stays_exempt(app, ext, client, loader):
    docs = _blueprint("docs", "/page")
    ext.exempt(docs)
    app.register_blueprint(docs, url_prefix="/docs")
    app.register_blueprint(docs, url_prefix="/help", name="help")
    assert client.get("/docs/page").json == {"tenant": None}
    assert client.get("/help/page").json == {"tenant": None}
    assert loader.calls == []


def test_blueprint_static_files_are_exempt(app, client, loader, tmp_path):
    (tmp_path / "app.js").write_text("let x = 1;")
    shop = _blueprint("shop", "/", static_folder=str(tmp_path), static_url_path="/assets")
    nested = Blueprint("front", __name__)
    nested.register_blueprint(shop, url_prefix="/shop")
    app.register_blueprint(nested, url_prefix="/front")
    for url in ("/front/shop/assets/app.js",):
        response = client.get(url)
        assert response.status_code == 200
        assert response.get_data(as_text=True) == "let x = 1;"
    assert client.get("/front/shop/").status_code == 400  # its views still need a tenant
    assert loader.calls == []


PREFLIGHT = {"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}


def test_cors_preflight_passes_without_a_tenant(client, loader):
    response = client.options("/whoami", headers={**PREFLIGHT, "Host": "nowhere"})
    assert response.status_code == 200
    assert "GET" in response.headers["Allow"]
    assert loader.calls == []


def test_plain_options_is_resolved(client, loader):
    assert client.options("/whoami").status_code == 400
    assert client.options("/whoami", headers=tid("acme")).status_code == 200
    assert len(loader.calls) == 1


def test_preflights_resolved_when_configured():
    app = build_app(TENANT_CACHE_EXEMPT_PREFLIGHT=False)
    assert app.test_client().options("/whoami", headers=PREFLIGHT).status_code == 400


def test_exempt_preflight_is_validated():
    with pytest.raises(ValueError, match="TENANT_CACHE_EXEMPT_PREFLIGHT"):
        build_app(TENANT_CACHE_EXEMPT_PREFLIGHT="yes")


# -- hooks registered after init_app ------------------------------------------------------------


def test_flag_provider_handler_registered_after_init_app_decides(app, ext, client):
    assert client.get("/whoami", headers=tid("acme")).json["version"] == "v2"
    seen: list[FlagContext] = []

    @ext.flag_provider_handler
    def provider(context: FlagContext) -> str:
        seen.append(context)
        return "v1"

    response = client.get("/whoami", headers=tid("acme"))
    assert response.json["version"] == "v1"
    assert [c.identifier.value for c in seen] == ["acme"]
    assert ext.rollout_status()["mode"] == "provider"


# -- current_tenant, require_tenant, templates --------------------------------------------------


def _require_view(app: Flask, ext: Any) -> None:
    @app.get("/required")
    @ext.exempt
    def required() -> Any:
        return jsonify(slug=require_tenant().slug, version=current_resolver_version())


def test_require_tenant_resolves_in_an_exempt_view(app, ext, client, loader):
    _require_view(app, ext)
    assert client.get("/required", headers=tid("acme")).json == {"slug": "acme", "version": "v2"}
    assert client.get("/required", headers={"Host": "globex.example.com"}).json["slug"] == (
        "globex"
    )
    missing = client.get("/required")
    assert missing.status_code == 400
    assert missing.json["error"] == "missing_tenant_identifier"
    assert client.get("/required", headers=tid("nobody")).status_code == 404
    assert client.get("/required", headers=tid("a b")).status_code == 400


def test_require_tenant_in_a_resolved_view_reuses_the_tenant(app, ext, client, loader):
    @app.get("/twice")
    def twice() -> Any:
        return jsonify(same=require_tenant() is current_tenant._get_current_object())

    assert client.get("/twice", headers=tid("acme")).json == {"same": True}
    assert len(loader.calls) == 1


def test_require_tenant_when_not_required():
    app = build_app(TENANT_CACHE_REQUIRED=False)

    @app.get("/optional")
    def optional() -> Any:
        return jsonify(tenant=bool(current_tenant), slug=require_tenant().slug)

    client = app.test_client()
    response = client.get("/optional")
    assert response.status_code == 400
    assert response.json["error"] == "missing_tenant_identifier"
    assert client.get("/optional", headers=tid("acme")).json == {"tenant": True, "slug": "acme"}


def test_current_tenant_in_templates(app, ext, client):
    @app.get("/page")
    def page() -> str:
        return render_template_string("{{ current_tenant.name if current_tenant else '-' }}")

    @app.get("/open")
    @ext.exempt
    def open_page() -> str:
        return render_template_string("{{ current_tenant.name if current_tenant else '-' }}")

    assert client.get("/page", headers=tid("acme")).get_data(as_text=True) == "Acme Corp"
    assert client.get("/open").get_data(as_text=True) == "-"


# -- live config --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["false", "true", 1, None])
def test_a_bad_live_use_v2_reads_as_v1(app, client, caplog, value):
    app.config["TENANT_CACHE_USE_V2"] = value
    caplog.set_level(logging.ERROR, logger="flask_tenant_cache")
    for _ in range(3):
        assert client.get("/whoami", headers=tid("acme")).json["version"] == "v1"
    errors = [r for r in caplog.records if "TENANT_CACHE_USE_V2" in r.getMessage()]
    assert len(errors) <= 1


def test_a_bad_live_percentage_moves_no_one_to_v2(app, client):
    app.config["TENANT_CACHE_V2_PERCENT"] = "100"
    for slug in ("acme", "globex", "initech"):
        response = client.get("/whoami", headers=tid(slug))
        assert response.json["version"] == "v1"


def test_a_bad_live_shadow_percentage_turns_shadowing_off(app, client, ext):
    app.config["TENANT_CACHE_SHADOW_PERCENT"] = "100"
    assert client.get("/whoami", headers=tid("acme")).status_code == 200
    assert ext.stats()["shadow"]["submitted"] == 0


# -- admin bodies -------------------------------------------------------------------------------

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.mark.parametrize("route", ["/_tenant-cache/invalidate", "/_tenant-cache/rollout"])
@pytest.mark.parametrize(
    "data",
    [
        "[" * 3000 + "]" * 3000,
        '{"identifier": ' + "[" * 3000 + "]" * 3000 + "}",
        "{" * 2000,
        b"\xff\xfe{}",
        '{"identifier": "acme", "pad": "' + "x" * 10_000 + '"}',
        "",
    ],
    ids=["nested", "nested-value", "unclosed", "not-utf8", "oversized", "empty"],
)
def test_admin_routes_answer_400_to_any_malformed_body(client, route, data):
    response = client.post(route, data=data, headers=ADMIN, content_type="application/json")
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"


def test_admin_body_within_the_limit_is_read(client):
    response = client.post("/_tenant-cache/invalidate", json={"identifier": "acme"}, headers=ADMIN)
    assert response.status_code == 200
    assert response.json == {"invalidated": 0}


# -- error bodies -------------------------------------------------------------------------------


class EnvelopeJSON(DefaultJSONProvider):
    """An app's own JSON: every document in an envelope, its own media type."""

    mimetype = "application/vnd.example+json"

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return json.dumps({"data": obj}, sort_keys=True)


def test_error_bodies_use_the_apps_json_provider():
    app = build_app()
    app.json = EnvelopeJSON(app)
    client = app.test_client()
    response = client.get("/whoami", headers=tid("nobody"))
    assert response.status_code == 404
    assert response.mimetype == "application/vnd.example+json"
    assert json.loads(response.data) == {
        "data": {"error": "tenant_not_found", "message": "no tenant answers to this identifier"}
    }
    closed = client.get("/_tenant-cache/stats")
    assert json.loads(closed.data)["data"]["error"] == "admin_auth_required"


def test_current_rollout_decision_is_none_in_exempt_views(app, ext, client):
    @app.get("/free")
    @ext.exempt
    def free() -> Any:
        return jsonify(decision=current_rollout_decision())

    assert client.get("/free", headers=tid("acme")).json == {"decision": None}
