"""Dynamic batching: one scoring thread serves every stream, and scores together the
batches all streams have waiting, so the chunks of many requests share one SAE encode.

A stream submits its waiting messages and awaits their answers. The scoring thread
takes the submissions present, oldest first, up to ``max_rows`` rows. Coming back
idle, while other streams are open and fewer than ``max_rows`` rows wait, it first
waits up to ``max_wait_s`` for more: under light load that bounds the added
latency, and a stream alone never waits; under load, submissions pile up while it
scores and it never waits. Each stream submits its next batch only after the
answer to its last, so per-request order holds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class Coalescer(Generic[Item, Answer]):
    def __init__(
        self,
        score: Callable[[list[list[Item]]], list[list[Answer]]],
        open_streams: Callable[[], int],
        rows: Callable[[Item], int] = lambda item: 1,
        max_wait_s: float = 0.002,
        max_rows: int = 512,
    ):
        self._score = score
        self._open_streams = open_streams
        self._rows = rows
        self.max_wait_s = max_wait_s
        self.max_rows = max_rows
        self._cv = threading.Condition()
        # (items, their rows, future, loop), oldest first; rows counted once, when submitted
        self._waiting: list[tuple[list[Item], int, asyncio.Future, asyncio.AbstractEventLoop]] = []
        self._waiting_rows = 0
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="latentwatch-score-batches", daemon=True)
        self._thread.start()

    async def submit(self, items: list[Item]) -> list[Answer]:
        """Score ``items`` (one stream's waiting messages, in order) with whatever else waits."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        rows = sum(self._rows(i) for i in items)
        with self._cv:
            if self._stopped:
                raise RuntimeError("the scoring thread has stopped")
            self._waiting.append((items, rows, future, loop))
            self._waiting_rows += rows
            self._cv.notify()
        return await future

    def close(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        self._thread.join(timeout=5)

    def _take(self) -> list[tuple[list[Item], int, asyncio.Future, asyncio.AbstractEventLoop]] | None:
        """The next submissions to score together, oldest first, up to ``max_rows`` rows (at
        least one submission). Waiting for more happens only when the thread was idle: under
        load, submissions pile up while it scores, and it takes them at once."""
        with self._cv:
            idle = not self._waiting
            self._cv.wait_for(lambda: self._waiting or self._stopped)
            if self._stopped:
                return None
            if idle:
                deadline = time.monotonic() + self.max_wait_s
                while (
                    len(self._waiting) < self._open_streams()
                    and self._waiting_rows < self.max_rows
                    and (left := deadline - time.monotonic()) > 0
                ):
                    self._cv.wait(left)
            taken, rows = [], 0
            while self._waiting and (not taken or rows + self._waiting[0][1] <= self.max_rows):
                rows += self._waiting[0][1]
                taken.append(self._waiting.pop(0))
            self._waiting_rows -= rows
            return taken

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            try:
                answers: list[Any] = self._score([items for items, _, _, _ in taken])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting stream
                for _, _, future, loop in taken:
                    loop.call_soon_threadsafe(_settle, future, None, exc)
                continue
            for (_, _, future, loop), answer in zip(taken, answers, strict=True):
                loop.call_soon_threadsafe(_settle, future, answer, None)


def _settle(future: asyncio.Future, answer: Any, exc: BaseException | None) -> None:
    if future.done():  # the stream went away meanwhile
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(answer)
