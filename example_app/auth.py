"""Who may use the example's admin pages: a bearer token for scripts, a session for browsers."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from flask import abort, current_app, redirect, request, session, url_for
from werkzeug.wrappers import Response

__all__ = [
    "ADMIN_PREFIX",
    "csrf_token",
    "given_token",
    "log_in",
    "log_out",
    "require_admin",
    "safe_next",
    "token_matches",
]

#: Where the admin pages live.
ADMIN_PREFIX = "/admin"

#: Endpoints anyone may reach: the sign-in form and its submission.
PUBLIC_ENDPOINTS = frozenset({"admin.login_form", "admin.login"})

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def given_token() -> str | None:
    """The token the request presents (``Authorization: Bearer`` or a ``token`` form field).

    Never from the query string: a URL ends up in browser history and server logs.
    """
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    token = request.form.get("token")
    return None if token is None else str(token)


def token_matches(given: str) -> bool:
    """Whether ``given`` is the admin token."""
    expected: str = current_app.config["EXAMPLE_ADMIN_TOKEN"]
    # Constant-time comparison: the token is the only thing guarding these pages.
    return hmac.compare_digest(given.encode(), expected.encode())


def _fingerprint() -> str:
    # The session cookie is signed, not encrypted: it must not carry anything that helps guess
    # the token, so this is keyed by the secret key. A new token ends every existing session.
    key = current_app.secret_key
    key_bytes = key if isinstance(key, bytes) else str(key).encode()
    token: str = current_app.config["EXAMPLE_ADMIN_TOKEN"]
    return hmac.new(key_bytes, token.encode(), hashlib.sha256).hexdigest()


def log_in() -> None:
    """Start an admin session, with a fresh CSRF token for its forms."""
    session.clear()
    session["admin"] = _fingerprint()
    session["csrf"] = secrets.token_urlsafe(32)


def log_out() -> None:
    """End the admin session."""
    session.clear()


def _logged_in() -> bool:
    return hmac.compare_digest(str(session.get("admin", "")), _fingerprint())


def csrf_token() -> str:
    """The session's CSRF token, for a hidden ``csrf_token`` field in every POST form."""
    return str(session.get("csrf", ""))


def _csrf_ok() -> bool:
    expected = csrf_token()
    sent = str(request.form.get("csrf_token", ""))
    return bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())


def _prefers_html() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html"


def safe_next(target: str | None) -> str:
    """``target`` if it is an admin page of this site, else the tenant list (no open redirect)."""
    if target:
        parts = urlsplit(target)
        prefix = f"{request.script_root}{ADMIN_PREFIX}/"
        if (
            not parts.scheme
            and not parts.netloc
            and "\\" not in target
            and parts.path.startswith(prefix)
        ):
            return target
    return url_for("admin.tenant_list")


def require_admin() -> Response | None:
    """Let the request through, send a browser to the sign-in form, or answer 401 / 400.

    A token (header or field) authenticates by itself; a POST that relies on the session
    cookie must also carry the session's CSRF token, since a browser sends that cookie on
    cross-site form posts too (SameSite=Lax narrows that, but not for every browser).
    """
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    token = given_token()
    if token is not None:
        if not token_matches(token):
            abort(401, "wrong admin token")
        return None
    if _logged_in():
        if request.method not in _SAFE_METHODS and not _csrf_ok():
            abort(400, "the form's CSRF token is missing or stale: reload the page")
        return None
    if request.method != "GET" or not _prefers_html():
        abort(401, "sign in at /admin/login, or send 'Authorization: Bearer <token>'")
    here = request.script_root + request.full_path.rstrip("?")
    return redirect(url_for("admin.login_form", next=here))
