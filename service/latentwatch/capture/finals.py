"""Final verdicts per request, with a way to wait for them (both monitors keep them)."""

from __future__ import annotations

import threading
from collections import OrderedDict

from latentwatch.detectors.records import Verdict


class Finals:
    """Final verdicts per request, with a way to wait for them. Only the ``keep`` most recently
    finished requests are kept: a model server that never asks must not grow without bound."""

    def __init__(self, keep: int = 10_000) -> None:
        self._cv = threading.Condition()
        self._keep = keep
        self._verdicts: dict[str, list[Verdict] | None] = {}
        self._done: OrderedDict[str, None] = OrderedDict()  # finished requests, oldest first

    def add(self, v: Verdict) -> None:
        with self._cv:
            verdicts = self._verdicts.setdefault(v.request_id, [])
            if verdicts is not None:
                verdicts.append(v)

    def done(self, request_id: str) -> None:
        with self._cv:
            self._finish_locked(request_id)

    def lost(self, request_id: str) -> None:
        """No final verdicts will come (the stream carrying the request broke): waiters get None."""
        with self._cv:
            self._verdicts[request_id] = None
            self._finish_locked(request_id)

    def _finish_locked(self, request_id: str) -> None:
        self._done[request_id] = None
        while len(self._done) > self._keep:
            oldest, _ = self._done.popitem(last=False)
            self._verdicts.pop(oldest, None)
        self._cv.notify_all()

    def wait(self, request_id: str, timeout: float) -> list[Verdict] | None:
        with self._cv:
            if not self._cv.wait_for(lambda: request_id in self._done, timeout):
                return None
            del self._done[request_id]
            return self._verdicts.pop(request_id, [])
