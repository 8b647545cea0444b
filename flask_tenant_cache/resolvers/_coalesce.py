"""Single-flight request coalescing: one load per key, its outcome shared by every waiter."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from ..errors import LoadTimeout

__all__ = ["SingleFlight"]

T = TypeVar("T")


class _Flight(Generic[T]):
    __slots__ = ("done", "error", "value", "waiters")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None
        self.waiters = 0


class SingleFlight(Generic[T]):
    """Runs at most one call per key at a time; concurrent callers share its result or error.

    A per-key map of calls in flight: the error reaches every waiter of the
    failed call once (no waiter re-runs the call after it, so no serial retry storm), waiters
    give up after ``timeout`` seconds instead of hanging, and :meth:`forget` detaches calls
    that an invalidation made stale, so callers that come after it start a fresh call.

    :param timeout: seconds a waiter waits before :class:`~.errors.LoadTimeout`; None waits on.
    """

    def __init__(self, timeout: float | None = None) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight[T]] = {}
        #: Callers that waited on another's call instead of making their own.
        self.coalesced = 0
        #: Waiters that gave up after ``timeout``.
        self.timeouts = 0

    def do(self, key: str, call: Callable[[], T]) -> T:
        """Return ``call()``, or the outcome of the call already running for ``key``."""
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
            else:
                flight.waiters += 1
                self.coalesced += 1
        if not leader:
            return self._wait(flight)
        try:
            value = flight.value = call()
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                if self._flights.get(key) is flight:
                    del self._flights[key]
            flight.done.set()
        return value

    def _wait(self, flight: _Flight[T]) -> T:
        if not flight.done.wait(self.timeout):
            with self._lock:
                self.timeouts += 1
            raise LoadTimeout(f"the tenant lookup took longer than {self.timeout} s")
        if flight.error is not None:
            raise flight.error
        return flight.value  # type: ignore[return-value]

    def forget(self, keys: Iterable[str] | None = None) -> None:
        """Detach the running calls for ``keys`` (all if None): later callers start anew.

        Callers already waiting still get the detached call's outcome: they asked before.
        """
        with self._lock:
            if keys is None:
                self._flights.clear()
            else:
                for key in keys:
                    self._flights.pop(key, None)

    def in_flight(self) -> int:
        """How many calls are running now."""
        with self._lock:
            return len(self._flights)
