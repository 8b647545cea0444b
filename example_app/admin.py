"""A tiny tenant admin: edit a tenant, commit, and invalidate its cached aliases at once."""

from __future__ import annotations

import hmac
import uuid
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, abort, current_app, render_template, request
from sqlalchemy.exc import IntegrityError

from flask_tenant_cache import TenantIdentifier
from flask_tenant_cache.identifiers import InvalidIdentifier, normalize_host

from .extensions import tenant_cache
from .models import Tenant, db

__all__ = ["admin"]

admin = Blueprint("admin", __name__, url_prefix="/admin")

Page = tuple[str, int]


def _given_token() -> str:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    return str(request.values.get("token", ""))


@admin.before_request
def _require_token() -> None:
    expected: str = current_app.config["EXAMPLE_ADMIN_TOKEN"]
    # Constant-time comparison: the token is the only thing guarding these pages.
    if not hmac.compare_digest(_given_token().encode(), expected.encode()):
        abort(401, "send 'Authorization: Bearer <token>' or a token form field")


def _page(tenant: Tenant, *, status: int = 200, **context: Any) -> Page:
    token = _given_token()
    return render_template("admin_tenant.html", tenant=tenant, token=token, **context), status


@admin.get("/tenants")
@tenant_cache.exempt
def tenant_list() -> str:
    """Every tenant, linked to its edit page."""
    tenants = db.session.scalars(sa.select(Tenant).order_by(Tenant.slug)).all()
    return render_template("admin_list.html", tenants=tenants, token=_given_token())


@admin.get("/tenants/<uuid:tenant_id>")
@tenant_cache.exempt
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
@tenant_cache.exempt
def tenant_update(tenant_id: uuid.UUID) -> Page:
    """Save the form, then drop the cached aliases so the next request sees the change."""
    tenant = db.get_or_404(Tenant, tenant_id)
    try:
        name, slug, domain = _clean(request.form)
    except ValueError as exc:  # InvalidIdentifier included
        return _page(tenant, status=400, error=str(exc))
    old_slug, old_domain = tenant.slug, tenant.domain
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
    # Invalidate after the commit: a load racing with it then reads the new row. Each call
    # drops every cached alias of the tenant and every not-found entry (the new slug may be
    # cached as unknown); naming the old slug, old domain and the id makes that explicit.
    dropped = tenant_cache.invalidate(TenantIdentifier.uuid(tenant_id))
    dropped += tenant_cache.invalidate(TenantIdentifier.slug(old_slug))
    if old_domain:
        dropped += tenant_cache.invalidate(TenantIdentifier.host(old_domain))
    return _page(tenant, saved=True, dropped=dropped)
