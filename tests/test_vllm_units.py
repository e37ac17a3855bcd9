"""The vLLM integration's own logic, which imports no vLLM: its settings (TLS and token
options included), the request ids and spans the worker derives, the context span of a
passage inside a message, and the abort watcher against a real sidecar that requires a
token. These run whether or not vLLM is installed; tests/test_vllm.py needs a vLLM server."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest
from latentwatch.capture.chat import tokenize_chat
from latentwatch.integrations.vllm.abort import AbortWatcher
from latentwatch.integrations.vllm.settings import Settings
from latentwatch.integrations.vllm.worker import public_request_id, request_spans
from latentwatch.sidecar.server import SidecarThread
from latentwatch.v1 import monitor_pb2 as pb
from latentwatch.v1 import monitor_pb2_grpc as pb_grpc
from latentwatch.wire.security import ClientAuth

from .conftest import HARMFUL, make_config, score_request

CONTEXT = "The Varnholt Bridge, finished in 1931, was designed by the engineer Ilse Marquardt."
QUESTION = "Who designed the Varnholt Bridge?"


def test_settings_come_from_the_environment_and_bad_ones_are_refused(tmp_path):
    assert Settings.load({}) is None  # not configured: the plugin does nothing
    s = Settings.load({"LATENTWATCH_VLLM_SIDECAR": "unix:///run/lw.sock", "LATENTWATCH_VLLM_LAYERS": "12,20",
                       "LATENTWATCH_VLLM_HEADS": "L14H5", "LATENTWATCH_VLLM_ABORT": "harmful_request"})  # fmt: skip
    assert s.hook_names == ["model.layers.12", "model.layers.20"] and s.heads == ("L14H5",)
    assert s.abort == ("harmful_request",)
    cfg = tmp_path / "lw.yaml"
    cfg.write_text("sidecar: 127.0.0.1:50051\nlayers: [12]\n")
    assert Settings.load({"LATENTWATCH_VLLM_CONFIG": str(cfg), "LATENTWATCH_VLLM_LAYERS": "20"}).layers == (20,)
    with pytest.raises(ValueError, match="LAYERS"):
        Settings.load({"LATENTWATCH_VLLM_SIDECAR": "127.0.0.1:1"})
    with pytest.raises(ValueError, match="L<layer>H<head>"):
        Settings.load({"LATENTWATCH_VLLM_SIDECAR": "127.0.0.1:1", "LATENTWATCH_VLLM_LAYERS": "1",
                       "LATENTWATCH_VLLM_HEADS": "9.3"})  # fmt: skip
    cfg.write_text("sidecar: x\nlayer: [12]\n")
    with pytest.raises(ValueError, match="unknown"):
        Settings.load({"LATENTWATCH_VLLM_CONFIG": str(cfg)})


def test_request_ids_and_spans_seen_by_the_worker():
    assert public_request_id("chatcmpl-9f2a-1b2c3d4e") == "chatcmpl-9f2a"
    assert public_request_id("0_chatcmpl-9f2a-1b2c3d4e") == "0_chatcmpl-9f2a"  # a parallel sample
    assert public_request_id("my-id-1b2c3d4e", randomized=False) == "my-id-1b2c3d4e"
    user, resp = pb.SPAN_ROLE_USER, pb.SPAN_ROLE_RESPONSE
    assert request_spans(10, {"latentwatch": "off"}) is None
    default = [(user, 0, 10), (resp, 10, 0)]
    given = {"latentwatch_spans": [pb.SPAN_ROLE_TEMPLATE, 0, 3, user, 3, 9], "latentwatch_prompt_len": 10}
    assert [(s.role, s.start, s.end) for s in request_spans(10, given)] == [(5, 0, 3), (user, 3, 9), (resp, 10, 0)]
    # spans computed for another rendering of the prompt, or out of range, are not trusted
    for bad in ({**given, "latentwatch_prompt_len": 11}, {**given, "latentwatch_spans": [user, 3, 12]}, None):
        assert [(s.role, s.start, s.end) for s in request_spans(10, bad)] == default


def test_a_passage_inside_a_message_becomes_the_context_span(lm):
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": f"{CONTEXT}\n\n{QUESTION}"},
    ]
    ct = tokenize_chat(lm.tokenizer, messages, passage_text=CONTEXT)
    (ctx,) = [s for s in ct.spans if s.role == pb.SPAN_ROLE_CONTEXT]
    assert lm.tokenizer.decode(ct.input_ids[ctx.start : ctx.end]).strip() == CONTEXT
    user = [s for s in ct.spans if s.role == pb.SPAN_ROLE_USER]
    assert QUESTION in lm.tokenizer.decode(ct.input_ids[user[-1].start : user[-1].end])
    with pytest.raises(ValueError, match="not both"):
        tokenize_chat(lm.tokenizer, messages, context="x", passage_text=CONTEXT)


def test_settings_take_the_same_tls_and_token_options_as_every_client(tmp_path):
    base = {"LATENTWATCH_VLLM_SIDECAR": "sidecar.internal:50051", "LATENTWATCH_VLLM_LAYERS": "12"}
    assert Settings.load(base).auth == ClientAuth()  # plaintext by default (unix socket, loopback)
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "client.pem", "client.key"))
    cfg = tmp_path / "lw.yaml"
    cfg.write_text(f"tls_root_ca: {ca}\ntls_cert: {cert}\ntls_key: {key}\nauth_token_file: {token}\n")
    s = Settings.load({**base, "LATENTWATCH_VLLM_CONFIG": str(cfg)})
    assert s.auth == ClientAuth(root_ca=str(ca), cert=str(cert), key=str(key), token="s3cret")
    assert Settings.load({**base, "LATENTWATCH_VLLM_AUTH_TOKEN": "t"}).auth.token == "t"
    with pytest.raises(ValueError, match="not both"):
        Settings.load({**base, "LATENTWATCH_VLLM_AUTH_TOKEN": "t", "LATENTWATCH_VLLM_AUTH_TOKEN_FILE": str(token)})
    with pytest.raises(ValueError, match="needs both cert and key"):
        Settings.load({**base, "LATENTWATCH_VLLM_TLS_ROOT_CA": str(ca), "LATENTWATCH_VLLM_TLS_CERT": str(cert)})
    with pytest.raises(FileNotFoundError, match="auth_token_file"):
        Settings.load({**base, "LATENTWATCH_VLLM_AUTH_TOKEN_FILE": str(tmp_path / "missing")})


class _Engine:
    """Stands in for vLLM's engine client: records the requests it is asked to abort."""

    def __init__(self) -> None:
        self.aborted: list[str] = []

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)


def test_the_abort_watcher_reaches_a_sidecar_that_requires_a_token(tmp_path, lm):
    sc = SidecarThread(make_config(tmp_path, auth_token="s3cret"))
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    env = {"LATENTWATCH_VLLM_SIDECAR": sc.address, "LATENTWATCH_VLLM_LAYERS": "12",
           "LATENTWATCH_VLLM_ABORT": "harmful_request"}  # fmt: skip
    with_token, without = _Engine(), _Engine()
    AbortWatcher(Settings.load({**env, "LATENTWATCH_VLLM_AUTH_TOKEN": "s3cret"}), with_token, loop)
    AbortWatcher(Settings.load(env), without, loop)
    sent: list[str] = []
    try:
        with ClientAuth(token="s3cret").channel(sc.address) as ch:
            stub = pb_grpc.MonitorStub(ch)
            deadline = time.monotonic() + 60
            # The watchers subscribe in the background: raise alerts until one is acted on.
            while not with_token.aborted and time.monotonic() < deadline:
                sent.append(f"harm-{len(sent)}")
                stub.Score(score_request(sent[-1], lm, HARMFUL, ["model.layers.12"]), timeout=60)
                time.sleep(0.3)
        assert with_token.aborted and set(with_token.aborted) <= set(sent)
        assert without.aborted == []  # refused for want of the token: it never sees an alert
        with grpc.insecure_channel(sc.address) as ch:
            with pytest.raises(grpc.RpcError) as err:
                next(pb_grpc.MonitorStub(ch).WatchAlerts(pb.WatchAlertsRequest(), timeout=5))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        sc.stop()
        loop.call_soon_threadsafe(loop.stop)
