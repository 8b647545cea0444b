"""Shadow comparison: sampled requests resolved again by the other version, off the response."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask

from . import signals
from .errors import TenantLookupError
from .figures import Figures
from .identifiers import TenantIdentifier
from .mismatches import IgnoreRule, MismatchLog, MismatchStore, Outcome, mismatch_record
from .resolvers.base import Resolver
from .tenant import Tenant

__all__ = ["Outcome", "ShadowComparer", "outcome_of"]

logger = logging.getLogger("flask_tenant_cache")


def outcome_of(resolve: Callable[[], Tenant | None]) -> Outcome:
    """Run ``resolve``; a lookup error becomes its class name, so outcomes compare."""
    try:
        return resolve()
    except TenantLookupError as exc:
        return type(exc).__name__


def describe(outcome: Outcome) -> Any:
    """An outcome as a loggable value; a tenant's ``extra`` (the app's own data) left out."""
    if isinstance(outcome, Tenant):
        data = outcome.to_dict()
        del data["extra"]
        return data
    return outcome


def differing(primary: Outcome, shadow: Outcome) -> list[str]:
    """The tenant fields in which two outcomes differ, or ``["outcome"]`` if not both tenants."""
    if not (isinstance(primary, Tenant) and isinstance(shadow, Tenant)):
        return ["outcome"]
    mine, theirs = primary.to_dict(), shadow.to_dict()
    return [name for name in mine if mine[name] != theirs[name]]


class ShadowComparer:
    """Resolves sampled requests again with the other resolver, in a small bounded pool.

    The request never waits for it: a shadow that finds the pool full is dropped (counted),
    one that takes longer than ``timeout`` is counted as slow and not compared, and its errors
    never reach the request. A mismatch (an error on one side included) is counted, logged with
    both values, recorded (see :mod:`.mismatches`) and sent as the ``shadow_mismatch`` signal,
    unless an ignore rule accepts it (then it counts as ``ignored``).

    :param app: the app (a shadow runs in its app context, which the loader may need).
    :param resolvers: the app's resolvers by version.
    :param workers: threads in the pool.
    :param max_pending: shadows queued or running at once before new ones are dropped.
    :param figures: where each comparison is counted for the guard.
    :param records: where mismatches are kept.
    :param clock: wall-clock seconds, for the records.
    """

    def __init__(
        self,
        app: Flask,
        resolvers: dict[str, Resolver],
        *,
        timeout: float,
        workers: int = 2,
        max_pending: int = 64,
        figures: Figures | None = None,
        records: MismatchStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.figures = figures
        self.records: MismatchStore = records if records is not None else MismatchLog(50)
        self.clock = clock
        #: Ignore rules (see :meth:`.TenantCache.shadow_ignore`), tried in order.
        self.ignore_rules: list[IgnoreRule] = []
        self.resolvers = resolvers
        self.timeout = timeout
        self.workers = workers
        self._slots = threading.BoundedSemaphore(max_pending)
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._pid = 0
        self.counters = dict.fromkeys(
            ("submitted", "matched", "mismatched", "ignored", "dropped", "slow", "failed"), 0
        )
        #: Shadow lookups made by each resolver (not requests it served).
        self.lookups = {"v1": 0, "v2": 0}

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def _pool(self) -> ThreadPoolExecutor:
        # Threads do not survive a fork: a child builds its own pool.
        with self._lock:
            if self._executor is None or self._pid != os.getpid():
                self._executor = ThreadPoolExecutor(
                    self.workers, thread_name_prefix="tenant-cache-shadow"
                )
                self._pid = os.getpid()
            return self._executor

    def submit(self, primary_version: str, ident: TenantIdentifier, primary: Outcome) -> None:
        """Compare ``primary`` with the other version's answer for ``ident``, later."""
        if not self._slots.acquire(blocking=False):
            self._count("dropped")
            return
        self._count("submitted")
        shadow_version = "v1" if primary_version == "v2" else "v2"
        try:
            self._pool().submit(self._run, primary_version, shadow_version, ident, primary)
        except RuntimeError:  # the pool is shutting down
            self._slots.release()
            with self._lock:  # it never ran: dropped, not submitted
                self.counters["submitted"] -= 1
                self.counters["dropped"] += 1

    def _run(
        self, primary_version: str, version: str, ident: TenantIdentifier, primary: Outcome
    ) -> None:
        with self._lock:
            self.lookups[version] += 1
        try:
            started = time.monotonic()
            # Receivers of the signal run in the app context too (they may use current_app).
            with self.app.app_context():
                shadow = outcome_of(lambda: self.resolvers[version].resolve(ident))
                if time.monotonic() - started > self.timeout:
                    self._count("slow")
                    return
                if shadow == primary:
                    self._count("matched")
                    self._compared(mismatched=False)
                    return
                outcomes = {primary_version: primary, version: shadow}
                if self._ignored(ident, outcomes):
                    self._count("ignored")
                    self._compared(mismatched=False)
                    return
                self._count("mismatched")
                self._compared(mismatched=True)
                self.records.add(mismatch_record(ident, primary_version, outcomes, self.clock()))
                logger.warning(
                    "tenant cache shadow mismatch for %s (%s differ): %s gave %r, %s gave %r",
                    ident.cache_key,
                    ", ".join(differing(primary, shadow)),
                    primary_version,
                    describe(primary),
                    version,
                    describe(shadow),
                )
                signals.shadow_mismatch.send(
                    self.app,
                    identifier=ident,
                    primary_version=primary_version,
                    primary=primary,
                    shadow_version=version,
                    shadow=shadow,
                )
        except Exception:
            self._count("failed")
            logger.exception("tenant cache shadow comparison failed for %s", ident.cache_key)
        finally:
            self._slots.release()

    def _compared(self, *, mismatched: bool) -> None:
        if self.figures is not None:
            self.figures.record_shadow(mismatched=mismatched)

    def _ignored(self, ident: TenantIdentifier, outcomes: dict[str, Outcome]) -> bool:
        for rule in self.ignore_rules:
            try:
                if rule(ident, outcomes["v1"], outcomes["v2"]):
                    return True
            except Exception:
                # A broken rule must not hide a difference: it counts as not ignoring it.
                logger.exception("tenant cache shadow ignore rule %r failed", rule)
        return False

    def stats(self) -> dict[str, Any]:
        """The shadow counters."""
        with self._lock:
            return {**self.counters, "lookups": dict(self.lookups)}

    def close(self) -> None:
        """Wait for running shadows and stop the pool."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
