"""A small tenant admin: edit tenants, invalidate them, steer the rollout, read the stats."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response

from flask_tenant_cache import TenantIdentifier
from flask_tenant_cache.identifiers import InvalidIdentifier, normalize_host

from . import auth, control
from .extensions import tenant_cache
from .models import Tenant, db

__all__ = ["admin", "describe_rollout", "stats_rows"]

admin = Blueprint("admin", __name__, url_prefix=auth.ADMIN_PREFIX)
admin.before_request(auth.require_admin)
tenant_cache.exempt(admin)
control.register(admin)

Page = tuple[str, int]

#: The rollout form's buttons and the override each one sets (``percent`` reads a field).
ROLLOUT_CHOICES: dict[str, str | None] = {"v1": "v1", "v2": "v2", "clear": None}


@admin.context_processor
def _admin_context() -> dict[str, Any]:
    return {"csrf_token": auth.csrf_token()}


def _see_other(endpoint: str, **values: Any) -> Response:
    return redirect(url_for(endpoint, **values), code=303)


# -- signing in ------------------------------------------------------------------------------


@admin.get("/login")
def login_form() -> str:
    """The sign-in form: the admin token, exchanged for a session cookie."""
    return render_template("admin_login.html", next=request.args.get("next", ""))


@admin.post("/login")
def login() -> ResponseReturnValue:
    """Check the token; start a session and go where the user was heading."""
    next_url = str(request.form.get("next", ""))
    if not auth.token_matches(str(request.form.get("token", ""))):
        return render_template("admin_login.html", next=next_url, error="wrong token"), 401
    auth.log_in()
    return redirect(auth.safe_next(next_url), code=303)


@admin.post("/logout")
def logout() -> Response:
    """End the session."""
    auth.log_out()
    return _see_other("admin.login_form")


# -- the dashboard ---------------------------------------------------------------------------


def describe_rollout(rollout: Mapping[str, Any]) -> str:
    """The effective rollout of ``stats()["rollout"]``, in words."""
    override = rollout["override"]
    if override in ("v1", "v2"):
        return f"every request on {override} (forced)"
    if override is not None:
        return f"{override:g}% of tenants on v2, the rest on v1 (forced)"
    if rollout["mode"] == "provider":
        return f"decided by the flag provider {rollout['provider']}"
    if rollout["mode"] == "percentage":
        return f"{rollout['v2_percent']:g}% of tenants on v2 (TENANT_CACHE_V2_PERCENT)"
    return f"every request on {'v2' if rollout['use_v2'] else 'v1'} (TENANT_CACHE_USE_V2)"


#: The stats table's rows, in the order :func:`_stats_column` fills them.
STATS_LABELS = (
    "Requests served",
    "Hits",
    "Not-found hits",
    "Misses",
    "Hit rate",
    "Entries",
    "Max entries",
    "Invalidated",
    "Evicted",
    "Expired",
    "Loads",
    "Load errors",
    "Load timeouts",
    "Coalesced loads",
    "Slowest load",
)


def _count(value: Any) -> str:
    return "-" if value is None else str(value)


def _stats_column(s: Mapping[str, Any], served: int) -> list[str]:
    load = s["load"]
    if "entry_count" in s:
        entries = str(s["entry_count"])
    else:  # v1 keeps found and not-found tenants in two caches
        entries = f"{s['positive_entries']} + {s['negative_entries']} not found"
    return [
        str(served),
        _count(s.get("hits")),
        _count(s.get("negative_hits")),
        _count(s.get("misses")),
        f"{s['hit_rate']:.1%}",
        entries,
        _count(s.get("max_entries")),
        _count(s.get("invalidations")),
        _count(s.get("evictions")),
        _count(s.get("expirations")),
        _count(load.get("loads")),
        _count(load.get("load_errors")),
        _count(load.get("load_timeouts")),
        _count(load.get("coalesced")),
        f"{load['load_time_max'] * 1000:.1f} ms",
    ]


def stats_rows(stats: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``tenant_cache.stats()`` as (counter, v1, v2) rows for a table; "-" where n/a."""
    served = stats["rollout"]["served"]
    v1 = _stats_column(stats["v1"], served.get("v1", 0))
    v2 = _stats_column(stats["v2"], served.get("v2", 0))
    return list(zip(STATS_LABELS, v1, v2, strict=True))


def _dashboard(*, status: int = 200, error: str | None = None) -> Page:
    tenants = db.session.scalars(sa.select(Tenant).order_by(Tenant.slug)).all()
    stats = tenant_cache.stats()
    page = render_template(
        "admin_list.html",
        tenants=tenants,
        rollout=stats["rollout"],
        rollout_text=describe_rollout(stats["rollout"]),
        stats_rows=stats_rows(stats),
        error=error,
        **control.control_context(stats),
    )
    return page, status


@admin.get("/tenants")
def tenant_list() -> Page:
    """Every tenant with its controls, the rollout controls, and the cache stats."""
    return _dashboard()


@admin.post("/tenants/<uuid:tenant_id>/invalidate")
def tenant_invalidate(tenant_id: uuid.UUID) -> Response:
    """Drop every cached alias of one tenant (say, after changing its row by hand)."""
    tenant = db.get_or_404(Tenant, tenant_id)
    dropped = tenant_cache.invalidate(str(tenant_id))
    flash(f"{tenant.name}: {dropped} cache entries invalidated.")
    return _see_other("admin.tenant_list")


@admin.post("/rollout")
def rollout() -> ResponseReturnValue:
    """Force v1 or v2, set a percentage of tenants on v2, or clear the override."""
    choice = str(request.form.get("rollout", ""))
    value: str | None
    if choice == "percent":
        value = str(request.form.get("percent", "")).strip()
    elif choice in ROLLOUT_CHOICES:
        value = ROLLOUT_CHOICES[choice]
    else:
        return _dashboard(status=400, error="choose v1, v2, a percentage or clear")
    try:
        result = tenant_cache.set_rollout(value)
    except ValueError as exc:
        return _dashboard(status=400, error=str(exc))
    where = "every process" if result["scope"] == "cluster" else "this process"
    if value is None:
        flash(f"Rollout override cleared on {where}.")
    else:
        flash(f"Rollout override set on {where}.")
    return _see_other("admin.tenant_list")


# -- editing a tenant ------------------------------------------------------------------------


def _page(tenant: Tenant, *, status: int = 200, **context: Any) -> Page:
    return render_template("admin_tenant.html", tenant=tenant, **context), status


@admin.get("/tenants/<uuid:tenant_id>")
def tenant_form(tenant_id: uuid.UUID) -> Page:
    """The edit form of one tenant."""
    return _page(db.get_or_404(Tenant, tenant_id))


def _clean(form: Any) -> tuple[str, str, str | None]:
    """The submitted name, slug and domain, validated as the extension will read them."""
    name = str(form.get("name", "")).strip()
    if not name:
        raise ValueError("the name is empty")
    slug = TenantIdentifier.slug(str(form.get("slug", "")).strip()).value
    raw_domain = str(form.get("domain", "")).strip()
    if not raw_domain:
        return name, slug, None
    domain = normalize_host(raw_domain)
    # A host under a base domain is read as a slug, so it could never reach this tenant.
    if tenant_cache.parse_identifier(domain).kind != "host":
        raise InvalidIdentifier(f"{domain} is a subdomain of a base domain, not a custom domain")
    return name, slug, domain


@admin.post("/tenants/<uuid:tenant_id>")
def tenant_update(tenant_id: uuid.UUID) -> Page:
    """Save the form; the commit itself invalidates the tenant's old and new aliases.

    That is ``TENANT_CACHE_AUTO_INVALIDATE``: its listener collects the aliases the row had
    and has at the flush, and invalidates them after the commit, so a load racing with the
    commit reads the new row.
    """
    tenant = db.get_or_404(Tenant, tenant_id)
    try:
        name, slug, domain = _clean(request.form)
    except ValueError as exc:  # InvalidIdentifier included
        return _page(tenant, status=400, error=str(exc))
    tenant.name, tenant.slug, tenant.domain = name, slug, domain
    active = request.form.getlist("active")
    if active:  # the form sends "off" always and "on" when checked; curl may send neither
        tenant.active = "on" in active
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        tenant = db.get_or_404(Tenant, tenant_id)
        return _page(tenant, status=409, error="another tenant already has this slug or domain")
    return _page(tenant, saved=True)
