"""Mismatch records: bounded, without names or ``extra``, and ignore rules like Scientist's."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Flask

from flask_tenant_cache import Tenant, TenantIdentifier
from flask_tenant_cache.mismatches import MismatchLog, mismatch_record
from tests.helpers.app import ACME_ID, build_app


def shadowed(app: Flask, *slugs: str) -> dict[str, Any]:
    for slug in slugs:
        app.test_client().get("/whoami", headers={"X-Tenant-ID": slug})
    state = app.extensions["tenant_cache"]
    state.shadow.close()
    with app.app_context():
        result: dict[str, Any] = app.extensions["test"]["ext"].rollout_mismatches()
    return result


def renamed_in_v2(app: Flask) -> None:
    """v2 holds acme under another name and plan; v1 reads the database."""
    stale = Tenant(
        ACME_ID, "acme", name="Acme Secret Corp", domains=("acme.test",), extra={"plan": "gold"}
    )
    app.extensions["tenant_cache"].resolvers["v2"].warm([stale])


def test_a_record_holds_the_key_and_differing_fields_never_a_name_or_extra() -> None:
    app = build_app(TENANT_CACHE_SHADOW_PERCENT=100, TENANT_CACHE_USE_V2=True)
    renamed_in_v2(app)
    records = shadowed(app, "acme", "globex")
    assert records["scope"] == "process"
    (record,) = records["mismatches"]
    assert record["key"] == "slug:acme"
    assert record["primary"] == "v2"
    assert record["fields"] == {
        "name": {"v1": "(hidden)", "v2": "(hidden)"},
        "extra": {"v1": "(hidden)", "v2": "(hidden)"},
    }
    assert "Secret" not in repr(records)
    assert "gold" not in repr(records)
    assert isinstance(record["at"], float)


def test_an_ignore_rule_accepts_a_known_difference() -> None:
    app = build_app(TENANT_CACHE_SHADOW_PERCENT=100, TENANT_CACHE_USE_V2=True)
    ext = app.extensions["test"]["ext"]
    calls = []

    @ext.shadow_ignore
    def names_may_differ(ident: TenantIdentifier, v1: Any, v2: Any) -> bool:
        calls.append((ident.cache_key, v1.name, v2.name))
        return isinstance(v1, Tenant) and isinstance(v2, Tenant) and v1.id == v2.id

    @ext.shadow_ignore
    def broken(ident: TenantIdentifier, v1: Any, v2: Any) -> bool:
        raise AssertionError("never reached: the first rule accepted it")

    renamed_in_v2(app)
    records = shadowed(app, "acme")
    assert records["mismatches"] == []
    assert calls == [("slug:acme", "Acme Corp", "Acme Secret Corp")]  # v1 first, whoever served
    with app.app_context():
        stats = ext.stats()
    assert (stats["shadow"]["ignored"], stats["shadow"]["mismatched"]) == (1, 0)
    assert stats["figures"]["shadow"] == {"compared": 1, "mismatched": 0, "mismatch_ratio": 0.0}


def test_a_failing_ignore_rule_ignores_nothing() -> None:
    app = build_app(TENANT_CACHE_SHADOW_PERCENT=100, TENANT_CACHE_USE_V2=True)

    @app.extensions["test"]["ext"].shadow_ignore
    def broken(ident: TenantIdentifier, v1: Any, v2: Any) -> bool:
        raise KeyError("oops")

    renamed_in_v2(app)
    assert len(shadowed(app, "acme")["mismatches"]) == 1


def test_the_log_keeps_the_last_n_newest_first() -> None:
    log = MismatchLog(3)
    ident = TenantIdentifier.slug("acme")
    for at in range(5):
        one = Tenant(uuid.uuid4(), "acme")
        log.add(mismatch_record(ident, "v1", {"v1": one, "v2": None}, float(at)))
    assert [r["at"] for r in log.recent()] == [4.0, 3.0, 2.0]
    assert log.recent()[0]["fields"] == {"outcome": {"v1": "tenant", "v2": "not found"}}
