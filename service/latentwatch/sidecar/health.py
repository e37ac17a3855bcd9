"""``python -m latentwatch.sidecar.health [ADDRESS]``: exit 0 when the sidecar answers
gRPC health checking with SERVING, 1 otherwise.

Container probes run this (Kubernetes exec probes, the compose healthcheck):
the sidecar listens on a unix socket that kubelet's built-in gRPC probe
cannot reach, and the ``latentwatch`` CLI imports torch, far too heavy to
start every few seconds. This module imports only grpc (and the light
config and security modules). Health checks need no bearer token; a TLS port
needs ``--root-ca`` (plus ``--cert``/``--key`` under mutual TLS).
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from latentwatch.sidecar.config import Config
from latentwatch.wire.security import ClientAuth

# The Monitor service's full name (the sidecar reports it and "" as SERVING); spelled
# out rather than read from the generated stubs so that the probe stays light.
MONITOR_SERVICE = "latentwatch.v1.Monitor"


def check(address: str, service: str = MONITOR_SERVICE, timeout_s: float = 2.0, auth: ClientAuth | None = None) -> str:
    """The serving status the sidecar at ``address`` reports for ``service``
    (``SERVING``, ``NOT_SERVING``, ...), or ``UNREACHABLE: <reason>``."""
    with (auth or ClientAuth()).channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError as exc:
            return f"UNREACHABLE: {exc.code().name} {exc.details()}"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m latentwatch.sidecar.health", description=__doc__.splitlines()[0])
    p.add_argument(
        "address",
        nargs="?",
        default=os.environ.get("LATENTWATCH_LISTEN", Config.listen),
        help=f"the sidecar's gRPC address (default: $LATENTWATCH_LISTEN, else {Config.listen})",
    )
    p.add_argument("--service", default=MONITOR_SERVICE, help='service name to check ("" for the whole server)')
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer")
    p.add_argument("--root-ca", help="PEM CA that signed the sidecar's certificate (a TLS port)")
    p.add_argument("--cert", help="PEM client certificate (mutual TLS), with --key")
    p.add_argument("--key", help="PEM private key of --cert")
    args = p.parse_args(argv)
    try:
        auth = ClientAuth(root_ca=args.root_ca, cert=args.cert, key=args.key)
    except ValueError as exc:
        p.error(str(exc))
    status = check(args.address, args.service, args.timeout, auth)
    print(f"{args.address}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
