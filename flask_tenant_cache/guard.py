"""The guard's rule: is v2 worse than v1 over the window, beyond the configured limits?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["GuardLimits", "Verdict", "evaluate"]


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """What the guard tolerates (``TENANT_CACHE_GUARD_*``)."""

    #: Shadow comparisons that disagreed, over those compared.
    max_mismatch_ratio: float = 0.01
    #: v2's share of failed lookups minus v1's.
    max_error_ratio: float = 0.01
    #: v2's p99 resolution time over v1's, each taken as at least :attr:`p99_floor`.
    max_p99_ratio: float = 2.0
    #: Seconds below which a p99 is never a problem (a cache hit against a cache hit).
    p99_floor: float = 0.005
    #: Samples a signal needs in the window before it may trip, or let a plan advance.
    min_samples: int = 100


class Verdict(NamedTuple):
    """One evaluation of the window."""

    #: The first signal beyond its limit, or None.
    breach: dict[str, Any] | None
    #: Each signal: its value, limit, samples and state (``ok``, ``waiting`` or ``breach``).
    checks: dict[str, dict[str, Any]]
    #: Whether v2 served enough requests for the window to vouch for it.
    enough: bool


def _check(value: float | None, limit: float, samples: int, minimum: int) -> dict[str, Any]:
    state = "waiting" if value is None or samples < minimum else "ok"
    if state == "ok" and value is not None and value > limit:
        state = "breach"
    return {"value": value, "limit": limit, "samples": samples, "state": state}


def evaluate(window: dict[str, Any], limits: GuardLimits) -> Verdict:
    """Judge :meth:`.Figures.window` against ``limits``.

    The error signal compares v2's error ratio with v1's only when v1 has enough samples of
    its own (else with 0, so too little v1 traffic cannot hide v2's errors); the p99 signal
    needs enough samples of both, since a ratio to nothing means nothing.
    """
    v1, v2, shadow = window["v1"], window["v2"], window["shadow"]
    minimum = limits.min_samples
    errors = None
    if v2["error_ratio"] is not None:
        baseline = v1["error_ratio"] if v1["requests"] >= minimum else 0.0
        errors = v2["error_ratio"] - (baseline or 0.0)
    floor = limits.p99_floor
    p99_v1, p99_v2 = v1["resolve_seconds"]["p99"], v2["resolve_seconds"]["p99"]
    p99 = None
    if p99_v1 is not None and p99_v2 is not None:
        p99 = max(p99_v2, floor) / max(p99_v1, floor)
    checks = {
        "mismatch_ratio": _check(
            shadow["mismatch_ratio"], limits.max_mismatch_ratio, shadow["compared"], minimum
        ),
        "error_ratio": _check(errors, limits.max_error_ratio, v2["requests"], minimum),
        "p99_ratio": _check(
            p99, limits.max_p99_ratio, min(v1["requests"], v2["requests"]), minimum
        ),
    }
    breach = next(
        ({"signal": name, **check} for name, check in checks.items() if check["state"] == "breach"),
        None,
    )
    return Verdict(breach, checks, v2["requests"] >= minimum)
