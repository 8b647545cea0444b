"""The Redis key space of one app: every key and the channel under ``{prefix}``."""

from __future__ import annotations

import re

__all__ = ["KeySpace", "default_channel", "escape_glob"]

_GLOB = re.compile(r"([*?\[\]\\])")


def escape_glob(text: str) -> str:
    """``text`` as a literal in a Redis ``MATCH`` or ``PSUBSCRIBE`` pattern."""
    return _GLOB.sub(r"\\\1", text)


def _tag(prefix: str) -> str:
    # The prefix as hash tag: on a cluster every key of the app hashes to one slot, so a Lua
    # script may touch any of them; and the closing brace ends the prefix, so no prefix is
    # the start of another's ("tc" and "tc:x" give "{tc}:" and "{tc:x}:").
    return "{" + prefix + "}"


def default_channel(prefix: str) -> str:
    """The invalidation channel of an app that names none: under its prefix, like its keys."""
    return _tag(prefix) + ":invalidate"


class KeySpace:
    """The names of one app's Redis keys (``prefix`` may not contain ``{`` or ``}``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.base = _tag(prefix) + ":"
        #: A counter bumped by every invalidation (guards writes of loads that began before).
        self.epoch = self.base + "epoch"
        #: The shared rollout override.
        self.rollout = self.base + "rollout"
        #: The number of the last bus message (see :mod:`.sequence`).
        self.sequence = self.base + "seq"
        #: The channel on which a finished load wakes the processes waiting for it.
        self.loaded = self.base + "loaded"
        #: The rollout plan's state and the guard's trip.
        self.plan = self.base + "plan"
        #: The last shadow mismatches of every process.
        self.mismatches = self.base + "mismatches"
        #: Matches every key of this app and no other app's, whatever the prefixes.
        self.pattern = escape_glob(self.base) + "*"

    def version(self, key: str) -> str:
        """The counter that orders the values written to ``key``."""
        return f"{key}:version"

    def entry(self, cache_key: str) -> str:
        """The L2 entry stored under one identifier."""
        return f"{self.base}t:{cache_key}"

    def claim(self, cache_key: str) -> str:
        """The claim of a load in progress (or its not-found marker)."""
        return f"{self.base}load:{cache_key}"

    def pointer(self, cache_key: str) -> str:
        """From one alias to its tenant's id."""
        return f"{self.base}id:{cache_key}"

    def aliases(self, tenant_id: str) -> str:
        """The set of the entry keys that hold a tenant."""
        return f"{self.base}aliases:{tenant_id}"

    def kept(self) -> frozenset[bytes]:
        """Keys that outlive a flush of the L2: the counters and the rollout's decisions."""
        kept = (self.epoch, self.sequence, self.rollout, self.version(self.rollout))
        return frozenset(k.encode() for k in (*kept, self.plan, self.mismatches))
