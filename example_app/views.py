"""The tenant-facing pages: ``/`` shows the request's tenant, ``/health`` needs none."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, render_template, request

from flask_tenant_cache import current_resolver_version, require_tenant

from .extensions import tenant_cache

__all__ = ["site"]

site = Blueprint("site", __name__)


@site.get("/")
def index() -> Response | str:
    """The current tenant: JSON for API clients and curl, a small page for browsers."""
    if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
        return render_template(
            "index.html", tenant=require_tenant(), resolver=current_resolver_version()
        )
    return jsonify(tenant=require_tenant().to_dict(), resolver=current_resolver_version())


@site.get("/health")
@tenant_cache.exempt
def health() -> Response:
    """Liveness check: answers without a tenant."""
    return jsonify(ok=True)
