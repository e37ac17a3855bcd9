"""``GrpcMonitorClient``: streams captured rows to a sidecar without ever blocking the caller.

It sends from a background thread over the Stream RPC with a bounded buffer:
when the buffer is full, chunks are dropped and counted (and the count reaches
the sidecar's dropped-chunks metric); when the sidecar is away it reconnects
with exponential backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import grpc
import torch

from latentwatch.capture.finals import Finals
from latentwatch.detectors.base import Span
from latentwatch.detectors.records import Verdict
from latentwatch.v1 import monitor_pb2 as pb
from latentwatch.v1 import monitor_pb2_grpc as pb_grpc
from latentwatch.wire.codec import to_wire
from latentwatch.wire.security import ClientAuth

log = logging.getLogger(__name__)


class _Rows(NamedTuple):
    """Buffered rows of one request: activations of a hook, or lookback ratios of heads."""

    request_id: str
    hook_name: str  # "" for lookback ratios
    start: int
    rows: torch.Tensor
    heads: tuple[str, ...] | None = None  # set for lookback ratios
    text: tuple[str, ...] | None = None  # each row's token text, when the capture sends it
    ids: Sequence[int] | torch.Tensor | None = None  # each row's token id, when the capture sends it
    ready: object = None  # a CUDA event when ``rows`` is still being copied from the device

    def landed(self) -> bool:
        return self.ready is None or self.ready.query()

    def to_message(self, drops: int) -> pb.ClientMessage:
        if self.heads is not None:
            return pb.ClientMessage(
                attention=pb.AttentionChunk(
                    request_id=self.request_id,
                    start_position=self.start,
                    heads=list(self.heads),
                    lookback=to_wire(self.rows),
                    dropped_since_last=drops,
                )
            )
        return pb.ClientMessage(
            chunk=pb.ActivationChunk(
                request_id=self.request_id,
                hook_name=self.hook_name,
                start_position=self.start,
                activations=to_wire(self.rows),
                dropped_since_last=drops,
                token_text=self.text or (),
                token_ids=[] if self.ids is None else [int(i) for i in self.ids],
            )
        )


class GrpcMonitorClient:
    """Streams activations to a sidecar without ever blocking the caller."""

    def __init__(
        self,
        target: str,
        model_id: str,
        max_buffer: int = 1024,
        on_verdict: Callable[[Verdict], None] | None = None,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        max_rows_per_chunk: int = 64,
        auth: ClientAuth | None = None,
    ):
        self.target = target
        self.auth = auth or ClientAuth()
        self.model_id = model_id
        self.max_buffer = max_buffer
        self.max_rows_per_chunk = max_rows_per_chunk
        self.on_verdict = on_verdict
        # Counts since creation; export them with latentwatch.capture.metrics.CaptureCollector.
        self.drops = {"buffer_full": 0, "stream_lost": 0}  # chunks never sent, by reason
        self.rejected = 0  # messages the sidecar refused
        self.interrupted = 0  # requests whose stream broke before their final verdicts came
        self.reconnects = 0  # streams opened after the first
        self.dropped_control = 0  # request starts/ends dropped: the sidecar was away for very long
        self._open: dict[str, bool] = {}  # request id -> its end was sent; requests on the current stream
        self._cut_off: set[str] = set()  # requests whose stream broke; their remaining messages are dropped
        self.errors: deque[pb.StreamError] = deque(maxlen=256)  # the most recent refusals
        self._unreported_drops = 0
        self._buf: deque[tuple[pb.ClientMessage, bool]] = deque()
        self._chunks_buffered = 0
        self._cv = threading.Condition()
        self._closed = False
        self._epoch = 0
        self._finals = Finals()
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="latentwatch-sender", daemon=True)
        self._thread.start()

    # -- the caller's side (must stay cheap) -----------------------------------------

    def start_request(self, request_id: str, spans: list[Span]) -> None:
        msg = pb.RequestStart(
            request_id=request_id,
            model_id=self.model_id,
            spans=[pb.Span(role=s.role, start=s.start, end=s.end) for s in spans],
        )
        self._put(pb.ClientMessage(start=msg), droppable=False)

    def send_chunk(
        self,
        request_id: str,
        hook_name: str,
        start_position: int,
        rows: torch.Tensor,
        text: tuple[str, ...] = (),
        ready: object = None,
        ids: Sequence[int] | torch.Tensor = (),
    ) -> None:
        """Enqueue rows; serialisation happens on the sender thread. ``ready``: a CUDA
        event recorded after an asynchronous copy into ``rows`` (waited for there).
        ``ids``: the rows' token ids (detectors that compare answer and context read them)."""
        ids = ids if len(ids) else None
        row = _Rows(request_id, hook_name, start_position, rows, text=text or None, ids=ids, ready=ready)
        self._put(row, droppable=True)

    def send_attention(
        self, request_id: str, start_position: int, heads: list[str], lookback: torch.Tensor, ready: object = None
    ) -> None:
        self._put(_Rows(request_id, "", start_position, lookback, tuple(heads), ready=ready), droppable=True)

    def end_request(self, request_id: str) -> None:
        self._put(pb.ClientMessage(end=pb.RequestEnd(request_id=request_id)), droppable=False)

    def wait_final(self, request_id: str, timeout: float = 30.0) -> list[Verdict] | None:
        return self._finals.wait(request_id, timeout)

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def close(self, flush_timeout: float = 5.0) -> None:
        deadline = time.monotonic() + flush_timeout
        with self._cv:
            while self._buf and time.monotonic() < deadline:
                self._cv.wait(0.05)
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=2.0)

    def _put(self, item, droppable: bool) -> None:
        with self._cv:
            if droppable:
                if self._chunks_buffered >= self.max_buffer:
                    self.drops["buffer_full"] += 1
                    self._unreported_drops += 1
                    return
                self._chunks_buffered += 1
            elif len(self._buf) - self._chunks_buffered >= 4 * self.max_buffer:
                self.dropped_control += 1  # bounded too: a long outage must not grow memory without end
                return
            self._buf.append((item, droppable))
            if len(self._buf) == 1:
                self._cv.notify_all()  # the sender waits only on an empty buffer

    # -- the sender thread ------------------------------------------------------------------

    def _messages(self, epoch: int) -> Iterator[pb.ClientMessage]:
        while True:
            with self._cv:
                while not self._buf and not self._closed and self._epoch == epoch:
                    self._cv.wait(0.1)
                if self._epoch != epoch or (self._closed and not self._buf):
                    return
                item, droppable = self._buf.popleft()
                if droppable:
                    self._chunks_buffered -= 1
            if droppable and not item.landed():
                item.ready.synchronize()  # outside the lock: the engine keeps enqueueing meanwhile
            with self._cv:
                self._cv.notify_all()
                if self._cut_off_locked(item, droppable):
                    continue
                drops = 0
                if droppable:
                    item = self._coalesce(item)
                    drops, self._unreported_drops = self._unreported_drops, 0
            yield item.to_message(drops) if droppable else item

    def _cut_off_locked(self, item, droppable: bool) -> bool:
        """Track which requests the current stream carries; True (and count the chunk) for a
        message of a request whose stream broke: a new sidecar never saw its start and one that
        survived lost its chunks in flight, so its verdicts could not be trusted anyway."""
        kind = None if droppable else item.WhichOneof("kind")
        request_id = item.request_id if droppable else getattr(item, kind).request_id
        if request_id in self._cut_off and kind != "start":  # a start reuses the id for a new request
            if droppable:
                self.drops["stream_lost"] += 1
            elif kind == "end":
                self._cut_off.discard(request_id)  # nothing more of it will come
            return True
        self._cut_off.discard(request_id)
        if kind == "start":
            self._open[request_id] = False
        elif kind == "end" and request_id in self._open:
            self._open[request_id] = True
        return False

    def _stream_broke_locked(self) -> None:
        for request_id, ended in self._open.items():
            self.interrupted += 1
            self._finals.lost(request_id)
            if not ended:
                self._cut_off.add(request_id)
        self._open.clear()

    def _coalesce(self, item):
        """Merge buffered rows continuing ``item`` (same request and hook,
        adjacent positions) into one chunk; called with the lock held. While
        the sidecar keeps up this finds nothing; when it lags, per-token
        decode rows travel as one message instead of many."""
        parts = [item.rows]
        texts = [item.text]
        ids = [item.ids]
        start = item.start
        end = start + item.rows.shape[0]
        skipped: list = []
        # Scan up to the next control message (never move rows past a RequestEnd).
        budget = 4 * self.max_rows_per_chunk  # bound the scan: O(1) per message, not O(buffer)
        while self._buf and self._buf[0][1] and end - start < self.max_rows_per_chunk and budget > 0:
            budget -= 1
            entry = self._buf.popleft()
            nxt = entry[0]
            same_stream = (nxt.request_id, nxt.hook_name, nxt.heads) == (item.request_id, item.hook_name, item.heads)
            if same_stream and nxt.start == end and nxt.landed():
                self._chunks_buffered -= 1
                parts.append(nxt.rows)
                texts.append(nxt.text)
                ids.append(nxt.ids)
                end += nxt.rows.shape[0]
            else:
                skipped.append(entry)
        self._buf.extendleft(reversed(skipped))
        if len(parts) == 1:
            return item
        # Text and ids stay aligned with rows only if every merged piece carries them.
        text = tuple(t for part in texts for t in part) if all(texts) else None
        merged = [int(i) for part in ids for i in part] if all(i is not None for i in ids) else None
        return item._replace(rows=torch.cat(parts), text=text, ids=merged, ready=None)

    def _run(self) -> None:
        delay = self._backoff[0]
        warned = False
        opened = 0
        while not self._closed:
            with self._cv:
                self._epoch += 1
                epoch = self._epoch
            try:
                with self.auth.channel(self.target) as channel:
                    grpc.channel_ready_future(channel).result(timeout=delay * 10)
                    if opened:
                        self.reconnects += 1
                    opened += 1
                    self._connected.set()
                    delay = self._backoff[0]
                    for msg in pb_grpc.MonitorStub(channel).Stream(self._messages(epoch)):
                        self._handle(msg)
                    if self._closed:
                        return
            except (grpc.RpcError, grpc.FutureTimeoutError) as exc:
                refused = isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.UNAUTHENTICATED
                # A refused token is a configuration mistake someone must see (once, not every retry);
                # a sidecar away is routine.
                level = logging.WARNING if refused and not warned else logging.DEBUG
                warned = refused
                log.log(level, "sidecar stream broke (%s); retrying in %.2fs", exc, delay)
            self._connected.clear()
            with self._cv:
                self._epoch += 1  # stop the old request iterator
                self._stream_broke_locked()
                self._cv.notify_all()
            time.sleep(delay)
            delay = min(delay * 2, self._backoff[1])

    def _handle(self, msg: pb.ServerMessage) -> None:
        kind = msg.WhichOneof("kind")
        if kind == "verdict":
            v = Verdict.from_pb(msg.verdict)
            if v.final:
                self._finals.add(v)
            if self.on_verdict:
                self.on_verdict(v)
        elif kind == "done":
            with self._cv:
                self._open.pop(msg.done.request_id, None)
            self._finals.done(msg.done.request_id)
        elif kind == "error":
            # After a reconnect, chunks of requests whose start was lost are
            # refused one by one: count them, keep a few, never flood the log.
            self.rejected += 1
            self.errors.append(msg.error)
            log.debug("sidecar rejected a message: %s", msg.error.message)
