"""Who may talk to the sidecar's gRPC port: TLS, mutual TLS and a bearer token, on both ends.

Activations and alerts describe what users asked and what the model answered, so the port is
closed by default: a unix socket (file permissions decide who connects) or loopback. Reaching
it from other machines needs TLS plus a way to authenticate clients (a client CA for mutual TLS,
or a bearer token), or an explicit ``allow_insecure``; the sidecar refuses to start otherwise.

The token check is a server interceptor, so it covers every RPC the server has, present and
future, except standard health checking, which stays open so that orchestrators can probe
liveness without a secret (it reveals only SERVING / NOT_SERVING).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import grpc

AUTH_HEADER = "authorization"
OPEN_METHOD_PREFIX = "/grpc.health.v1.Health/"
UNAUTHENTICATED_MESSAGE = "missing or wrong bearer token (metadata 'authorization: Bearer <token>')"


def read_pem(path: str, setting: str) -> bytes:
    """A PEM file's bytes, or a sentence naming the setting that points at something else."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{setting}: no file at {path}")
    data = p.read_bytes()
    if b"-----BEGIN " not in data:
        raise ValueError(f"{setting}: {path} holds no PEM block")
    return data


def is_local_address(listen: str) -> bool:
    """True for a unix socket or a loopback TCP address: nothing off this machine can connect."""
    if listen.startswith("unix:") or listen.startswith("unix-abstract:"):
        return True
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or an empty host (all interfaces): assume reachable


def check_exposure(listen: str, tls: bool, client_auth: bool, allow_insecure: bool) -> None:
    """Refuse a network-reachable port that is not both encrypted and authenticated.

    A bearer token without TLS is not enough off-host: anyone on the path could read it (and the
    activations) and replay it.
    """
    if allow_insecure or is_local_address(listen):
        return
    needs = (("TLS (tls_cert, tls_key)", tls), ("client authentication", client_auth))
    missing = [what for what, ok in needs if not ok]
    if missing:
        raise ValueError(
            f"listen {listen} is reachable from other machines but has no {' and no '.join(missing)}: set tls_cert "
            "and tls_key, plus tls_client_ca (mutual TLS) or auth_token / auth_token_file; or bind to a unix socket "
            "or loopback; or set allow_insecure: true to accept that risk"
        )


def server_credentials(cert: str | None, key: str | None, client_ca: str | None) -> grpc.ServerCredentials | None:
    """TLS credentials for the port, or None for plaintext. With a client CA the server
    requires every client to present a certificate that CA signed (mutual TLS)."""
    if not (cert or key or client_ca):
        return None
    if not (cert and key):
        raise ValueError("TLS needs both tls_cert and tls_key (tls_client_ca alone cannot serve TLS)")
    pair = (read_pem(key, "tls_key"), read_pem(cert, "tls_cert"))
    root = read_pem(client_ca, "tls_client_ca") if client_ca else None
    return grpc.ssl_server_credentials([pair], root_certificates=root, require_client_auth=root is not None)


def _digest(value: str) -> bytes:
    # Hashing first makes the comparison constant-time in the length too.
    return hashlib.sha256(value.encode()).digest()


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses, with UNAUTHENTICATED, every call (except health checks) that lacks
    ``authorization: Bearer <token>``. The token is compared in constant time and never logged."""

    def __init__(self, token: str, on_refused: Callable[[], None] = lambda: None):
        self._expected = _digest(f"Bearer {token}")
        self._on_refused = on_refused

    def _authorised(self, metadata) -> bool:
        values = [v for k, v in metadata or () if k == AUTH_HEADER and isinstance(v, str)]
        return len(values) == 1 and hmac.compare_digest(_digest(values[0]), self._expected)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler_call_details.method.startswith(OPEN_METHOD_PREFIX):
            return handler
        if self._authorised(handler_call_details.invocation_metadata):
            return handler
        self._on_refused()
        return _refusal(handler)


async def _refuse(request_or_iterator, context) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)


HANDLER_FOR = {  # (client streams, server streams) -> grpc's method-handler factory for that shape
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _refusal(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler:
    """A handler of the same streaming shape as ``handler`` that refuses the call without reading it."""
    if handler is None:
        return grpc.unary_unary_rpc_method_handler(_refuse)
    return HANDLER_FOR[(handler.request_streaming, handler.response_streaming)](_refuse)


# -- the client's side ------------------------------------------------------------------------------------


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: tuple | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the bearer token to every call's metadata (over TLS or a local plaintext socket alike)."""

    def __init__(self, token: str):
        self._header = (AUTH_HEADER, f"Bearer {token}")

    def _with_token(self, d) -> grpc.ClientCallDetails:
        metadata = (*(d.metadata or ()), self._header)
        return _CallDetails(d.method, d.timeout, metadata, d.credentials, d.wait_for_ready, d.compression)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._with_token(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._with_token(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._with_token(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._with_token(client_call_details), request_iterator)


@dataclass(frozen=True)
class ClientAuth:
    """How a client reaches the sidecar: TLS when ``root_ca`` is set (the CA that signed the
    sidecar's certificate), a client certificate for mutual TLS, and/or a bearer token.
    The default is a plaintext channel, for a unix socket or loopback."""

    root_ca: str | None = None
    cert: str | None = None
    key: str | None = None
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise ValueError("a client certificate needs both cert and key")
        if self.cert and not self.root_ca:
            raise ValueError("a client certificate (mutual TLS) needs root_ca to verify the sidecar too")

    def channel(self, target: str, options: list[tuple[str, object]] | None = None) -> grpc.Channel:
        if self.root_ca:
            creds = grpc.ssl_channel_credentials(
                root_certificates=read_pem(self.root_ca, "root_ca"),
                private_key=read_pem(self.key, "key") if self.key else None,
                certificate_chain=read_pem(self.cert, "cert") if self.cert else None,
            )
            channel = grpc.secure_channel(target, creds, options=options)
        else:
            channel = grpc.insecure_channel(target, options=options)
        return grpc.intercept_channel(channel, _BearerToken(self.token)) if self.token else channel
