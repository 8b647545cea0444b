"""HTTP-facing errors raised while resolving the tenant of a request."""

from __future__ import annotations

import json
from typing import Any, cast

from flask import Response, current_app, has_app_context
from werkzeug import exceptions
from werkzeug.exceptions import (
    BadRequest,
    Forbidden,
    HTTPException,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
)


class _JSONError(HTTPException):
    """An HTTP error whose default body is ``{"error": ..., "message": ...}``."""

    error_code = "tenant_error"

    def get_body(self, environ: Any = None, scope: Any = None) -> str:
        return self._rendered()[0]

    def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
        headers = [(k, v) for k, v in super().get_headers(environ, scope) if k != "Content-Type"]
        return [*headers, ("Content-Type", self._rendered()[1])]

    def _rendered(self) -> tuple[str, str]:
        """The body and its media type, made by the app's JSON provider when there is an app,
        so these look like the app's other JSON answers (compactness, key order, type)."""
        body = {"error": self.error_code, "message": self.description}
        if not has_app_context():
            return json.dumps(body), "application/json"
        response = cast(Response, current_app.json.response(body))
        return response.get_data(as_text=True), response.mimetype or "application/json"


class InvalidTenantIdentifier(_JSONError, BadRequest):
    """The tenant identifier (header or Host) is malformed: 400."""

    error_code = "invalid_tenant_identifier"


class MissingTenantIdentifier(InvalidTenantIdentifier):
    """The request names no tenant although one is required: 400."""

    error_code = "missing_tenant_identifier"


class ConflictingTenantIdentifiers(InvalidTenantIdentifier):
    """Two strategies name different tenants (``TENANT_CACHE_ON_CONFLICT = "error"``): 400."""

    error_code = "conflicting_tenant_identifiers"


class UntrustedTenantHeader(_JSONError, Forbidden):
    """The tenant header came from a source ``TENANT_CACHE_HEADER_TRUSTED`` does not trust: 403."""

    error_code = "untrusted_tenant_header"


class TenantNotFound(_JSONError, NotFound):
    """No active tenant answers to the identifier: 404."""

    error_code = "tenant_not_found"


class TenantLookupError(_JSONError, ServiceUnavailable):
    """The tenant could not be looked up (the loader failed or timed out): 503."""

    error_code = "tenant_lookup_failed"

    def __init__(self, description: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(description, retry_after=retry_after)


class LoadTimeout(TenantLookupError):
    """A request waited longer than ``TENANT_CACHE_LOAD_TIMEOUT`` for a shared load: 503."""

    error_code = "tenant_lookup_timeout"


class AdminAuthRequired(_JSONError, Unauthorized):
    """An admin route was called without valid credentials: 401."""

    error_code = "admin_auth_required"

    def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
        return [*super().get_headers(environ, scope), ("WWW-Authenticate", "Bearer")]


class AdminForbidden(_JSONError, Forbidden):
    """An admin route refused the caller, or no admin access is configured: 403."""

    error_code = "admin_forbidden"


class FeatureUnavailable(_JSONError, exceptions.NotImplemented):
    """A route needs an optional extra that is not installed: 501."""

    error_code = "feature_unavailable"


class InvalidAdminRequest(_JSONError, BadRequest):
    """An admin route got a malformed body: 400."""

    error_code = "invalid_request"


class RolloutStateUnavailable(_JSONError, ServiceUnavailable):
    """The rollout plan's shared state could not be read or written (Redis did not answer)."""

    error_code = "rollout_state_unavailable"
