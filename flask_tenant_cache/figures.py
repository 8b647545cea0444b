"""Per-version latency and error figures over a sliding window, cheap enough for every hit."""

from __future__ import annotations

import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._fork import reset_after_fork

if TYPE_CHECKING:
    from .state import AppState

__all__ = ["BOUNDS", "TIMING_KEY", "VERSIONS", "Figures", "RequestRecorder", "quantile"]

#: The upper bounds of the histogram buckets, in seconds (a last bucket counts the rest):
#: 1, 2.5 and 5 per decade from 1 µs to 10 s, so a cache hit and a slow load both resolve.
BOUNDS: tuple[float, ...] = (
    *(
        round(mantissa * 10.0**exponent, 12)
        for exponent in range(-6, 1)
        for mantissa in (1, 2.5, 5)
    ),
    10.0,
)

VERSIONS = ("v1", "v2")

_N = len(BOUNDS) + 1
# One version's block in a slice: resolve buckets, request buckets, then these counters.
_REQUESTS, _ERRORS, _UNAVAILABLE, _RESOLVE_SUM, _REQUEST_SUM = range(2 * _N, 2 * _N + 5)
_BLOCK = 2 * _N + 5
# After both versions' blocks, the slice's shadow counters (a comparison is of both versions).
_COMPARED, _MISMATCHED = 2 * _BLOCK, 2 * _BLOCK + 1
_WIDTH = 2 * _BLOCK + 2
_OFFSET = {"v1": 0, "v2": _BLOCK}

Timer = Callable[[], float]
#: A ring's ``until`` that makes its next record pick its slice again.
_NEVER = float("-inf")


def quantile(q: float, buckets: Sequence[int]) -> float | None:
    """The ``q`` quantile (0-1) of a histogram over :data:`BOUNDS`, None if it is empty.

    Linear within the bucket it falls in, as Prometheus' ``histogram_quantile`` does; a value
    in the last, unbounded bucket is reported as the largest bound.
    """
    total = sum(buckets)
    if not total:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            if index == len(BOUNDS):
                return BOUNDS[-1]
            low = BOUNDS[index - 1] if index else 0.0
            return low + (BOUNDS[index] - low) * (rank - seen) / count
        seen += count
    return BOUNDS[-1]


class _Ring:
    """One thread's slices and since-start totals; only that thread writes them.

    ``state`` is ``(totals, slices)``, replaced as a whole when a slice is reused, so a
    reader that takes it once sees each count either in a slice or in the totals, never in
    both (a Prometheus counter must never go down). ``slot`` is the slice counted into until
    the timer reads ``until``, so a record finds it with one comparison.
    """

    __slots__ = ("slot", "state", "until")

    def __init__(self, slices: int) -> None:
        self.state: tuple[list[Any], tuple[list[Any], ...]] = (
            [0] * _WIDTH,
            tuple([-1] + [0] * _WIDTH for _ in range(slices)),
        )
        self.slot = self.state[1][0]
        self.until = _NEVER

    def roll(self, index: int, epoch: int) -> list[Any]:
        """Reuse slice ``index`` for ``epoch``: its counts join the totals; the new slice."""
        totals, slices = self.state
        old = slices[index]
        fresh = [epoch] + [0] * _WIDTH
        self.state = (
            [total + count for total, count in zip(totals, old[1:], strict=True)],
            (*slices[:index], fresh, *slices[index + 1 :]),
        )
        return fresh


def _merge(into: _Ring, ring: _Ring) -> None:
    """Add the counts of ``ring`` (a thread that ended) to ``into``, slice by slice."""
    totals, slices = ring.state
    for index, old in enumerate(slices):
        mine = into.state[1][index]
        if old[0] > mine[0]:
            mine = into.roll(index, old[0])
        target = mine if old[0] == mine[0] else into.state[0]  # older than the slice: totals
        offset = 1 if target is mine else 0
        for i in range(_WIDTH):
            target[i + offset] += old[i + 1]
    kept = into.state[0]
    for i in range(_WIDTH):
        kept[i] += totals[i]


class Figures:
    """Resolution and request times, errors and 503s per version, and shadow outcomes.

    Counted into fixed buckets in rings of ``slices`` slices of ``slice_seconds`` each, one
    ring per thread, so a record takes no lock: it is a few list increments on the thread's
    own lists, and the memory is fixed per thread. A slice joins the since-start totals when
    its ring reuses it, and a thread's ring joins a shared one when the thread ends. The
    window reads the live slices of every ring, the Prometheus histograms everything.

    :param timer: a monotonic clock in seconds (injected so tests move time).
    """

    def __init__(self, *, timer: Timer, slice_seconds: float = 10.0, slices: int = 6) -> None:
        self.timer = timer
        self.slice_seconds = slice_seconds
        self.slices = slices
        self._start()
        reset_after_fork(self._start)

    def _start(self) -> None:
        """Empty figures: at start, and in a forked child (its own traffic, its own locks)."""
        self._local = threading.local()
        # Guards the list of rings and the retired ring, never a record.
        self._lock = threading.Lock()
        self._rings: list[_Ring] = []
        self._retired = _Ring(self.slices)
        # Added to every slice number; a reset moves it past the window (see reset_window).
        self._shift = [0]
        #: ``record(version, resolve, request, error, unavailable, now)``: count one request.
        self.record = self._recorder()

    @property
    def window_seconds(self) -> float:
        """How far back :meth:`window` sees."""
        return self.slice_seconds * self.slices

    def _new_ring(self) -> _Ring:
        ring = _Ring(self.slices)
        sentinel = self._local.sentinel = _Sentinel()
        self._local.ring = ring
        with self._lock:
            self._rings.append(ring)
        # When the thread ends its locals go, and its counts move to the retired ring.
        weakref.finalize(sentinel, _retire, weakref.ref(self), ring)
        return ring

    def _retire(self, ring: _Ring) -> None:
        with self._lock:
            if ring in self._rings:
                self._rings.remove(ring)
                _merge(self._retired, ring)

    def _slot(self, now: float) -> list[Any]:
        try:
            ring: _Ring = self._local.ring
        except AttributeError:
            ring = self._new_ring()
        return ring.slot if now < ring.until else self._advance(ring, now)

    def _advance(self, ring: _Ring, now: float) -> list[Any]:
        """The slice of ``ring`` that ``now`` falls in, kept as its ``slot`` until it ends."""
        shift = self._shift[0]
        step = now // self.slice_seconds
        epoch = int(step) + shift
        index = epoch % self.slices
        slot = ring.state[1][index]
        if slot[0] != epoch:
            slot = ring.roll(index, epoch)
        ring.slot = slot
        ring.until = (step + 1) * self.slice_seconds
        if self._shift[0] != shift:
            # A reset came while this ran, perhaps before its mark was overwritten just above.
            ring.until = _NEVER
        return slot

    def _recorder(self) -> Callable[..., None]:
        # The hit path: everything it reads bound as a local, no lock, no method lookups.
        local, new_ring, advance = self._local, self._new_ring, self._advance
        indexes = {
            version: (
                base,
                base + _N,
                *(base + i for i in (_REQUESTS, _RESOLVE_SUM, _REQUEST_SUM, _ERRORS, _UNAVAILABLE)),
            )
            for version, base in ((v, _OFFSET[v] + 1) for v in VERSIONS)
        }

        def record(
            version: str,
            resolve: float,
            request: float,
            error: bool,
            unavailable: bool,
            now: float,
        ) -> None:
            """Count one request that ``version`` resolved (``error``: its lookup failed)."""
            resolves, requests, count, resolve_sum, request_sum, errors, answered_503 = indexes[
                version
            ]
            try:
                ring = local.ring
            except AttributeError:
                ring = new_ring()
            slot = ring.slot if now < ring.until else advance(ring, now)
            slot[resolves + bisect_left(BOUNDS, resolve)] += 1
            slot[requests + bisect_left(BOUNDS, request)] += 1
            slot[count] += 1
            slot[resolve_sum] += resolve
            slot[request_sum] += request
            if error:
                slot[errors] += 1
            if unavailable:
                slot[answered_503] += 1

        return record

    def record_shadow(self, *, mismatched: bool) -> None:
        """Count one shadow comparison (ignored differences count as matches)."""
        slot = self._slot(self.timer())
        slot[_COMPARED + 1] += 1
        if mismatched:
            slot[_MISMATCHED + 1] += 1

    def reset_window(self) -> None:
        """Forget the window (kept in the totals): a guard that was cleared starts afresh.

        Slices are numbered on from past the window, so every slice held so far is out of
        it, and each thread starts a new one (its old one joining the totals) as it records:
        the numbering moves first, then every ring is told to pick its slice again.
        """
        self._shift[0] += self.slices + 1
        with self._lock:
            for ring in self._rings:
                ring.until = _NEVER

    def _states(self) -> list[tuple[list[Any], tuple[list[Any], ...]]]:
        with self._lock:
            return [ring.state for ring in (*self._rings, self._retired)]

    def _window_sum(self) -> list[Any]:
        epoch = int(self.timer() // self.slice_seconds) + self._shift[0]
        low = epoch - self.slices
        summed = [0] * _WIDTH
        for _, slices in self._states():
            for slot in slices:
                if low < slot[0] <= epoch:
                    for index in range(_WIDTH):
                        summed[index] += slot[index + 1]
        return summed

    def _totals_sum(self) -> list[Any]:
        summed = [0] * _WIDTH
        for totals, slices in self._states():
            for index in range(_WIDTH):
                summed[index] += totals[index]
            for slot in slices:
                for index in range(_WIDTH):
                    summed[index] += slot[index + 1]
        return summed

    def window(self) -> dict[str, Any]:
        """The window's figures: per version counts, ratios and p50/p95/p99 in seconds."""
        summed = self._window_sum()
        data: dict[str, Any] = {"window_seconds": self.window_seconds}
        for version in VERSIONS:
            block = summed[_OFFSET[version] : _OFFSET[version] + _BLOCK]
            requests = block[_REQUESTS]
            data[version] = {
                "requests": requests,
                "errors": block[_ERRORS],
                "unavailable": block[_UNAVAILABLE],
                "error_ratio": block[_ERRORS] / requests if requests else None,
                "resolve_seconds": _quantiles(block[:_N]),
                "request_seconds": _quantiles(block[_N : 2 * _N]),
            }
        compared = summed[_COMPARED]
        data["shadow"] = {
            "compared": compared,
            "mismatched": summed[_MISMATCHED],
            "mismatch_ratio": summed[_MISMATCHED] / compared if compared else None,
        }
        return data

    def histograms(self) -> dict[str, dict[str, Any]]:
        """Since-start histograms per version, for Prometheus.

        ``{version: {"resolve": (buckets, sum), "request": (buckets, sum), "requests": n,
        "errors": n, "unavailable": n}}``; buckets are per bucket, not cumulative.
        """
        summed = self._totals_sum()
        data: dict[str, dict[str, Any]] = {}
        for version in VERSIONS:
            block = summed[_OFFSET[version] : _OFFSET[version] + _BLOCK]
            data[version] = {
                "resolve": (block[:_N], block[_RESOLVE_SUM]),
                "request": (block[_N : 2 * _N], block[_REQUEST_SUM]),
                "requests": block[_REQUESTS],
                "errors": block[_ERRORS],
                "unavailable": block[_UNAVAILABLE],
            }
        return data


def _quantiles(buckets: Sequence[int]) -> dict[str, float | None]:
    return {f"p{round(q * 100)}": quantile(q, buckets) for q in (0.5, 0.95, 0.99)}


class _Sentinel:
    """Held in a thread's locals only: its end of life is the thread's."""


def _retire(figures: weakref.ref[Figures], ring: _Ring) -> None:
    owner = figures()
    if owner is not None:
        owner._retire(ring)


#: Where the hook leaves a resolved request's ``(version, resolving, resolved, failed)`` for
#: the recorder: a WSGI key with a dot, which no client header can become.
TIMING_KEY = "flask_tenant_cache.timing"


class RequestRecorder:
    """WSGI middleware around ``app.wsgi_app`` that counts each resolved request.

    The request time runs from the moment Flask is handed the request to the moment it has
    answered (routing, every hook, the view and the response; not the WSGI server, nor a
    streamed body). A request the extension did not resolve (exempt, no route, no tenant
    named) is not counted; one that ended in an error is, with its status (500 for an
    exception that reached the server, as with ``PROPAGATE_EXCEPTIONS``). It runs outside
    Flask's hooks because Flask pays for every hook it dispatches (``ensure_sync`` asks
    :mod:`inspect` whether it is a coroutine function) a third of what the record costs.
    ``init_app`` installs its bound ``__call__`` as ``app.wsgi_app``.

    :param app: the WSGI app to call, ``app.wsgi_app`` of the Flask app.
    :param state: the extension's state for that app.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], state: AppState) -> None:
        self.app = app
        self.figures = state.figures
        self.control = state.control
        self.ticking = state.control.active

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        timer = self.figures.timer
        started = timer()
        # What a WSGI server answers for an app that raises before it starts the response.
        status = "500"

        def start(line: str, headers: Any, exc_info: Any = None) -> Any:
            nonlocal status
            status = line
            return start_response(line, headers, exc_info)

        try:
            return self.app(environ, start)
        finally:
            timing = environ.get(TIMING_KEY)
            if timing is not None:
                version, resolving, resolved, failed = timing
                now = timer()
                # Looked up each time: a forked child has a record (and a lock) of its own.
                self.figures.record(
                    version, resolved - resolving, now - started, failed, status[:3] == "503", now
                )
                if self.ticking and now >= self.control.next_tick:
                    self.control.tick()
