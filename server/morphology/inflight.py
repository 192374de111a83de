"""Work on integer keys done once when several threads ask at the same time.

The services cache values by L2 ID; a worker (after an edit) and requests often ask for the same
new nodes together. :class:`Inflight` records which thread is computing which key: the first to
ask claims it, the others get an event to wait on.

>>> import threading
>>> lock, inflight = threading.Lock(), Inflight()
>>> with lock:
...     mine, theirs = inflight.claim([1, 2])
>>> mine, theirs
([1, 2], [])
>>> with lock:
...     again = inflight.claim([2, 3])
>>> again[0], len(again[1])
([3], 1)
>>> with lock:
...     inflight.release(mine + again[0])
>>> again[1][0].is_set()
True
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

__all__ = ["Inflight"]


class Inflight:
    """Keys being computed, each by one thread. Call both methods with the owner's lock held."""

    def __init__(self) -> None:
        self._events: dict[int, threading.Event] = {}

    def claim(self, keys: Iterable[int]) -> tuple[list[int], list[threading.Event]]:
        """``(mine, theirs)``: the keys nobody computes, now claimed by the caller (who must
        :meth:`release` them, also on failure), and the events of the keys others compute."""
        mine: list[int] = []
        theirs: list[threading.Event] = []
        for k in keys:
            ev = self._events.get(k)
            if ev is None:
                self._events[k] = threading.Event()
                mine.append(k)
            else:
                theirs.append(ev)
        return mine, theirs

    def release(self, keys: Iterable[int]) -> None:
        """The caller is done with its claimed ``keys`` (computed or not): wake their waiters."""
        for k in keys:
            self._events.pop(k).set()
