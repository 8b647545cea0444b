"""The rollout plan: its steps, its state, and where that state is kept (one process or Redis)."""

from __future__ import annotations

import dataclasses
import itertools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._fork import reset_after_fork

__all__ = [
    "LocalControlStore",
    "PlanState",
    "Step",
    "StoreUnavailable",
    "parse_plan",
]


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a plan: this percentage of tenants on v2 for at least ``bake`` seconds."""

    percent: float
    bake: float

    def as_dict(self) -> dict[str, float]:
        """The step as JSON."""
        return {"percent": self.percent, "bake": self.bake}


def _step(raw: Any) -> Step:
    if isinstance(raw, dict) and set(raw) == {"percent", "bake"}:
        percent, bake = raw["percent"], raw["bake"]
    elif isinstance(raw, list | tuple) and len(raw) == 2:
        percent, bake = raw
    else:
        raise ValueError(f"a step is (percent, bake seconds) or {{'percent', 'bake'}}, not {raw!r}")
    for value in (percent, bake):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"a step holds two finite numbers, not {raw!r}")
    if not 0 < percent <= 100:
        raise ValueError(f"a step's percentage is above 0 and at most 100, not {percent!r}")
    if bake <= 0:
        raise ValueError(f"a step's bake time is a number of seconds above 0, not {bake!r}")
    return Step(float(percent), float(bake))


def parse_plan(value: Any) -> tuple[Step, ...] | None:
    """Validate ``TENANT_CACHE_ROLLOUT_PLAN``: None, or steps of rising percentages.

    :raises ValueError: saying what is wrong with it.
    """
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"a plan is a non-empty list of steps, not {value!r}")
    steps = tuple(_step(raw) for raw in value)
    for before, after in itertools.pairwise(steps):
        if after.percent <= before.percent:
            raise ValueError("a plan's percentages rise from one step to the next")
    return steps


@dataclass(frozen=True, slots=True)
class PlanState:
    """Where the rollout stands, as every process reads it.

    :param steps: the plan the state follows (kept with it: a process configured with other
        steps follows these until an operator restarts the plan).
    :param step: the index of the current step.
    :param started_at: when the current step began or was last resumed (wall clock).
    :param paused: an operator stopped the plan from advancing.
    :param tripped: the guard's record of why it sent every request to v1, until cleared.
    :param generation: bumped when an operator resumes, so every process forgets its window.
    :param version: assigned by the store on each write: a write based on an older state loses.
    """

    steps: tuple[Step, ...]
    step: int
    started_at: float
    paused: bool = False
    tripped: dict[str, Any] | None = None
    generation: int = 0
    version: int = 0

    @property
    def percent(self) -> float | None:
        """The current step's percentage on v2 (None without a plan)."""
        return self.steps[self.step].percent if self.steps else None

    def replace(self, **changes: Any) -> PlanState:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The state as JSON."""
        return {
            "steps": [s.as_dict() for s in self.steps],
            "step": self.step,
            "started_at": self.started_at,
            "paused": self.paused,
            "tripped": self.tripped,
            "generation": self.generation,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanState:
        """Read :meth:`as_dict` back.

        :raises ValueError: if ``data`` is not a state (it came from outside the process).
        """
        try:
            steps = parse_plan(data["steps"]) or ()
            state = cls(
                steps=steps,
                step=int(data["step"]),
                started_at=float(data["started_at"]),
                paused=bool(data["paused"]),
                tripped=data["tripped"],
                generation=int(data["generation"]),
                version=int(data["version"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a rollout plan state: {exc!r}") from None
        if steps and not 0 <= state.step < len(steps):
            raise ValueError(f"step {state.step} is outside the plan")
        if state.tripped is not None and not isinstance(state.tripped, dict):
            raise ValueError("a trip is recorded as an object")
        return state


class StoreUnavailable(Exception):
    """The store could not be read or written (Redis down): the caller keeps what it has."""


class ControlStore(Protocol):
    """Where the plan state lives: ``"cluster"`` (Redis) or ``"process"`` (memory)."""

    scope: str

    def load(self) -> PlanState | None:
        """The stored state, None if there is none yet."""

    def save(self, state: PlanState, expected: int) -> tuple[bool, PlanState | None]:
        """Store ``state`` if the stored version is still ``expected`` (0: none stored).

        :returns: whether it was stored, and the state now stored (with its new version;
            None if there is none, as after Redis lost its data).
        """


@dataclass
class LocalControlStore:
    """The state of one process, lost when it exits (no Redis configured)."""

    scope: str = "process"
    _state: PlanState | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        reset_after_fork(self._forked)

    def _forked(self) -> None:
        self._lock = threading.Lock()

    def load(self) -> PlanState | None:
        """The state, None before the first save."""
        return self._state

    def save(self, state: PlanState, expected: int) -> tuple[bool, PlanState | None]:
        """Store ``state`` unless another write came first."""
        with self._lock:
            current = self._state
            if (current.version if current else 0) != expected:
                return False, current
            self._state = state.replace(version=expected + 1)
            return True, self._state


def steps_text(steps: Sequence[Step]) -> str:
    """Steps in words: ``1% 10m → 5% 10m → 100% 1h``."""
    return " → ".join(f"{s.percent:g}% {_duration(s.bake)}" for s in steps)


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
