"""The migration control plane: a plan that advances by itself and a guard that rolls back."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask

from . import signals
from ._fork import reset_after_fork
from .figures import Figures
from .guard import GuardLimits, Verdict, evaluate
from .plan import ControlStore, PlanState, Step, StoreUnavailable

__all__ = ["Controller"]

logger = logging.getLogger("flask_tenant_cache")

Clock = Callable[[], float]


class Controller:
    """Ticks the plan and the guard for one app's process, at most once per ``interval``.

    Each tick reads the shared state (so every process follows one decision), applies the
    current step's percentage, lets the guard judge this process's window and, when v2 was
    healthy for the whole bake time of its step, moves the plan on. A write based on an older
    state loses (the store orders them), so two processes ticking at once advance one step.
    A trip sends every request to v1 through the override (the kill switch) and stays until
    an operator resumes.

    :param steps: the configured plan, or None (a guard on its own keeps only its trip).
    :param limits: the guard's limits, or None to run no guard.
    :param apply_percent: sets the percentage the rollout serves from (None: no plan).
    :param switch: sets the override (``"v1"`` on a trip, None on resume); returns its scope.
    :param clock: wall-clock seconds (shared by processes and restarts).
    """

    def __init__(
        self,
        app: Flask,
        *,
        steps: tuple[Step, ...] | None,
        limits: GuardLimits | None,
        store: ControlStore,
        figures: Figures,
        apply_percent: Callable[[float | None], object],
        switch: Callable[[str | None], str],
        clock: Clock,
        interval: float = 1.0,
    ) -> None:
        self.app = app
        self.steps = steps or ()
        self.limits = limits
        self.store = store
        self.figures = figures
        self._apply_percent = apply_percent
        self._switch = switch
        self.clock = clock
        self.interval = interval
        #: The figures' timer reading before which :meth:`tick` has nothing to do.
        self.next_tick = float("-inf")
        self._lock = threading.Lock()
        reset_after_fork(self._forked)
        self._state: PlanState | None = None
        self._generation: int | None = None
        self._verdict: Verdict | None = None
        self._unsaved_trip: PlanState | None = None
        #: The last read of the shared state failed: this process acts on what it read before.
        self._blind = False
        self._warned_steps = False
        self.counters = dict.fromkeys(("ticks", "trips", "advances", "store_errors"), 0)
        if self.steps:
            apply_percent(self.steps[0].percent)  # until the shared state is read

    @property
    def active(self) -> bool:
        """Whether there is a plan or a guard to tick."""
        return bool(self.steps) or self.limits is not None

    def _forked(self) -> None:
        # A tick in another thread at the fork would hold the lock for ever in the child.
        self._lock = threading.Lock()
        self.next_tick = float("-inf")
        self._verdict = None

    # -- ticking ----------------------------------------------------------------------------

    def tick(self) -> None:
        """Read the state, judge the window, trip or advance. Never raises."""
        if not self._lock.acquire(blocking=False):
            return  # another thread of this process is ticking
        try:
            self.next_tick = self.figures.timer() + self.interval
            self.counters["ticks"] += 1
            state = self._sync()
            if state is None or (self.limits is None and not self.steps):
                return
            if state.tripped is not None:
                return
            if self.limits is not None:
                self._verdict = evaluate(self.figures.window(), self.limits)
                if self._verdict.breach is not None:
                    self._trip(state, self._verdict.breach)
                    return
            if self._due(state) and not self._blind:
                self._advance(state)
        except Exception:
            logger.exception("tenant cache: the rollout control tick failed")
        finally:
            self._lock.release()

    def _sync(self) -> PlanState | None:
        """The shared state (created when there is none), applied to this process."""
        if self._unsaved_trip is not None:
            self._save_trip(self._unsaved_trip)
        try:
            state = self.store.load()
            known = self._state
            if state is None:
                state = self._recreate()
            elif known is not None and state.version < known.version:
                # Versions only grow: Redis lost writes (a restart, a failover). This copy is
                # newer than what it holds now, so it goes back, on top of it.
                logger.warning(
                    "tenant cache: the stored rollout plan went back from version %d to %d;"
                    " writing this process's copy back",
                    known.version,
                    state.version,
                )
                state = self.store.save(known.replace(version=0), state.version)[1] or known
        except StoreUnavailable:
            self.counters["store_errors"] += 1
            self._blind = True
            return self._state  # the last one read: a blind process does not advance
        self._blind = False
        if state.steps != self.steps and not self._warned_steps:
            self._warned_steps = True
            logger.warning(
                "tenant cache: the stored rollout plan differs from TENANT_CACHE_ROLLOUT_PLAN;"
                " following the stored one (flask tenant-cache rollout restart replaces it)"
            )
        if self._generation is not None and state.generation != self._generation:
            self.figures.reset_window()  # an operator resumed: what the window held is judged
        self._generation = state.generation
        self._state = state
        self._apply(state)
        return state

    def _recreate(self) -> PlanState:
        """A state for a store that holds none: new, or this process's copy if it had one.

        A store that lost the state (Redis restarted empty, a failover to a replica that
        never had it) must not undo a trip, a pause or the steps taken.
        """
        known = self._state
        if known is not None:
            logger.warning(
                "tenant cache: the stored rollout plan is gone; writing this process's copy back"
            )
            fresh = known.replace(version=0)
        else:
            fresh = PlanState(steps=self.steps, step=0, started_at=self.clock())
        return self.store.save(fresh, 0)[1] or fresh

    def _apply(self, state: PlanState) -> None:
        # A trip holds v1 by itself too: lifting the override by hand does not undo it.
        self._apply_percent(0.0 if state.tripped is not None else state.percent)

    def _due(self, state: PlanState) -> bool:
        if not state.steps or state.paused or state.step + 1 >= len(state.steps):
            return False
        baked = self.clock() - state.started_at >= state.steps[state.step].bake
        # Without a guard nothing vouches for the step but time.
        return baked and (self._verdict is None or self._verdict.enough)

    def _advance(self, state: PlanState) -> None:
        step = state.step + 1
        won, stored = self.store.save(
            state.replace(step=step, started_at=self.clock()), state.version
        )
        if stored is None:
            return  # the state vanished (Redis lost it): the next tick starts it again
        self._state = stored
        self._apply(stored)
        if won:
            self.counters["advances"] += 1
            logger.warning(
                "tenant cache: rollout plan advanced to step %d, %g%% on v2",
                step + 1,
                stored.steps[step].percent,
            )

    def _trip(self, state: PlanState, breach: dict[str, Any]) -> None:
        record = {
            **breach,
            "at": self.clock(),
            "step": state.step if state.steps else None,
            "percent": state.percent,
            "process": f"{socket.gethostname()}:{os.getpid()}",
        }
        scope = self._switch("v1")
        self.counters["trips"] += 1
        logger.error(
            "tenant cache: the rollout guard tripped on %s (%.4g over the limit %.4g, %d samples):"
            " every request goes to v1 (%s) until an operator resumes",
            breach["signal"],
            breach["value"],
            breach["limit"],
            breach["samples"],
            scope,
        )
        self._save_trip(state.replace(tripped={**record, "scope": scope}))
        signals.rollout_tripped.send(self.app, reason=record, scope=scope)

    def _save_trip(self, tripped: PlanState) -> None:
        self._state = tripped
        self._apply(tripped)
        try:
            won, stored = self.store.save(tripped, tripped.version)
        except StoreUnavailable:
            self.counters["store_errors"] += 1
            self._unsaved_trip = tripped  # recorded when the store answers again
            return
        self._unsaved_trip = None
        if not won:
            # Another write came first (an advance), or Redis lost the state: the trip goes
            # on top of what is stored now, or into a new state.
            base = stored if stored is not None else tripped.replace(version=0)
            if base.tripped is None or stored is None:
                self._save_trip(base.replace(tripped=tripped.tripped))
                return
        assert stored is not None
        self._state = stored

    # -- operators --------------------------------------------------------------------------

    def _change(self, change: Callable[[PlanState], PlanState]) -> PlanState:
        """Apply ``change`` to the stored state, again if another write came first."""
        for _ in range(10):
            current = self.store.load()
            if current is None:
                current = PlanState(steps=self.steps, step=0, started_at=self.clock())
            won, stored = self.store.save(change(current), current.version)
            if won and stored is not None:
                with self._lock:
                    self._state = stored
                    self._apply(stored)
                return stored
        raise StoreUnavailable("the rollout state kept changing under this write")

    def steer(self, action: str) -> dict[str, Any]:
        """:meth:`pause`, :meth:`resume` or :meth:`restart`; the state with its ``scope``.

        :raises ValueError: if there is no plan (or, to resume, no guard either).
        :raises StoreUnavailable: if the shared state cannot be written.
        """
        if not (self.active if action == "resume" else self.steps):
            what = "rollout plan or guard" if action == "resume" else "rollout plan"
            raise ValueError(f"no {what} is configured (TENANT_CACHE_ROLLOUT_PLAN)")
        state: PlanState = getattr(self, action)()
        return {"scope": self.store.scope, **state.as_dict()}

    def pause(self) -> PlanState:
        """Stop the plan where it is (the guard keeps watching).

        :raises StoreUnavailable: if the shared state cannot be written.
        """
        return self._change(lambda s: s.replace(paused=True))

    def resume(self) -> PlanState:
        """Clear a pause or a trip: the current step bakes again from now, on fresh figures.

        A trip's override to v1 is lifted too.

        :raises StoreUnavailable: if the shared state cannot be written.
        """
        tripped = False

        def change(state: PlanState) -> PlanState:
            nonlocal tripped
            tripped = state.tripped is not None
            return state.replace(
                paused=False,
                tripped=None,
                started_at=self.clock(),
                generation=state.generation + 1,
            )

        stored = self._change(change)
        self.figures.reset_window()
        self._generation = stored.generation
        if tripped:
            self._switch(None)
        return stored

    def restart(self) -> PlanState:
        """Replace the stored plan with this process's configured one, from its first step.

        :raises StoreUnavailable: if the shared state cannot be written.
        """
        return self._change(
            lambda s: PlanState(
                steps=self.steps,
                step=0,
                started_at=self.clock(),
                generation=s.generation + 1,
                version=s.version,
            )
        )

    # -- reading ----------------------------------------------------------------------------

    def read(self) -> PlanState | None:
        """The stored state, read now (the last one known if the store does not answer)."""
        try:
            state = self.store.load()
        except StoreUnavailable:
            return self._state
        return state if state is not None else self._state

    def status(self) -> dict[str, Any]:
        """The plan, the guard and what the next step waits for, as this process sees them."""
        state = self.read()
        if state is None and self.active:
            with self._lock:  # nothing stored yet: the plan starts when first looked at
                state = self._sync()
        verdict = self._verdict
        plan: dict[str, Any] | None = None
        if state is not None and state.steps:
            plan = {
                **state.as_dict(),
                "percent": state.percent,
                "configured": [s.as_dict() for s in self.steps],
                "waiting_for": self._waiting_for(state, verdict),
            }
        guard = None
        if self.limits is not None:
            guard = {
                "tripped": state.tripped if state is not None else None,
                "limits": {
                    "max_mismatch_ratio": self.limits.max_mismatch_ratio,
                    "max_error_ratio": self.limits.max_error_ratio,
                    "max_p99_ratio": self.limits.max_p99_ratio,
                    "p99_floor": self.limits.p99_floor,
                    "min_samples": self.limits.min_samples,
                },
                "checks": verdict.checks if verdict is not None else None,
            }
        return {"scope": self.store.scope, "plan": plan, "guard": guard, **self.counters}

    def _waiting_for(self, state: PlanState, verdict: Verdict | None) -> str:
        if state.tripped is not None:
            return "an operator: the guard tripped (flask tenant-cache rollout resume)"
        if state.paused:
            return "an operator: the plan is paused (flask tenant-cache rollout resume)"
        if state.step + 1 >= len(state.steps):
            return "nothing: the plan is at its last step"
        left = state.steps[state.step].bake - (self.clock() - state.started_at)
        if left > 0:
            return f"{left:.0f} s more of bake time at {state.percent:g}%"
        if verdict is not None and not verdict.enough:
            assert self.limits is not None
            return f"{self.limits.min_samples} v2 requests in the window"
        return "the next tick"
