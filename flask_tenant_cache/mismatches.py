"""Records of the last shadow mismatches, without a tenant's name or ``extra``, and ignore rules."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any, Protocol

from ._fork import reset_after_fork
from .identifiers import TenantIdentifier
from .tenant import Tenant

__all__ = ["IgnoreRule", "MismatchLog", "MismatchStore", "Outcome", "mismatch_record"]

#: What a resolution came to: a tenant, None (not found), or the error's class name.
Outcome = Tenant | None | str

#: Given the identifier, v1's outcome and v2's, true for a known, accepted difference.
IgnoreRule = Callable[[TenantIdentifier, Outcome, Outcome], bool]

#: Fields whose values a record never holds (the app's data, a person's or a company's name).
HIDDEN_FIELDS = frozenset({"name", "extra"})
HIDDEN = "(hidden)"


def _kind(outcome: Outcome) -> str:
    if isinstance(outcome, Tenant):
        return "tenant"
    return "not found" if outcome is None else outcome


def _field_values(tenant: Tenant) -> dict[str, Any]:
    return {k: HIDDEN if k in HIDDEN_FIELDS else v for k, v in tenant.to_dict().items()}


def mismatch_record(
    ident: TenantIdentifier, primary_version: str, outcomes: dict[str, Outcome], at: float
) -> dict[str, Any]:
    """One mismatch as JSON: the key, when, and each differing field's value per version.

    ``outcomes`` holds both versions' outcomes. When one of them is not a tenant the only
    field is ``outcome`` (``"tenant"``, ``"not found"`` or the error's class name).
    """
    v1, v2 = outcomes["v1"], outcomes["v2"]
    if isinstance(v1, Tenant) and isinstance(v2, Tenant):
        one, two = _field_values(v1), _field_values(v2)
        raw_one, raw_two = v1.to_dict(), v2.to_dict()
        fields = {
            name: {"v1": one[name], "v2": two[name]}
            for name in raw_one
            if raw_one[name] != raw_two[name]
        }
    else:
        fields = {"outcome": {"v1": _kind(v1), "v2": _kind(v2)}}
    return {"key": ident.cache_key, "at": at, "primary": primary_version, "fields": fields}


class MismatchStore(Protocol):
    """Where mismatch records are kept: this process, or Redis for every process."""

    scope: str

    def add(self, record: dict[str, Any]) -> None:
        """Keep ``record``, dropping the oldest past the bound."""

    def recent(self) -> list[dict[str, Any]]:
        """The records kept, newest first."""


class MismatchLog:
    """The last ``size`` mismatches of this process."""

    scope = "process"

    def __init__(self, size: int) -> None:
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)
        self._lock = threading.Lock()
        reset_after_fork(self._forked)

    def _forked(self) -> None:
        self._lock = threading.Lock()

    def add(self, record: dict[str, Any]) -> None:
        """Keep ``record``; the oldest goes past the bound."""
        with self._lock:
            self._records.appendleft(record)

    def recent(self) -> list[dict[str, Any]]:
        """The records, newest first."""
        with self._lock:
            return list(self._records)
