"""Interleaved timeit runs: absolute ns/op per case and its per-round ratio to a baseline."""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Case", "CaseResult", "GroupResult", "Settings", "held", "run_group"]


@dataclass(frozen=True)
class Settings:
    """How long and how often each case is timed.

    :param repeats: rounds; every case is timed once per round, in a rotating order.
    :param target: seconds one timing (one ``timeit`` call) should last.
    """

    repeats: int
    target: float


@dataclass(frozen=True)
class Case:
    """One statement to time, with the namespace it runs in.

    :param name: a short label for the table.
    :param stmt: the statement ``timeit`` runs ``number`` times per timing.
    :param namespace: the globals of ``stmt`` and ``setup``.
    :param setup: run before every timing, untimed (re-warming a cache, for instance).
    :param description: one line for the JSON output and the docs.
    """

    name: str
    stmt: str
    namespace: dict[str, Any]
    setup: str = "pass"
    description: str = ""


@dataclass
class CaseResult:
    """The timings of one case: ns per operation of every round, and ratios to references."""

    name: str
    description: str
    number: int
    samples_ns: list[float]
    #: Median over the rounds of (this case / the reference) timed in the same round.
    ratios: dict[str, float] = field(default_factory=dict)
    #: Best of this case / best of the reference.
    best_ratios: dict[str, float] = field(default_factory=dict)

    @property
    def best_ns(self) -> float:
        return min(self.samples_ns)

    @property
    def median_ns(self) -> float:
        return statistics.median(self.samples_ns)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "number": self.number,
            "rounds": len(self.samples_ns),
            "best_ns": round(self.best_ns, 1),
            "median_ns": round(self.median_ns, 1),
            "ratios": {k: round(v, 3) for k, v in self.ratios.items()},
            "best_ratios": {k: round(v, 3) for k, v in self.best_ratios.items()},
            "samples_ns": [round(s, 1) for s in self.samples_ns],
        }


@dataclass
class GroupResult:
    """A group of cases timed against each other; ``baseline`` is the first reference."""

    name: str
    title: str
    baseline: str
    references: list[str]
    cases: list[CaseResult]
    unit: str = "ns"

    def case(self, name: str) -> CaseResult:
        for result in self.cases:
            if result.name == name:
                return result
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "baseline": self.baseline,
            "references": self.references,
            "cases": [c.as_dict() for c in self.cases],
        }


def _calibrate(timer: timeit.Timer, target: float) -> int:
    """A loop count that makes one timing last about ``target`` seconds."""
    number = 1
    while True:
        elapsed = timer.timeit(number)
        if elapsed >= target / 10 or number >= 10**8:
            break
        number *= 10
    return max(1, int(number * target / max(elapsed, 1e-9)))


def run_group(
    name: str,
    title: str,
    cases: Sequence[Case],
    settings: Settings,
    *,
    references: Sequence[str] | None = None,
    unit: str = "ns",
) -> GroupResult:
    """Time ``cases`` in interleaved rounds; the first case (or ``references``) is the baseline.

    Each round times every case once, starting one case further along than the round before,
    so that a burst of noise from the shared machine hits the cases of a round alike; the ratio
    of a case to a reference is taken within each round, then the median over the rounds.
    """
    refs = list(references) if references else [cases[0].name]
    timers = [timeit.Timer(c.stmt, c.setup, globals=c.namespace) for c in cases]
    numbers = [_calibrate(t, settings.target) for t in timers]
    samples: list[list[float]] = [[] for _ in cases]
    for round_ in range(settings.repeats):
        offset = round_ % len(cases)
        for i in [*range(offset, len(cases)), *range(offset)]:
            # timeit turns the garbage collector off while timing; no gc.collect() here, which
            # costs tens of ms with Flask apps loaded and would double the run.
            elapsed = timers[i].timeit(numbers[i])
            samples[i].append(elapsed / numbers[i] * 1e9)
    results = [
        CaseResult(c.name, c.description, n, s)
        for c, n, s in zip(cases, numbers, samples, strict=True)
    ]
    by_name = {r.name: r for r in results}
    for result in results:
        for ref in refs:
            base = by_name[ref].samples_ns
            result.best_ratios[ref] = result.best_ns / min(base)
            result.ratios[ref] = statistics.median(
                a / b for a, b in zip(result.samples_ns, base, strict=True)
            )
    return GroupResult(name, title, refs[0], refs, results, unit)


def held(case: CaseResult, reference: str, goal_x: float) -> bool:
    """Whether ``case`` is at most ``goal_x`` times ``reference`` by both measures.

    The same-round median and the ratio of the bests must both hold: on a loaded machine one
    of them alone can pass on noise (a reference slowed in most rounds, or one lucky round),
    and a "met" that flips on a rerun is worse than a "missed".
    """
    return max(case.ratios[reference], case.best_ratios[reference]) <= goal_x
