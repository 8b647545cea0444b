"""Blinker signals sent by the extension; the sender is always the app."""

from __future__ import annotations

from blinker import Namespace

__all__ = ["rollout_tripped", "shadow_mismatch", "tenant_invalidated", "tenant_resolved"]

_signals = Namespace()

#: Sent after a request's tenant is resolved, with ``tenant``, ``identifier`` and ``version``.
tenant_resolved = _signals.signal("tenant-cache.tenant-resolved")

#: Sent after an invalidation, with ``identifier`` (None for all) and ``dropped``.
tenant_invalidated = _signals.signal("tenant-cache.tenant-invalidated")

#: Sent when a shadow resolution disagrees, with ``identifier``, ``primary_version``,
#: ``primary``, ``shadow_version`` and ``shadow`` (a Tenant, None, or an error's class name).
shadow_mismatch = _signals.signal("tenant-cache.shadow-mismatch")

#: Sent by the process whose guard tripped the kill switch, with ``reason`` (the signal, its
#: value, limit and samples, when, the step) and ``scope`` (``"cluster"`` or ``"process"``).
rollout_tripped = _signals.signal("tenant-cache.rollout-tripped")
