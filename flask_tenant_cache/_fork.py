"""Per-process state reset in a forked child, without keeping its owner alive."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable

__all__ = ["reset_after_fork"]


def reset_after_fork(method: Callable[[], object]) -> None:
    """Call the bound ``method`` in every child forked from now on, while its object lives.

    A lock held by another thread at the fork stays held for ever in the child, where that
    thread does not exist: the child needs locks (and what they guard) of its own.
    """
    ref = weakref.WeakMethod(method)
    os.register_at_fork(after_in_child=lambda: (m := ref()) and m())
