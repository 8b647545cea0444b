"""The admin page's migration section: the plan, the guard, per-version figures, mismatches."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, flash, redirect, url_for
from werkzeug.wrappers import Response

from flask_tenant_cache.plan import StoreUnavailable

from .extensions import tenant_cache

__all__ = ["control_context", "register"]

SIGNAL_NAMES = {
    "mismatch_ratio": "Shadow mismatch ratio",
    "error_ratio": "Error ratio (v2 over v1)",
    "p99_ratio": "p99 ratio (v2 / v1)",
}


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.3g} ms"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime("%H:%M:%S UTC")


def figure_rows(figures: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``stats()["figures"]`` as (figure, v1, v2) rows."""
    rows = [
        ("Requests", str(figures["v1"]["requests"]), str(figures["v2"]["requests"])),
        ("Lookup errors", str(figures["v1"]["errors"]), str(figures["v2"]["errors"])),
        ("503 answers", str(figures["v1"]["unavailable"]), str(figures["v2"]["unavailable"])),
        ("Error ratio", _ratio(figures["v1"]["error_ratio"]), _ratio(figures["v2"]["error_ratio"])),
    ]
    for kind, label in (("resolve_seconds", "Resolution"), ("request_seconds", "Request")):
        for q in ("p50", "p95", "p99"):
            rows.append((f"{label} {q}", _ms(figures["v1"][kind][q]), _ms(figures["v2"][kind][q])))
    return rows


def _plan(control: Mapping[str, Any]) -> dict[str, Any] | None:
    plan = control["plan"]
    if plan is None:
        return None
    state = "tripped" if plan["tripped"] else "paused" if plan["paused"] else "running"
    return {
        "steps": [
            {
                "percent": f"{s['percent']:g}%",
                "bake": f"{s['bake']:g} s",
                "current": i == plan["step"],
            }
            for i, s in enumerate(plan["steps"])
        ],
        "summary": f"step {plan['step'] + 1} of {len(plan['steps'])}: "
        f"{plan['percent']:g}% on v2, {state}",
        "since": _when(plan["started_at"]),
        "waiting_for": plan["waiting_for"],
        "state": state,
    }


def _guard(control: Mapping[str, Any]) -> dict[str, Any] | None:
    guard = control["guard"]
    if guard is None:
        return None
    trip = guard["tripped"]
    checks = [
        {
            "name": SIGNAL_NAMES[name],
            "value": _ratio(check["value"]),
            "limit": _ratio(check["limit"]),
            "samples": check["samples"],
            "state": check["state"],
        }
        for name, check in (guard["checks"] or {}).items()
    ]
    return {
        "tripped": None
        if trip is None
        else f"at {_when(trip['at'])} on {SIGNAL_NAMES[trip['signal']].lower()}: "
        f"{_ratio(trip['value'])} over the limit {_ratio(trip['limit'])} "
        f"({trip['samples']} samples, {trip['scope']})",
        "checks": checks,
        "min_samples": guard["limits"]["min_samples"],
    }


def _mismatches(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [
        {
            "at": _when(r["at"]),
            "key": r["key"],
            "primary": r["primary"],
            "fields": "; ".join(
                f"{name}: v1 {values['v1']!r}, v2 {values['v2']!r}"
                for name, values in r["fields"].items()
            ),
        }
        for r in records
    ]


def control_context(stats: Mapping[str, Any]) -> dict[str, Any]:
    """What the page's migration section shows, from ``stats()`` and the mismatch records."""
    control = stats.get("control")
    records = tenant_cache.rollout_mismatches()
    return {
        "control_scope": None if control is None else control["scope"],
        "plan": None if control is None else _plan(control),
        "guard": None if control is None else _guard(control),
        "figure_rows": figure_rows(stats["figures"]),
        "window": f"{stats['figures']['window_seconds']:g} s",
        "mismatches": _mismatches(records["mismatches"]),
        "mismatch_scope": records["scope"],
    }


def _steer(action: str) -> Response:
    try:
        getattr(tenant_cache, f"rollout_{action}")()
    except (ValueError, StoreUnavailable) as exc:
        flash(f"Could not {action} the plan: {exc}")
    else:
        flash(f"Rollout plan {action}d.")
    return redirect(url_for("admin.tenant_list"), code=303)


def register(admin: Blueprint) -> None:
    """Add the pause and resume buttons' routes to the admin blueprint."""

    @admin.post("/rollout/pause")
    def rollout_pause() -> Response:
        """Stop the plan at its step."""
        return _steer("pause")

    @admin.post("/rollout/resume")
    def rollout_resume() -> Response:
        """Clear a pause or the guard's trip."""
        return _steer("resume")
