"""Property-based fuzzing of every RPC over a real socket against one sidecar process.

Malformed shapes, dtypes, sizes and bytes, NaN/Inf, messages over the size
limit, out-of-order and repeated chunks, repeated starts, unknown request ids
and undecodable bytes: each case must get a clear status (a StreamError or a
call status with a message, from a known set of codes; never UNKNOWN or
INTERNAL) or a valid answer, the Stream must go on serving a good request
afterwards, and the server must stay up with bounded memory. Examples are
derandomized so CI runs the same cases every time; the counts run are printed
by the last test (``pytest -s``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from collections import Counter

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from latentwatch.v1 import monitor_pb2 as pb
from latentwatch.v1 import monitor_pb2_grpc as pb_grpc
from latentwatch.wire.codec import to_wire

from .conftest import free_port

D_MODEL = 576
HOOKS = ["model.layers.12", "model.layers.20"]
MAX_MESSAGE = 256 * 1024  # the fuzzed sidecar's limit, small so that "huge" is cheap to build
CLEAR = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.NOT_FOUND,
}
CLEAR_VALUES = {c.value[0] for c in CLEAR}


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


CASES: Counter[str] = Counter()  # examples run, per RPC


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb * 1024


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory):
    """The sidecar as its own process, so its memory is measured apart from the fuzzer's."""
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "LATENTWATCH_METRICS_PORT": str(metrics_port),
        "LATENTWATCH_SQLITE_PATH": str(tmp_path_factory.mktemp("fuzz") / "alerts.sqlite"),
        "LATENTWATCH_MAX_MESSAGE_BYTES": str(MAX_MESSAGE),
        "LATENTWATCH_SESSION_TTL_S": "2",  # sessions fuzz cases leave open expire quickly
        "LATENTWATCH_MAX_SESSIONS": "256",
        "LATENTWATCH_MAX_TOKENS_PER_REQUEST": "4096",
    }
    cmd = [sys.executable, "-m", "latentwatch.cli", "serve", "--listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert "listening" in proc.stdout.readline()
    proc.address, proc.metrics_url = f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    yield proc
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def channel(sidecar):
    with grpc.insecure_channel(sidecar.address) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(sidecar, channel):
    """The Monitor stub, handed out once the sidecar is warm: one pass of each RPC first, so
    lazy allocations are not counted as growth; the RSS then is the memory test's baseline.
    Every fuzz test takes this fixture, so the baseline is always taken before any fuzzing."""
    s = pb_grpc.MonitorStub(channel)
    for i in range(20):
        list(s.Stream(iter(_good_request(f"warm-{i}")), timeout=30))
    s.ListDetectors(pb.ListDetectorsRequest(), timeout=10)
    _assert_serving(channel)
    sidecar.rss_before = _rss_bytes(sidecar.pid)
    return s


# -- strategies ----------------------------------------------------------------------------

uint32 = st.integers(0, 2**32 - 1)
small_or_any_uint32 = st.integers(0, 8) | uint32
# symbolic ids: "a".."c" become per-example ids in the test body; anything else stays (unknown ids)
request_ids = st.sampled_from(["a", "b", "c"]) | st.text(max_size=12)


@st.composite
def tensors(draw, width: int, low: float | None = None) -> pb.Tensor:
    """Mostly well-formed [rows, width] tensors, some with NaN/Inf/extremes, some with one field broken."""
    rows = draw(st.integers(1, 5))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    x = torch.rand(rows, width, generator=g) if low is not None else torch.randn(rows, width, generator=g)
    special = draw(st.sampled_from([None, None, float("nan"), float("inf"), float("-inf"), 1e38, -1.5, 1.5]))
    if special is not None:
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = special
    t = to_wire(x.to(draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))))
    broken = draw(st.sampled_from(["none", "none", "none", "dtype", "shape", "data", "width"]))
    if broken == "dtype":
        t.dtype = draw(st.sampled_from([0, 1, 2, 3, 4, 77, -5, 2**31 - 1]))
    elif broken == "shape":
        t.shape[:] = draw(st.lists(st.sampled_from([0, 1, rows, width]) | uint32, max_size=4))
    elif broken == "data":
        n = len(t.data)
        t.data = draw(st.sampled_from([t.data[:-1], t.data + b"\0", b"", t.data[: n // 2]]) | st.binary(max_size=64))
    elif broken == "width":
        t = to_wire(torch.randn(rows, draw(st.integers(1, 2 * width))))
    return t


def spans():
    role = st.sampled_from(list(pb.SpanRole.values())) | st.integers(-3, 2**31 - 1)
    return st.lists(st.builds(pb.Span, role=role, start=small_or_any_uint32, end=small_or_any_uint32), max_size=4)


def starts(rid):
    return st.builds(pb.RequestStart, request_id=st.just(rid), model_id=st.text(max_size=8), spans=spans()).map(
        lambda s: pb.ClientMessage(start=s)
    )


@st.composite
def chunks(draw, rid, position) -> pb.ClientMessage:
    t = draw(tensors(D_MODEL))
    rows = t.shape[0] if t.shape else 0
    # ids matching the rows, unless a broken shape claims billions of rows (a list that size would
    # exhaust the fuzzer's own memory; the sidecar's answer to such a shape is fuzzed either way)
    matching = list(range(rows)) if rows <= 64 else []
    token_ids = draw(st.sampled_from([[], matching]) | st.lists(uint32, max_size=6))
    hook = draw(st.sampled_from(HOOKS) | st.text(max_size=16))
    c = pb.ActivationChunk(
        request_id=rid,
        hook_name=hook,
        start_position=position,
        activations=t,
        token_ids=token_ids,
        dropped_since_last=draw(st.integers(0, 3) | uint32),
    )
    return pb.ClientMessage(chunk=c)


@st.composite
def attention_chunks(draw, rid, position) -> pb.ClientMessage:
    heads = draw(st.lists(st.sampled_from(["L14H3", "L5H0"]) | st.text(max_size=6), max_size=3))
    a = pb.AttentionChunk(
        request_id=rid,
        start_position=position,
        heads=heads,
        lookback=draw(tensors(max(len(heads), 1), low=0.0)),
        dropped_since_last=draw(st.integers(0, 3)),
    )
    return pb.ClientMessage(attention=a)


def ends(rid):
    return st.just(pb.ClientMessage(end=pb.RequestEnd(request_id=rid)))


def any_message():
    return st.one_of(
        request_ids.flatmap(starts),
        st.tuples(request_ids, small_or_any_uint32).flatmap(lambda a: chunks(*a)),
        st.tuples(request_ids, small_or_any_uint32).flatmap(lambda a: attention_chunks(*a)),
        request_ids.flatmap(ends),
        st.just(pb.ClientMessage()),
    )


@st.composite
def scripts(draw) -> list[pb.ClientMessage]:
    """A few requests sent the way a client would (start, chunks in order, maybe end), mixed with
    arbitrary messages, then disordered: repeated messages and swapped neighbours."""
    msgs: list[pb.ClientMessage] = []
    for rid in draw(st.lists(st.sampled_from("abc"), max_size=3, unique=True)):
        msgs.append(draw(starts(rid)))
        position = draw(st.integers(0, 3))
        for _ in range(draw(st.integers(0, 4))):
            if draw(st.booleans()):
                m = draw(chunks(rid, position))
                rows = m.chunk.activations.shape[0] if m.chunk.activations.shape else 1
            else:
                m = draw(attention_chunks(rid, position))
                rows = m.attention.lookback.shape[0] if m.attention.lookback.shape else 1
            msgs.append(m)
            position += rows + draw(st.integers(0, 2))
        if draw(st.booleans()):
            msgs.append(pb.ClientMessage(end=pb.RequestEnd(request_id=rid)))
    msgs += draw(st.lists(any_message(), max_size=4))
    for _ in range(draw(st.integers(0, 3))):
        if msgs:
            msgs.insert(draw(st.integers(0, len(msgs))), msgs[draw(st.integers(0, len(msgs) - 1))])
    for _ in range(draw(st.integers(0, 2))):
        if len(msgs) > 1:
            i = draw(st.integers(0, len(msgs) - 2))
            msgs[i], msgs[i + 1] = msgs[i + 1], msgs[i]
    return msgs


def _scoped(msgs: list[pb.ClientMessage], prefix: str) -> list[pb.ClientMessage]:
    """Copies whose symbolic ids a, b, c are unique to this example."""
    out = []
    for m in msgs:
        m2 = pb.ClientMessage()
        m2.CopyFrom(m)
        kind = m2.WhichOneof("kind")
        if kind is not None:
            body = getattr(m2, kind)
            if body.request_id in ("a", "b", "c"):
                body.request_id = f"{prefix}:{body.request_id}"
        out.append(m2)
    return out


def _good_request(rid: str) -> list[pb.ClientMessage]:
    start = pb.RequestStart(
        request_id=rid, model_id="smollm2-135m-instruct", spans=[pb.Span(role=pb.SPAN_ROLE_USER, start=1, end=4)]
    )
    chunk = pb.ActivationChunk(
        request_id=rid, hook_name=HOOKS[0], start_position=1, activations=to_wire(torch.randn(3, D_MODEL))
    )
    return [
        pb.ClientMessage(start=start),
        pb.ClientMessage(chunk=chunk),
        pb.ClientMessage(end=pb.RequestEnd(request_id=rid)),
    ]


def _assert_clear(err: grpc.RpcError) -> None:
    assert err.code() in CLEAR, (err.code(), err.details())
    assert err.details(), f"{err.code()} without a message"


def _assert_serving(channel) -> None:
    resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="latentwatch.v1.Monitor"))
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


# -- properties --------------------------------------------------------------------------------


_example = iter(range(10**9))


@fuzz(200)
@given(msgs=scripts())
def test_stream_answers_every_malformed_message_and_keeps_serving(stub, msgs):
    n = next(_example)
    CASES["Stream"] += 1
    probe = f"{n}:probe"
    tail = [pb.ClientMessage(end=pb.RequestEnd(request_id=f"{n}:{r}")) for r in "abc"] + _good_request(probe)
    sent = _scoped(msgs, str(n)) + tail
    responses = list(stub.Stream(iter(sent), timeout=60))
    errors = [r.error for r in responses if r.WhichOneof("kind") == "error"]
    for e in errors:
        assert e.code in CLEAR_VALUES and e.message, e
    assert len(errors) <= len(sent)
    # whatever came before, a good request on the same stream is still scored
    assert [r.done.request_id for r in responses if r.WhichOneof("kind") == "done"][-1] == probe
    assert not [e for e in errors if e.request_id == probe]


@fuzz(60)
@given(
    parts=st.lists(
        st.tuples(st.sampled_from([*HOOKS, "attention"]), st.integers(0, 12), st.integers(1, 4)), min_size=1, max_size=8
    ),
    restarts=st.integers(0, 2),
)
def test_repeated_starts_and_overlapping_chunks_are_refused_not_counted_twice(stub, parts, restarts):
    """A chunk that goes back over positions already received for its hook (a duplicate, or
    out of order) is refused with INVALID_ARGUMENT, and a second start of an open request with
    ALREADY_EXISTS; gaps are fine (the client dropped rows). Checked against a model of the rule."""
    n = next(_example)
    CASES["Stream (order)"] += 1
    rid = f"{n}:order"
    start = pb.ClientMessage(start=pb.RequestStart(request_id=rid, spans=[pb.Span(role=pb.SPAN_ROLE_USER, start=1)]))
    msgs = [start] * (1 + restarts)
    want = [grpc.StatusCode.ALREADY_EXISTS] * restarts
    next_position: dict[str, int] = {}
    for stream, position, rows in parts:
        if stream == "attention":
            a = pb.AttentionChunk(
                request_id=rid, start_position=position, heads=["L14H3"], lookback=to_wire(torch.rand(rows, 1))
            )
            msgs.append(pb.ClientMessage(attention=a))
        else:
            c = pb.ActivationChunk(
                request_id=rid,
                hook_name=stream,
                start_position=position,
                activations=to_wire(torch.randn(rows, D_MODEL)),
            )
            msgs.append(pb.ClientMessage(chunk=c))
        if position < next_position.get(stream, 0):
            want.append(grpc.StatusCode.INVALID_ARGUMENT)
        else:
            next_position[stream] = position + rows
    msgs.append(pb.ClientMessage(end=pb.RequestEnd(request_id=rid)))
    responses = list(stub.Stream(iter(msgs), timeout=60))
    errors = [r.error for r in responses if r.WhichOneof("kind") == "error"]
    assert [e.code for e in errors] == [c.value[0] for c in want]
    assert all("overlap" in e.message or "already open" in e.message for e in errors)
    assert [r.done.request_id for r in responses if r.WhichOneof("kind") == "done"] == [rid]


@fuzz(80)
@given(
    start=request_ids.flatmap(starts),
    body=st.lists(
        st.tuples(request_ids, small_or_any_uint32).flatmap(lambda a: chunks(*a))
        | st.tuples(request_ids, small_or_any_uint32).flatmap(lambda a: attention_chunks(*a)),
        max_size=4,
    ),
)
def test_score_answers_or_refuses_clearly(stub, start, body):
    n = next(_example)
    CASES["Score"] += 1
    req = pb.ScoreRequest(start=start.start)
    for m in body:
        (req.chunks if m.WhichOneof("kind") == "chunk" else req.attention).append(getattr(m, m.WhichOneof("kind")))
    for part in [req.start, *req.chunks, *req.attention]:
        if part.request_id in ("a", "b", "c"):
            part.request_id = f"{n}:{part.request_id}"
    try:
        resp = stub.Score(req, timeout=60)
    except grpc.RpcError as err:
        _assert_clear(err)
    else:
        assert {v.detector for v in resp.verdicts} <= {
            d.name for d in stub.ListDetectors(pb.ListDetectorsRequest()).detectors
        }


@fuzz(12)
@given(extra=st.integers(-64, MAX_MESSAGE), rpc=st.sampled_from(["Stream", "Score"]))
def test_messages_near_and_over_the_size_limit(stub, extra, rpc):
    """Up to twice the limit: over it, the call ends with RESOURCE_EXHAUSTED; under it, the
    tensor (whose bytes do not match its shape) is refused like any malformed one."""
    CASES[f"{rpc} (huge)"] += 1
    t = pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[8, D_MODEL], data=b"\0" * (MAX_MESSAGE + extra))
    chunk = pb.ActivationChunk(request_id="huge", hook_name=HOOKS[0], start_position=1, activations=t)
    msg = pb.ClientMessage(chunk=chunk) if rpc == "Stream" else pb.ScoreRequest(chunks=[chunk])
    try:
        if rpc == "Stream":
            codes = [r.error.code for r in stub.Stream(iter([msg]), timeout=60)]
        else:
            stub.Score(msg, timeout=60)
            codes = []
    except grpc.RpcError as err:
        _assert_clear(err)
        codes = [err.code().value[0]]
    want = grpc.StatusCode.RESOURCE_EXHAUSTED if msg.ByteSize() > MAX_MESSAGE else grpc.StatusCode.INVALID_ARGUMENT
    assert codes == [want.value[0]]


@fuzz(60)
@given(
    data=st.lists(st.binary(max_size=48), min_size=1, max_size=3),
    method=st.sampled_from(["Stream", "Score", "ListDetectors", "WatchAlerts"]),
)
def test_undecodable_bytes_get_invalid_argument(channel, data, method):
    CASES[f"{method} (raw bytes)"] += 1
    path = f"/latentwatch.v1.Monitor/{method}"
    raw = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}
    try:
        if method == "Stream":
            out = [pb.ServerMessage.FromString(b) for b in channel.stream_stream(path, **raw)(iter(data), timeout=30)]
            for r in out:
                assert r.WhichOneof("kind") == "error" and r.error.code in CLEAR_VALUES and r.error.message
        elif method == "WatchAlerts":
            next(channel.unary_stream(path, **raw)(data[0], timeout=0.3))
        else:
            channel.unary_unary(path, **raw)(data[0], timeout=30)
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED or method != "WatchAlerts":  # a valid subscription
            _assert_clear(err)


@fuzz(25)
@given(
    names=st.lists(
        st.sampled_from(["harmful_request", "refusal", "harmful_compliance"]) | st.text(max_size=10), max_size=3
    )
)
def test_watch_alerts_refuses_unknown_detectors_clearly(stub, names):
    CASES["WatchAlerts"] += 1
    known = {"harmful_request", "refusal", "harmful_compliance"}
    call = stub.WatchAlerts(pb.WatchAlertsRequest(detectors=names), timeout=0.3)
    with pytest.raises(grpc.RpcError) as err:
        next(call)
    if set(names) <= known:
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # subscribed; no alert came
    else:
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown detectors" in err.value.details()


@fuzz(25)
@given(service=st.sampled_from(["", "latentwatch.v1.Monitor"]) | st.text(max_size=20))
def test_health_check_answers_any_service_name(channel, service):
    CASES["Health.Check"] += 1
    try:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert service in ("", "latentwatch.v1.Monitor") and status.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND, err


def test_server_still_serves_with_bounded_memory(sidecar, stub, channel):
    assert sidecar.poll() is None
    _assert_serving(channel)
    out = list(stub.Stream(iter(_good_request("after-fuzz")), timeout=30))
    assert any(r.WhichOneof("kind") == "done" for r in out)
    before, after = sidecar.rss_before, _rss_bytes(sidecar.pid)
    metrics = urllib.request.urlopen(sidecar.metrics_url).read().decode()
    found = re.findall(r'latentwatch_rejected_messages_total\{code="(\w+)"\} ([0-9.]+)', metrics)
    refused = {code: int(float(n)) for code, n in found}
    scored = int(float(re.search(r"latentwatch_chunks_received_total ([0-9.]+)", metrics).group(1)))
    print(
        f"\nfuzz cases run: {sum(CASES.values())} {dict(CASES)}; chunks scored {scored}, "
        f"messages refused by code {refused}; sidecar RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB"
    )
    assert sum(CASES.values()) >= 400
    # Idle sessions expire after 2 s and the session cap holds; growth past this is a leak.
    assert after < 1.1 * before, f"sidecar RSS grew from {before / 2**20:.1f} to {after / 2**20:.1f} MiB"
