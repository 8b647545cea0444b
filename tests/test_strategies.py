"""Identification strategies: the chain, its order, conflicts, header trust, path and custom."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from flask import Flask, jsonify, redirect, request, url_for
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_tenant_cache import (
    InvalidIdentifier,
    TenantCache,
    TenantIdentifier,
    current_identification,
    current_tenant,
)
from tests.helpers.app import ACME_ID, GLOBEX_ID, build_app, call, update_tenant

SLUG_ACME = TenantIdentifier("slug", "acme")
SLUG_GLOBEX = TenantIdentifier("slug", "globex")


def with_views(app: Flask) -> Flask:
    """Add views that report the identification and build URLs."""

    @app.get("/ident")
    def ident() -> Any:
        found = current_identification()
        assert found is not None
        return jsonify(
            slug=current_tenant.slug,
            strategy=found.strategy,
            key=found.identifier.cache_key,
            confirmed_by=[[o.strategy, o.identifier.cache_key] for o in found.confirmed_by],
        )

    @app.get("/links/<name>")
    def links(name: str) -> Any:
        return jsonify(
            relative=url_for("links", name=name),
            external=url_for("links", name=name, _external=True),
            script_root=request.script_root,
            path=request.path,
        )

    @app.get("/go")
    def go() -> Any:
        return redirect(url_for("ident"))

    return app


def make(**config: Any) -> tuple[Flask, Any]:
    app = with_views(build_app(**config))
    return app, app.extensions["test"]["loader"]


def get(app: Flask, path: str = "/ident", **kwargs: Any) -> Any:
    return app.test_client().get(path, **kwargs)


def error(response: Any) -> str:
    code: str = response.json["error"]
    return code


def id_stats(app: Flask) -> dict[str, int]:
    with app.app_context():
        stats: dict[str, int] = app.extensions["tenant_cache"].stats()["identification"]
    return stats


# -- each built-in strategy alone ------------------------------------------------------------


def test_header_strategy_alone_ignores_the_host():
    app, loader = make(TENANT_CACHE_STRATEGIES=["header"])
    r = get(app, headers={"X-Tenant-ID": "globex", "Host": "acme.example.com"})
    assert (r.status_code, r.json["strategy"], r.json["slug"]) == (200, "header", "globex")
    r = get(app, headers={"Host": "acme.example.com"})
    assert (r.status_code, error(r)) == (400, "missing_tenant_identifier")
    assert loader.calls == [SLUG_GLOBEX]


def test_host_strategy_alone_ignores_the_header():
    app, loader = make(TENANT_CACHE_STRATEGIES=["host"])
    r = get(app, headers={"X-Tenant-ID": "globex", "Host": "acme.example.com"})
    assert (r.status_code, r.json["strategy"], r.json["slug"]) == (200, "host", "acme")
    r = get(app, headers={"X-Tenant-ID": "globex"})
    assert (r.status_code, error(r)) == (400, "missing_tenant_identifier")
    assert loader.calls == [SLUG_ACME]


def test_host_strategy_reads_a_custom_domain():
    app, _ = make(TENANT_CACHE_STRATEGIES=["host"])
    r = get(app, headers={"Host": "Portal.Initech.Example:8443"})
    assert (r.json["slug"], r.json["key"]) == ("initech", "host:portal.initech.example")


def test_path_strategy_strips_the_tenant_from_the_route():
    app, loader = make(TENANT_CACHE_STRATEGIES=["path"])
    r = get(app, "/t/acme/ident")
    assert (r.status_code, r.json["strategy"], r.json["key"]) == (200, "path", "slug:acme")
    r = get(app, f"/t/{GLOBEX_ID}/ident")
    assert (r.json["slug"], r.json["key"]) == ("globex", f"uuid:{GLOBEX_ID}")
    assert loader.calls == [SLUG_ACME, TenantIdentifier("uuid", str(GLOBEX_ID))]


def test_path_strategy_url_for_builds_urls_under_the_tenant():
    app, _ = make(TENANT_CACHE_STRATEGIES=["path"])
    r = get(app, "/t/acme/links/x?q=1")
    assert r.json == {
        "relative": "/t/acme/links/x",
        "external": "http://localhost/t/acme/links/x",
        "script_root": "/t/acme",
        "path": "/links/x",
    }
    r = get(app, "/t/acme/go")
    assert (r.status_code, r.headers["Location"]) == (302, "/t/acme/ident")


def test_path_strategy_redirects_the_bare_tenant_url_to_its_branch():
    app, _ = make(TENANT_CACHE_STRATEGIES=["path"])
    r = get(app, "/t/acme?x=1")
    assert (r.status_code, r.headers["Location"]) == (308, "/t/acme/?x=1")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/t/acme.test/ident", "not a UUID or a slug"),
        ("/t/-acme/ident", "a slug holds"),
        ("/t//ident", "empty"),
        ("/t/" + "a" * 64 + "/ident", "at most 63"),
    ],
)
def test_path_strategy_refuses_a_malformed_segment_before_any_lookup(path, message):
    app, loader = make(TENANT_CACHE_STRATEGIES=["path"])
    r = get(app, path)
    assert (r.status_code, error(r)) == (400, "invalid_tenant_identifier")
    assert message in r.json["message"]
    assert loader.calls == []


def test_path_strategy_names_nothing_outside_its_prefix():
    app, loader = make(TENANT_CACHE_STRATEGIES=["path"], TENANT_CACHE_PATH_PREFIX="/org")
    assert get(app, "/ident").status_code == 400
    assert get(app, "/t/acme/ident").status_code == 404  # no such route: /t is not the prefix
    assert get(app, "/orgs/acme/ident").status_code == 404
    assert get(app, "/org/acme/ident").json["slug"] == "acme"
    assert loader.calls == [SLUG_ACME]


def test_path_strategy_inside_a_proxy_fix_applied_after_init_app():
    app = with_views(build_app(TENANT_CACHE_STRATEGIES=["path"]))
    app.wsgi_app = ProxyFix(app.wsgi_app, x_prefix=1)  # type: ignore[method-assign]
    r = get(app, "/t/acme/links/x", headers={"X-Forwarded-Prefix": "/shop"})
    assert r.json["relative"] == "/shop/t/acme/links/x"


def test_path_strategy_inside_a_proxy_fix_applied_before_init_app():
    app = Flask(__name__)
    app.config.update(TENANT_CACHE_STRATEGIES=["path"], TESTING=True)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_prefix=1)  # type: ignore[method-assign]

    class Loader:
        def load(self, identifier: TenantIdentifier) -> Any:
            from flask_tenant_cache import Tenant

            return Tenant(id=ACME_ID, slug="acme")

    TenantCache(app, loader=Loader())
    with_views(app)
    r = get(app, "/t/acme/links/x", headers={"X-Forwarded-Prefix": "/shop"})
    assert r.json["relative"] == "/shop/t/acme/links/x"


# -- order and conflicts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategies", "strategy", "slug"),
    [(["header", "host"], "header", "globex"), (["host", "header"], "host", "acme")],
)
def test_with_first_wins_the_chain_order_decides(strategies, strategy, slug):
    app, loader = make(TENANT_CACHE_STRATEGIES=strategies, TENANT_CACHE_ON_CONFLICT="first")
    r = get(app, headers={"X-Tenant-ID": "globex", "Host": "acme.example.com"})
    assert (r.status_code, r.json["strategy"], r.json["slug"]) == (200, strategy, slug)
    assert r.json["confirmed_by"] == []
    assert loader.calls == [TenantIdentifier("slug", slug)]


def test_with_first_wins_later_strategies_are_not_run():
    seen: list[str] = []

    def never(req: Any) -> None:
        seen.append(req.path)

    app = build_app(
        strategies={"never": never},
        TENANT_CACHE_STRATEGIES=["header", "never"],
        TENANT_CACHE_ON_CONFLICT="first",
    )
    assert get(app, "/whoami", headers={"X-Tenant-ID": "acme"}).status_code == 200
    assert seen == []
    assert get(app, "/whoami").status_code == 400
    assert seen == ["/whoami"]


def test_the_default_is_header_then_host_with_conflicts_refused():
    app, _ = make()
    r = get(app, headers={"X-Tenant-ID": "globex", "Host": "acme.example.com"})
    assert (r.status_code, error(r)) == (400, "conflicting_tenant_identifiers")
    assert r.json["message"] == "the header and the host name different tenants"
    assert id_stats(app)["conflicts"] == 1
    r = get(app, headers={"Host": "acme.example.com"})
    assert (r.json["strategy"], r.json["slug"]) == ("host", "acme")
    r = get(app, headers={"X-Tenant-ID": "globex"})
    assert (r.json["strategy"], r.json["slug"]) == ("header", "globex")


@pytest.mark.parametrize(
    ("header", "host", "confirmed"),
    [
        ("acme", "acme.example.com", "slug:acme"),
        ("ACME", "acme.test", "host:acme.test"),
        (str(ACME_ID), "acme.example.com:8080", "slug:acme"),
        ("acme.test", "acme.example.com", "slug:acme"),
    ],
)
def test_two_names_of_one_tenant_are_no_conflict_and_cost_no_second_lookup(header, host, confirmed):
    app, loader = make()
    r = get(app, headers={"X-Tenant-ID": header, "Host": host})
    assert r.status_code == 200, r.json
    assert (r.json["strategy"], r.json["slug"]) == ("header", "acme")
    assert r.json["confirmed_by"] == [["host", confirmed]]
    assert len(loader.calls) == 1
    with app.app_context():
        stats = app.extensions["tenant_cache"].stats()
    assert stats["v2"]["hits"] + stats["v2"]["misses"] == 1
    assert stats["identification"]["second_lookups"] == 0


def test_a_second_name_that_names_no_tenant_is_no_conflict():
    # An API host under a base domain reads as the slug "api", which no tenant has.
    app, loader = make()
    r = get(app, headers={"X-Tenant-ID": "globex", "Host": "api.example.com"})
    assert (r.status_code, r.json["slug"], r.json["confirmed_by"]) == (200, "globex", [])
    assert loader.calls == [SLUG_GLOBEX, TenantIdentifier("slug", "api")]
    r = get(app, headers={"X-Tenant-ID": "globex", "Host": "api.example.com"})
    assert r.status_code == 200
    assert len(loader.calls) == 2  # the second lookup is a cached "not found"
    assert id_stats(app)["second_lookups"] == 2


def test_a_second_name_of_an_inactive_tenant_is_no_conflict():
    app, _loader = make()

    with app.app_context():
        update_tenant(app, ACME_ID, active=False)
    r = get(app, headers={"X-Tenant-ID": "globex", "Host": "acme.example.com"})
    assert (r.status_code, r.json["slug"]) == (200, "globex")


def test_a_second_lookup_that_fails_is_a_503_not_a_pass():
    app, loader = make()
    assert get(app, headers={"X-Tenant-ID": "globex"}).status_code == 200
    loader.fail = RuntimeError("database down")
    r = get(app, headers={"X-Tenant-ID": "globex", "Host": "acme.example.com"})
    assert (r.status_code, error(r)) == (503, "tenant_lookup_failed")
    assert loader.calls == [SLUG_GLOBEX, SLUG_ACME]
    loader.fail = None
    r = get(app, headers={"X-Tenant-ID": "globex", "Host": "acme.example.com"})
    assert (r.status_code, error(r)) == (400, "conflicting_tenant_identifiers")


def test_an_unknown_first_name_is_a_404_whatever_the_second():
    app, loader = make()
    r = get(app, headers={"X-Tenant-ID": "nobody", "Host": "acme.example.com"})
    assert (r.status_code, error(r)) == (404, "tenant_not_found")
    assert loader.calls == [TenantIdentifier("slug", "nobody")]


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Tenant-ID": "acme", "Host": "bad_host.example.com"},
        {"X-Tenant-ID": "a b", "Host": "acme.example.com"},
        {"X-Tenant-ID": "acme", "Host": "acme.example.com:99999"},
    ],
)
def test_a_malformed_identifier_from_any_strategy_is_a_400_before_any_lookup(headers):
    app, loader = make()
    # Raw WSGI: the test client of older Werkzeug fails on a port out of range by itself.
    environ = {"HTTP_" + name.upper().replace("-", "_"): v for name, v in headers.items()}
    status, _, body = call(app, "/ident", **environ)
    assert (status, json.loads(body)["error"]) == (400, "invalid_tenant_identifier")
    assert loader.calls == []


def test_with_first_wins_a_malformed_later_identifier_is_not_read():
    app, _loader = make(TENANT_CACHE_ON_CONFLICT="first")
    r = get(app, headers={"X-Tenant-ID": "acme", "Host": "bad_host.example.com"})
    assert (r.status_code, r.json["slug"]) == (200, "acme")


def test_three_strategies_path_first_then_header_and_host():
    app, _loader = make(TENANT_CACHE_STRATEGIES=["path", "header", "host"])
    r = get(app, "/t/acme/ident", headers={"X-Tenant-ID": str(ACME_ID), "Host": "acme.test"})
    assert r.status_code == 200
    assert r.json["confirmed_by"] == [["header", f"uuid:{ACME_ID}"], ["host", "host:acme.test"]]
    r = get(app, "/t/acme/ident", headers={"X-Tenant-ID": "acme", "Host": "globex.example.com"})
    assert (r.status_code, r.json["message"]) == (
        400,
        "the path and the host name different tenants",
    )


# -- custom strategies -------------------------------------------------------------------------


def claim(req: Any) -> Any:
    """A stand-in for a verified JWT claim: the ``tenant`` query argument."""
    return req.args.get("tenant")


def test_a_custom_strategy_names_the_tenant():
    app = with_views(build_app(strategies={"claim": claim}, TENANT_CACHE_STRATEGIES=["claim"]))
    r = get(app, "/ident?tenant=Globex")
    assert (r.status_code, r.json["strategy"], r.json["key"]) == (200, "claim", "slug:globex")
    r = get(app, "/ident?tenant=bad%20slug")
    assert (r.status_code, error(r)) == (400, "invalid_tenant_identifier")
    r = get(app, "/ident")
    assert (r.status_code, error(r)) == (400, "missing_tenant_identifier")


@pytest.mark.parametrize(
    "answer", [ACME_ID, TenantIdentifier.slug("acme"), "acme.test", str(ACME_ID)]
)
def test_a_custom_strategy_may_answer_a_uuid_an_identifier_or_a_host(answer):
    app = build_app(strategies={"fixed": lambda req: answer}, TENANT_CACHE_STRATEGIES=["fixed"])
    assert get(app, "/whoami").json["slug"] == "acme"


def test_a_custom_strategy_raising_invalid_identifier_is_a_400():
    def strict(req: Any) -> str:
        raise InvalidIdentifier("the token carries no tenant claim")

    app = build_app(strategies={"strict": strict}, TENANT_CACHE_STRATEGIES=["strict", "host"])
    r = get(app, "/whoami", headers={"Host": "acme.example.com"})
    assert (r.status_code, r.json["message"]) == (400, "the token carries no tenant claim")


def test_a_custom_strategy_answering_another_type_is_a_programming_error():
    app = build_app(strategies={"bad": lambda req: 42}, TENANT_CACHE_STRATEGIES=["bad"])
    with pytest.raises(TypeError, match="returned int"):
        get(app, "/whoami")


def test_a_custom_strategy_conflicting_with_the_host_is_refused():
    app = build_app(strategies={"claim": claim}, TENANT_CACHE_STRATEGIES=["host", "claim"])
    r = get(app, "/whoami?tenant=globex", headers={"Host": "acme.example.com"})
    assert (r.status_code, error(r)) == (400, "conflicting_tenant_identifiers")
    r = get(app, "/whoami?tenant=acme", headers={"Host": "acme.example.com"})
    assert (r.status_code, r.json["slug"]) == (200, "acme")


def test_registration_by_decorator_and_its_errors():
    ext = TenantCache()

    @ext.identifier_strategy
    def session_tenant(req: Any) -> None:
        return None

    @ext.identifier_strategy(name="jwt")
    def from_token(req: Any) -> None:
        return None

    assert ext._strategies == {"session_tenant": session_tenant, "jwt": from_token}
    for name in ("header", "jwt"):
        with pytest.raises(ValueError, match="a name of its own"):
            ext.identifier_strategy(from_token, name=name)


def test_a_registered_strategy_left_out_of_the_chain_is_reported(caplog):
    with caplog.at_level(logging.WARNING, "flask_tenant_cache"):
        app = build_app(strategies={"claim": claim})
    assert "'claim' is registered but not in TENANT_CACHE_STRATEGIES" in caplog.text
    assert (
        get(app, "/whoami?tenant=globex", headers={"Host": "acme.example.com"}).json["slug"]
        == "acme"
    )


def test_an_unregistered_strategy_name_fails_init_app():
    with pytest.raises(ValueError, match="TENANT_CACHE_STRATEGIES names an unknown strategy 'jwt'"):
        build_app(TENANT_CACHE_STRATEGIES=["header", "jwt"])


# -- who may send the header -------------------------------------------------------------------


def from_addr(addr: str, **headers: str) -> dict[str, Any]:
    return {"headers": headers, "environ_base": {"REMOTE_ADDR": addr}}


@pytest.mark.parametrize("addr", ["10.1.2.3", "::ffff:10.1.2.3", "fd00::7"])
def test_a_trusted_network_may_send_the_header(addr):
    app, _ = make(TENANT_CACHE_HEADER_TRUSTED=["10.0.0.0/8", "fd00::/8"])
    r = get(app, **from_addr(addr, **{"X-Tenant-ID": "globex"}))
    assert (r.status_code, r.json["strategy"]) == (200, "header")


@pytest.mark.parametrize("addr", ["203.0.113.5", "::1", "", "not-an-ip"])
def test_an_untrusted_header_is_refused_by_default(addr):
    app, loader = make(TENANT_CACHE_HEADER_TRUSTED="10.0.0.0/8")
    r = get(app, **from_addr(addr, **{"X-Tenant-ID": "globex", "Host": "acme.example.com"}))
    assert (r.status_code, error(r)) == (403, "untrusted_tenant_header")
    assert loader.calls == []
    assert id_stats(app)["untrusted_refused"] == 1


def test_an_untrusted_header_can_be_ignored_instead():
    app, loader = make(
        TENANT_CACHE_HEADER_TRUSTED=["10.0.0.0/8"], TENANT_CACHE_UNTRUSTED_HEADER="ignore"
    )
    r = get(app, **from_addr("203.0.113.5", **{"X-Tenant-ID": "globex", "Host": "acme.test"}))
    assert (r.status_code, r.json["strategy"], r.json["slug"]) == (200, "host", "acme")
    r = get(app, **from_addr("203.0.113.5", **{"X-Tenant-ID": "globex"}))
    assert (r.status_code, error(r)) == (400, "missing_tenant_identifier")
    assert loader.calls == [TenantIdentifier("host", "acme.test")]
    assert id_stats(app)["untrusted_ignored"] == 2


def test_without_the_header_the_trust_rule_is_not_consulted():
    calls: list[str] = []

    def trusted(req: Any) -> bool:
        calls.append(req.path)
        return False

    app, _ = make(TENANT_CACHE_HEADER_TRUSTED=trusted)
    assert get(app, headers={"Host": "acme.example.com"}).status_code == 200
    assert calls == []


def test_a_callable_decides_who_may_send_the_header():
    def gateway(req: Any) -> bool:
        return bool(req.headers.get("X-Gateway-Key") == "k")

    app, _ = make(TENANT_CACHE_HEADER_TRUSTED=gateway)
    r = get(app, headers={"X-Tenant-ID": "globex", "X-Gateway-Key": "k"})
    assert (r.status_code, r.json["slug"]) == (200, "globex")
    r = get(app, headers={"X-Tenant-ID": "globex", "X-Gateway-Key": "guess"})
    assert (r.status_code, error(r)) == (403, "untrusted_tenant_header")


def test_a_failing_trust_callable_trusts_nobody(caplog):
    def broken(req: Any) -> bool:
        raise RuntimeError("gateway registry down")

    app, loader = make(TENANT_CACHE_HEADER_TRUSTED=broken)
    with caplog.at_level(logging.ERROR, "flask_tenant_cache"):
        r = get(app, headers={"X-Tenant-ID": "globex"})
    assert (r.status_code, error(r)) == (403, "untrusted_tenant_header")
    assert "TENANT_CACHE_HEADER_TRUSTED failed" in caplog.text
    assert loader.calls == []


def test_behind_proxy_fix_the_forwarded_client_address_is_the_one_compared():
    app, _ = make(TENANT_CACHE_HEADER_TRUSTED=["10.0.0.0/8"])
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_host=1)  # type: ignore[method-assign]
    # The proxy (10.0.0.1) forwards an outside client: the header is not the client's to set.
    outside = from_addr("10.0.0.1", **{"X-Tenant-ID": "globex", "X-Forwarded-For": "203.0.113.9"})
    assert get(app, **outside).status_code == 403
    inside = from_addr("10.0.0.1", **{"X-Tenant-ID": "globex", "X-Forwarded-For": "10.9.9.9"})
    assert get(app, **inside).json["slug"] == "globex"
    # A spoofed extra X-Forwarded-For entry is not believed: only the proxy's own entry is.
    spoofed = from_addr(
        "10.0.0.1", **{"X-Tenant-ID": "globex", "X-Forwarded-For": "10.9.9.9, 203.0.113.9"}
    )
    assert get(app, **spoofed).status_code == 403


def test_behind_proxy_fix_the_host_is_the_forwarded_host():
    app, _ = make()
    app.wsgi_app = ProxyFix(app.wsgi_app, x_host=1)  # type: ignore[method-assign]
    r = get(app, headers={"Host": "internal:8000", "X-Forwarded-Host": "acme.example.com"})
    assert (r.json["strategy"], r.json["slug"]) == ("host", "acme")
    r = get(
        app,
        headers={
            "Host": "globex.example.com",
            "X-Forwarded-Host": "acme.example.com",
            "X-Tenant-ID": "globex",
        },
    )
    assert error(r) == "conflicting_tenant_identifiers"


# -- current_identification --------------------------------------------------------------------


def test_current_identification_is_none_outside_a_resolved_request():
    app, _ = make()

    @app.get("/free")
    @app.extensions["test"]["ext"].exempt
    def free() -> Any:
        return jsonify(found=current_identification())

    assert get(app, "/free").json == {"found": None}
    with app.test_request_context("/"):
        assert current_identification() is None


def test_current_identification_is_kept_for_a_404():
    app, _ = make()
    seen: list[Any] = []

    @app.errorhandler(404)
    def not_found(exc: Any) -> Any:
        seen.append(current_identification())
        return "gone", 404

    get(app, headers={"X-Tenant-ID": "nobody", "Host": "acme.example.com"})
    assert [(f.strategy, f.identifier, f.confirmed_by) for f in seen] == [
        ("header", TenantIdentifier("slug", "nobody"), ())
    ]
