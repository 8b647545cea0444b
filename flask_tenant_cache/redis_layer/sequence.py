"""The order of bus messages: a number from Redis on each, so a process knows what it missed."""

from __future__ import annotations

import enum

__all__ = ["MessageSequence", "Verdict"]


class Verdict(enum.Enum):
    """What a sequence number says about the messages before it."""

    #: Nothing was missed.
    COMPLETE = "complete"
    #: Messages were missed (or may have been): the local caches must go.
    GAP = "gap"
    #: Redis went back (restarted from an older snapshot, or lost its data): what it holds
    #: can no longer be trusted.
    LOST = "lost"


class MessageSequence:
    """The last sequence number this process saw, and the Redis server it came from.

    Every message is published by a script that takes the next number from an ``INCR`` in
    the same step, so numbers arrive in order on every subscriber; used from the subscriber
    thread only (a forked child inherits what its parent had seen, which is what its copy of
    the caches reflects).
    """

    def __init__(self) -> None:
        #: The number of the last message applied here (None: unknown, nothing proven).
        self.last: int | None = None
        self.run_id: str | None = None

    def subscribed(self, current: int, run_id: str) -> Verdict:
        """The subscriber (re)subscribed; Redis's counter is ``current`` now."""
        last, known_run = self.last, self.run_id
        self.run_id = run_id
        if known_run is not None and run_id != known_run:
            # A restarted server may have lost the last writes even with an AOF (everysec).
            self.last = max(last or 0, current)
            return Verdict.LOST
        if last is not None and current < last:
            return Verdict.LOST
        self.last = current
        return Verdict.COMPLETE if last == current else Verdict.GAP

    def received(self, number: int) -> Verdict:
        """A message numbered ``number`` arrived."""
        last = self.last
        if last is None or number == last + 1:
            self.last = number
            return Verdict.COMPLETE
        if number > last:
            self.last = number
            return Verdict.GAP
        # Already counted when the subscriber read the counter: published meanwhile.
        return Verdict.COMPLETE
