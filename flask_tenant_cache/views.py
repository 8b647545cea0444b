"""The admin blueprint: thin views over the extension's methods."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .errors import FeatureUnavailable, InvalidAdminRequest
from .identifiers import InvalidIdentifier

__all__ = ["blueprint"]

blueprint = Blueprint("tenant_cache", __name__)


def _ext() -> Any:
    return current_app.extensions["tenant_cache"].ext


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
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or set(body) != {"override"}:
        raise InvalidAdminRequest('send {"override": "v1" | "v2" | <0-100> | null}')
    try:
        result = _ext().set_rollout(body["override"])
    except ValueError as exc:
        raise InvalidAdminRequest(str(exc)) from None
    return jsonify(result)


@blueprint.post("/invalidate")
def invalidate() -> Response:
    """``{"identifier": "..."}`` or ``{"all": true}`` -> ``{"invalidated": N}``."""
    body = request.get_json(silent=True)
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
