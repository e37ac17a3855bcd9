"""The sidecar's gRPC server (grpc.aio) and its /metrics endpoint.

Each Stream RPC reads client messages into a bounded queue and hands them,
in order, to one scoring thread shared by all streams, so torch work never
runs on the event loop. The engine's outcomes go to the metrics (one place)
and their alerts to the export queue, whose own thread feeds the sinks: a
slow sink never delays scoring. When the queue is full the reader waits, and HTTP/2
flow control pushes back to the client, whose own bounded buffer then drops
and counts: the model server is never blocked.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import grpc
import torch
from google.protobuf import message_factory
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from latentwatch.detectors.base import Span
from latentwatch.detectors.records import Outcome
from latentwatch.export.exporter import AlertExporter
from latentwatch.export.metrics import Metrics
from latentwatch.export.sinks import Broadcaster, FanOut, RedisStreamSink, SQLiteSink
from latentwatch.export.spool import AlertSpool
from latentwatch.sidecar.batching import Coalescer
from latentwatch.sidecar.config import Config
from latentwatch.sidecar.engine import Chunk, Engine, Limits
from latentwatch.sidecar.router import ANY_MODEL, Router
from latentwatch.v1 import monitor_pb2 as pb
from latentwatch.v1 import monitor_pb2_grpc as pb_grpc
from latentwatch.wire.codec import from_wire
from latentwatch.wire.errors import MonitorError
from latentwatch.wire.security import HANDLER_FOR, BearerTokenInterceptor, check_exposure, server_credentials

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Monitor"].full_name


def _lookback(a: pb.AttentionChunk) -> torch.Tensor:
    if not a.heads:
        raise MonitorError("attention chunk names no heads")
    return from_wire(a.lookback, len(a.heads), what="lookback ratios")


def _ids(c: pb.ActivationChunk) -> torch.Tensor | None:
    """The chunk's token ids (optional on the wire; their count is checked in ``_decode_chunk``)."""
    return torch.tensor(list(c.token_ids), dtype=torch.long) if c.token_ids else None


def _spans(start: pb.RequestStart) -> list[Span]:
    return [Span(role=s.role, start=s.start, end=s.end) for s in start.spans]


def _rows(item: Received) -> int:
    """Activation rows a waiting message carries (what the batch bound counts)."""
    msg = item[0]
    if isinstance(msg, Undecodable) or msg.WhichOneof("kind") != "chunk":
        return 0
    return msg.chunk.activations.shape[0] if len(msg.chunk.activations.shape) else 0


def _request_of(msg) -> str:
    if isinstance(msg, Undecodable):
        return ""
    kind = msg.WhichOneof("kind")
    return getattr(getattr(msg, kind), "request_id", "") if kind else ""


class Undecodable(NamedTuple):
    """Request bytes that do not parse as their message type. Parsing hands this
    to the RPC instead of raising, because grpc answers a raising deserializer
    with UNKNOWN on unary calls and silently ends a Stream; the RPC answers it
    with INVALID_ARGUMENT (a StreamError on Stream, which stays open)."""

    reason: str

    def __str__(self) -> str:
        return f"undecodable request: {self.reason}"


Received = tuple["pb.ClientMessage | Undecodable", float]  # a message and when it arrived


def _lenient(message_class: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    def parse(data: bytes) -> Message | Undecodable:
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            return Undecodable(str(exc))

    return parse


def add_monitor_service(servicer: pb_grpc.MonitorServicer, server: grpc.aio.Server) -> None:
    """Register the Monitor service as the generated ``add_MonitorServicer_to_server``
    does, but with request parsing that never raises (see ``Undecodable``)."""
    handlers = {}
    for method in pb.DESCRIPTOR.services_by_name["Monitor"].methods:
        request, response = (message_factory.GetMessageClass(t) for t in (method.input_type, method.output_type))
        handlers[method.name] = HANDLER_FOR[(method.client_streaming, method.server_streaming)](
            getattr(servicer, method.name),
            request_deserializer=_lenient(request),
            response_serializer=response.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


class MonitorServicer(pb_grpc.MonitorServicer):
    BATCH = 32  # most queued messages of one stream handed over at a time

    def __init__(
        self,
        engine: Router | Engine,
        metrics: Metrics,
        exporter: AlertExporter,
        broadcaster: Broadcaster,
        queue_size: int = 256,
        batch_wait_s: float = 0.002,
        batch_rows: int = 512,
    ):
        # A bare Engine (tests, embedding) serves every model id.
        self.engine = engine if isinstance(engine, Router) else Router({ANY_MODEL: engine})
        self.metrics = metrics
        self.exporter = exporter
        self.broadcaster = broadcaster
        self.queue_size = queue_size
        self.open_streams = 0
        # One scoring thread for every stream: the engine is serial anyway, and torch uses the cores.
        self.batches = Coalescer(
            self.handle_group, lambda: self.open_streams, _rows, max_wait_s=batch_wait_s, max_rows=batch_rows
        )
        # Unary calls (Score, expiry) run beside it; the engine's lock orders them.
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="latentwatch-score")

    # -- message handling (scoring thread) -------------------------------------------

    def _decode_chunk(self, c: pb.ActivationChunk):
        saes = self.engine.saes_for(c.request_id, c.hook_name)
        acts = from_wire(c.activations, saes[0].d_in)
        if c.token_ids and len(c.token_ids) != acts.shape[0]:
            raise MonitorError(f"{len(c.token_ids)} token_ids for {acts.shape[0]} rows")
        if c.token_text and len(c.token_text) != acts.shape[0]:
            raise MonitorError(f"{len(c.token_text)} token_text entries for {acts.shape[0]} rows")
        return acts

    def _done(self, outcome: Outcome) -> list[pb.ServerMessage]:
        """Count the outcome, queue its alerts for the sinks, answer with its verdicts."""
        self.metrics.record(outcome)
        self.exporter.submit(outcome.alerts)
        return [pb.ServerMessage(verdict=v.to_pb()) for v in outcome.verdicts]

    def _refused(self, kind: str, request_id: str, exc: MonitorError) -> list[pb.ServerMessage]:
        self.metrics.rejected.labels(exc.code.name).inc()
        if kind in ("chunk", "attention"):
            self.metrics.dropped.labels("rejected").inc()
        return [pb.ServerMessage(error=pb.StreamError(request_id=request_id, code=exc.code.value[0], message=str(exc)))]

    def handle_group(self, batches: list[list[Received]]) -> list[list[pb.ServerMessage]]:
        """Answer the waiting messages of several streams, each stream's in order.

        Activation chunks are held back and scored together (one SAE encode per SAE,
        ``Engine.add_chunks``) until a message needs what they lead to: another message
        of a request with chunks held back. Requests are independent of each other, so
        every stream's answers are what message-by-message handling would give."""
        answers: list[list[list[pb.ServerMessage]]] = [[] for _ in batches]
        held: list[tuple[list[pb.ServerMessage], pb.ActivationChunk, Chunk, float]] = []

        def score_held() -> None:
            for (slot, c, _, received), result in zip(held, self.engine.add_chunks([h[2] for h in held]), strict=True):
                if isinstance(result, MonitorError):
                    slot += self._refused("chunk", c.request_id, result)
                else:
                    self.metrics.latency.observe(time.perf_counter() - received)
                    slot += self._done(result)
            held.clear()

        for stream, batch in zip(answers, batches, strict=True):
            for msg, received in batch:
                slot: list[pb.ServerMessage] = []
                stream.append(slot)
                kind = "undecodable" if isinstance(msg, Undecodable) else msg.WhichOneof("kind")
                if kind == "chunk":
                    c = msg.chunk
                    try:
                        if c.dropped_since_last:
                            self.metrics.dropped.labels("client_buffer_full").inc(c.dropped_since_last)
                        acts = self._decode_chunk(c)
                        if c.token_text:
                            self.engine.add_text(c.request_id, c.start_position, list(c.token_text))
                    except MonitorError as exc:
                        slot += self._refused(kind, c.request_id, exc)
                        continue
                    held.append((slot, c, Chunk(c.request_id, c.hook_name, c.start_position, acts, _ids(c)), received))
                    continue
                if held and _request_of(msg) in {h[1].request_id for h in held}:
                    score_held()
                slot += self.handle(msg, received)
        score_held()
        return [[m for slot in stream for m in slot] for stream in answers]

    def handle(self, msg: pb.ClientMessage | Undecodable, received: float) -> list[pb.ServerMessage]:
        """Answer one message (an activation chunk is scored alone; ``handle_group`` batches them)."""
        kind = "undecodable" if isinstance(msg, Undecodable) else msg.WhichOneof("kind")
        request_id = ""
        try:
            if kind == "undecodable":
                raise MonitorError(str(msg))
            if kind == "start":
                request_id = msg.start.request_id
                self.engine.start(request_id, msg.start.model_id, _spans(msg.start))
                return []
            if kind == "chunk":
                request_id = msg.chunk.request_id
                return self.handle_group([[(msg, received)]])[0]
            if kind == "attention":
                a = msg.attention
                request_id = a.request_id
                if a.dropped_since_last:
                    self.metrics.dropped.labels("client_buffer_full").inc(a.dropped_since_last)
                outcome = self.engine.add_attention(request_id, a.start_position, list(a.heads), _lookback(a))
                self.metrics.latency.observe(time.perf_counter() - received)
                return self._done(outcome)
            if kind == "end":
                request_id = msg.end.request_id
                out = self._done(self.engine.end(request_id))
                return out + [pb.ServerMessage(done=pb.RequestDone(request_id=request_id))]
            raise MonitorError("empty ClientMessage: set one of start, chunk, attention, end")
        except MonitorError as exc:
            return self._refused(kind, request_id, exc)

    # -- RPCs ------------------------------------------------------------------------------------

    async def Stream(self, request_iterator, context):
        queue: asyncio.Queue = asyncio.Queue(maxsize=self.queue_size)

        async def reader() -> None:
            try:
                async for msg in request_iterator:
                    await queue.put((msg, time.perf_counter()))
            except Exception as exc:  # noqa: BLE001 - a broken client ends its stream only
                log.debug("stream reader ended: %s", exc)
            finally:
                await queue.put(None)

        self.metrics.active_streams.inc()
        self.open_streams += 1
        task = asyncio.create_task(reader())
        try:
            ended = False
            while not ended:
                # Hand over everything already queued (bounded) at once; the scoring
                # thread scores it together with what other streams have waiting.
                batch = [await queue.get()]
                while len(batch) < self.BATCH and not queue.empty():
                    batch.append(queue.get_nowait())
                if batch[-1] is None:
                    ended = True
                    batch.pop()
                if batch:
                    for out in await self.batches.submit(batch):
                        yield out
        finally:
            task.cancel()
            self.open_streams -= 1
            self.metrics.active_streams.dec()

    async def Score(self, request, context):
        await _refuse_undecodable(request, context)

        def run():
            chunks = [(c.hook_name, c.start_position, self._decode_chunk(c), _ids(c)) for c in request.chunks]
            attention = [(a.start_position, list(a.heads), _lookback(a)) for a in request.attention]
            text = [(c.start_position, list(c.token_text)) for c in request.chunks if c.token_text]
            start = request.start
            outcome = self.engine.score(start.request_id, start.model_id, _spans(start), chunks, attention, text)
            return [m.verdict for m in self._done(outcome)]

        try:
            verdicts = await asyncio.get_running_loop().run_in_executor(self.pool, run)
        except MonitorError as exc:
            self.metrics.rejected.labels(exc.code.name).inc()
            await context.abort(exc.code, str(exc))
        return pb.ScoreResponse(verdicts=verdicts)

    async def ListDetectors(self, request, context):
        await _refuse_undecodable(request, context)
        try:
            detectors = self.engine.detectors_of(request.model_id or None)
        except MonitorError as exc:
            await context.abort(exc.code, str(exc))
        return pb.ListDetectorsResponse(
            detectors=[
                pb.DetectorInfo(
                    model_id=model,
                    name=d.name,
                    kind=d.spec.kind,
                    hook_names=[d.sae.hook_name] if d.sae is not None else [],
                    heads=d.heads,
                    requires=d.requires,
                    threshold=d.spec.threshold,
                    target_fpr=d.spec.target_fpr,
                    description=d.spec.description,
                )
                for model, d in detectors
            ]
        )

    async def WatchAlerts(self, request, context):
        await _refuse_undecodable(request, context)
        known = {d.name for d in self.engine.detectors}
        unknown = set(request.detectors) - known
        if unknown:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown detectors {sorted(unknown)}")
        key, q = self.broadcaster.subscribe(frozenset(request.detectors))
        try:
            while True:
                alert = await q.get()
                yield alert.to_pb()
        finally:
            self.broadcaster.unsubscribe(key)


async def _refuse_undecodable(request, context: grpc.aio.ServicerContext) -> None:
    if isinstance(request, Undecodable):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request))


@dataclass
class Sidecar:
    """A running sidecar: gRPC server, metrics endpoint, engine and sinks."""

    server: grpc.aio.Server
    servicer: MonitorServicer
    engine: Router
    exporter: AlertExporter
    address: str
    metrics_port: int | None
    _metrics_http: object | None = None
    _expiry: asyncio.Task | None = None

    async def stop(self, grace: float = 1.0) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        await self.server.stop(grace)
        self.servicer.batches.close()
        self.servicer.pool.shutdown(wait=False)
        if self._metrics_http is not None:
            http_server, _thread = self._metrics_http
            http_server.shutdown()
        self.exporter.close()


def build_sinks(cfg: Config, metrics: Metrics) -> tuple[AlertExporter, Broadcaster]:
    """The alert sinks the config names, behind the export queue."""
    broadcaster = Broadcaster(on_drop=metrics.watch_dropped.inc)
    sinks = [broadcaster]
    if cfg.redis_url:
        spool = AlertSpool(cfg.spool_path)
        sinks.append(
            RedisStreamSink(
                cfg.redis_url,
                spool,
                cfg.redis_stream,
                cfg.redis_maxlen,
                metrics,
                cluster=cfg.redis_cluster,
                timeout_s=cfg.redis_timeout_s,
            )
        )
    else:
        sinks.append(SQLiteSink(cfg.sqlite_path))
    fan = FanOut(sinks, on_failure=lambda name: metrics.sink_failures.labels(name).inc())
    metrics.declare(sinks=[s.name for s in sinks])
    exporter = AlertExporter(fan, cfg.alert_queue_size, on_drop=metrics.alerts_dropped.inc)
    metrics.alerts_queued.set_function(lambda: len(exporter))
    return exporter, broadcaster


def build_engine(cfg: Config, metrics: Metrics) -> Router:
    """One engine per monitored model (its pack's detectors), or one for every model
    when the config names its own detector specs."""
    models = [ANY_MODEL] if cfg.detector_specs else list(dict.fromkeys(cfg.models))
    engines = {
        model: Engine.from_specs(
            spec_paths=cfg.spec_paths(None if model == ANY_MODEL else model),
            only=cfg.detectors or None,
            extra_saes=cfg.saes,
            limits=Limits(cfg.session_ttl_s, cfg.max_sessions, cfg.max_tokens_per_request),
            alert_text=cfg.alert_text,
            act=cfg.act,
        )
        for model in models
    }
    router = Router(engines)
    names = list(dict.fromkeys(d.name for d in router.detectors if d.spec.alert))
    metrics.declare(detectors=names, saes=router.saes)
    metrics.active_requests.set_function(lambda: router.active_requests)
    return router


async def start_sidecar(cfg: Config) -> Sidecar:
    # Security settings are checked before the (slow) engine load, so a mistake fails at once.
    token = cfg.bearer_token()
    credentials = server_credentials(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca)
    check_exposure(cfg.listen, credentials is not None, bool(cfg.tls_client_ca or token), cfg.allow_insecure)
    _prepare_unix_socket(cfg.listen)
    metrics = Metrics()
    engine = build_engine(cfg, metrics)
    exporter, broadcaster = build_sinks(cfg, metrics)
    servicer = MonitorServicer(
        engine, metrics, exporter, broadcaster, cfg.queue_size, cfg.batch_wait_ms / 1000, cfg.batch_rows
    )
    interceptors = [BearerTokenInterceptor(token, metrics.unauthenticated.inc)] if token else []
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", cfg.max_message_bytes)], interceptors=interceptors
    )
    add_monitor_service(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    port = server.add_secure_port(cfg.listen, credentials) if credentials else server.add_insecure_port(cfg.listen)
    if port == 0:
        raise OSError(f"cannot listen on {cfg.listen}")
    address = cfg.listen if cfg.listen.startswith("unix:") else f"{cfg.listen.rsplit(':', 1)[0]}:{port}"
    await server.start()
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    metrics_http = None
    metrics_port = None
    if cfg.metrics_port is not None:
        host = cfg.metrics_host
        metrics_http = start_http_server(cfg.metrics_port, addr=host, registry=metrics.registry)
        metrics_port = metrics_http[0].server_port
    expiry = asyncio.get_running_loop().create_task(_expire_loop(servicer, cfg.session_ttl_s))
    return Sidecar(server, servicer, engine, exporter, address, metrics_port, metrics_http, expiry)


def _prepare_unix_socket(listen: str) -> None:
    """Create a unix socket's folder, and refuse a path another live server answers on
    (gRPC would silently take the path over)."""
    if listen.startswith("unix://"):
        path = Path(listen[len("unix://") :])
    elif listen.startswith("unix:"):
        path = Path(listen[len("unix:") :])
    else:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():
        with socket.socket(socket.AF_UNIX) as probe:
            if probe.connect_ex(str(path)) == 0:
                raise ValueError(f"cannot listen on {listen}: another server answers there; stop it or choose another")


async def _expire_loop(servicer: MonitorServicer, ttl: float) -> None:
    """Drop idle requests' state; on the scoring thread, so the loop never waits on the engine lock."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(max(1.0, ttl / 4))
        await loop.run_in_executor(servicer.pool, servicer.engine.expire)


class SidecarThread:
    """A sidecar on its own event loop in a background thread (demo, tests, bench)."""

    def __init__(self, cfg: Config):
        import threading

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="latentwatch-sidecar", daemon=True)
        self._thread.start()
        try:
            self.sidecar: Sidecar = asyncio.run_coroutine_threadsafe(start_sidecar(cfg), self._loop).result()
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            raise

    @property
    def address(self) -> str:
        return self.sidecar.address

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sidecar.stop(0.5), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def serve_forever(cfg: Config) -> None:
    """Run a sidecar until interrupted (``latentwatch serve``)."""

    async def main() -> None:
        sidecar = await start_sidecar(cfg)
        names = ", ".join(d.name for d in sidecar.engine.detectors)
        print(f"latentwatch sidecar listening on {sidecar.address} with detectors: {names}", flush=True)
        if sidecar.metrics_port:
            print(f"metrics: http://{cfg.metrics_host}:{sidecar.metrics_port}/metrics", flush=True)
        print(f"alerts: {'redis ' + cfg.redis_stream if cfg.redis_url else 'sqlite ' + cfg.sqlite_path}", flush=True)
        try:
            await sidecar.server.wait_for_termination()
        finally:
            await sidecar.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
