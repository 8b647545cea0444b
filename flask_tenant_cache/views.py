"""The admin blueprint: thin views over the extension's methods."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .errors import FeatureUnavailable, InvalidAdminRequest, RolloutStateUnavailable
from .identifiers import InvalidIdentifier
from .plan import StoreUnavailable

__all__ = ["blueprint"]

blueprint = Blueprint("tenant_cache", __name__)


#: An admin body is a few dozen bytes; anything past this is refused unread.
MAX_BODY = 4096


def _ext() -> Any:
    return current_app.extensions["tenant_cache"].ext


def _json_body() -> Any:
    """The request's JSON body, or None if it is not one (too long, not JSON, too deep).

    Read here rather than with ``request.get_json``: a deeply nested document raises
    RecursionError in the parser, which is no ValueError, so ``silent=True`` lets it through
    as a 500.
    """
    if not request.is_json or (request.content_length or 0) > MAX_BODY:
        return None
    data = request.stream.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        return None
    try:
        return current_app.json.loads(data)
    except (ValueError, RecursionError):
        return None


@blueprint.before_request
def _authorize() -> None:
    _ext().authorize_admin()


@blueprint.get("/stats")
def stats() -> Response:
    """Every resolver's counters as JSON."""
    return jsonify(_ext().stats())


@blueprint.get("/metrics")
def metrics() -> Response:
    """The counters in the Prometheus text format (needs the ``prometheus`` extra)."""
    try:
        from .prometheus import render
    except ImportError as exc:
        raise FeatureUnavailable(str(exc)) from None
    ext = _ext()
    return Response(
        render(ext.stats, ext.histograms), content_type="text/plain; version=0.0.4; charset=utf-8"
    )


@blueprint.post("/rollout")
def rollout() -> Response:
    """``{"override": "v1" | "v2" | <percent> | null}``: the kill switch, on every process."""
    body = _json_body()
    if not isinstance(body, dict) or set(body) != {"override"}:
        raise InvalidAdminRequest('send {"override": "v1" | "v2" | <0-100> | null}')
    try:
        result = _ext().set_rollout(body["override"])
    except ValueError as exc:
        raise InvalidAdminRequest(str(exc)) from None
    return jsonify(result)


@blueprint.get("/rollout/plan")
def rollout_plan() -> Response:
    """The rollout plan, the guard and its checks, as this process sees them."""
    return jsonify(_ext().rollout_control())


def _steer(action: str) -> Response:
    try:
        return jsonify(getattr(_ext(), f"rollout_{action}")())
    except ValueError as exc:
        raise InvalidAdminRequest(str(exc)) from None
    except StoreUnavailable as exc:
        raise RolloutStateUnavailable(f"nothing changed: {exc}") from None


@blueprint.post("/rollout/pause")
def rollout_pause() -> Response:
    """Stop the plan at its step."""
    return _steer("pause")


@blueprint.post("/rollout/resume")
def rollout_resume() -> Response:
    """Clear a pause or the guard's trip: the step bakes again from now."""
    return _steer("resume")


@blueprint.post("/rollout/restart")
def rollout_restart() -> Response:
    """Start the configured plan again from its first step."""
    return _steer("restart")


@blueprint.get("/rollout/mismatches")
def rollout_mismatches() -> Response:
    """The last shadow mismatches, newest first."""
    return jsonify(_ext().rollout_mismatches())


@blueprint.post("/invalidate")
def invalidate() -> Response:
    """``{"identifier": "..."}`` or ``{"all": true}`` -> ``{"invalidated": N}``."""
    body = _json_body()
    if not isinstance(body, dict) or set(body) not in ({"identifier"}, {"all"}):
        raise InvalidAdminRequest('send {"identifier": "<uuid, slug or host>"} or {"all": true}')
    if "all" in body:
        if body["all"] is not True:
            raise InvalidAdminRequest('"all" must be true')
        return jsonify(invalidated=_ext().invalidate_all())
    identifier = body["identifier"]
    if not isinstance(identifier, str):
        raise InvalidAdminRequest('"identifier" must be a string')
    try:
        dropped = _ext().invalidate(identifier)
    except InvalidIdentifier as exc:
        raise InvalidAdminRequest(str(exc)) from None
    return jsonify(invalidated=dropped)
