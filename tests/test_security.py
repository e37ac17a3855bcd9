"""Who may reach the gRPC port: TLS, mutual TLS, a bearer token, the unix-socket default, and the
refusal to serve the network in the clear. Certificates are made here, per test session (no key is
committed), and every check goes through a real sidecar on a real socket."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from latentwatch.capture import GrpcMonitorClient
from latentwatch.cli import main
from latentwatch.sidecar.config import Config
from latentwatch.sidecar.server import SidecarThread
from latentwatch.v1 import monitor_pb2 as pb
from latentwatch.v1 import monitor_pb2_grpc as pb_grpc
from latentwatch.wire.security import ClientAuth, check_exposure

from .conftest import make_config

TOKEN = "correct-horse-battery-staple"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject: str, issuer: tuple | None, *, ca: bool = False, usage=None, sans=()) -> tuple:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_key, issuer_cert = issuer if issuer else (key, None)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_cert.subject if issuer_cert else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return key, builder.sign(issuer_key, hashes.SHA256())


def _write(d: Path, name: str, key, cert) -> tuple[str, str]:
    (d / f"{name}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (d / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(d / f"{name}.pem"), str(d / f"{name}.key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate it signed, plus
    a second, unrelated CA and a client certificate of its own."""
    d = tmp_path_factory.mktemp("pki")
    ca = _issue("latentwatch test CA", None, ca=True)
    rogue_ca = _issue("someone else's CA", None, ca=True)
    sans = (x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"))
    return {
        "ca": _write(d, "ca", *ca),
        "server": _write(d, "server", *_issue("sidecar", ca, usage=ExtendedKeyUsageOID.SERVER_AUTH, sans=sans)),
        "client": _write(d, "client", *_issue("model-server", ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH)),
        "rogue_ca": _write(d, "rogue_ca", *rogue_ca),
        "rogue_client": _write(d, "rogue", *_issue("intruder", rogue_ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH)),
    }


def _list_detectors(address: str, auth: ClientAuth, timeout: float = 5.0) -> list[str]:
    with auth.channel(address) as ch:
        response = pb_grpc.MonitorStub(ch).ListDetectors(pb.ListDetectorsRequest(), timeout=timeout)
    return [d.name for d in response.detectors]


def _refused_with(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def test_tls_serves_verified_clients_and_refuses_plaintext(tmp_path, pki):
    cert, key = pki["server"]
    sc = SidecarThread(make_config(tmp_path, tls_cert=cert, tls_key=key))
    try:
        assert "harmful_request" in _list_detectors(sc.address, ClientAuth(root_ca=pki["ca"][0]))
        # a plaintext client never gets past the handshake
        assert _refused_with(lambda: _list_detectors(sc.address, ClientAuth(), 2)) == grpc.StatusCode.UNAVAILABLE
        # nor does one that does not trust the sidecar's CA (the client verifies the server too)
        distrust = ClientAuth(root_ca=pki["rogue_ca"][0])
        assert _refused_with(lambda: _list_detectors(sc.address, distrust, 2)) == grpc.StatusCode.UNAVAILABLE
    finally:
        sc.stop()


def test_mutual_tls_refuses_clients_without_a_certificate_the_ca_signed(tmp_path, pki):
    cert, key = pki["server"]
    ca = pki["ca"][0]
    sc = SidecarThread(make_config(tmp_path, tls_cert=cert, tls_key=key, tls_client_ca=ca))
    try:
        no_cert = ClientAuth(root_ca=ca)
        assert _refused_with(lambda: _list_detectors(sc.address, no_cert, 2)) == grpc.StatusCode.UNAVAILABLE
        rogue = ClientAuth(root_ca=ca, cert=pki["rogue_client"][0], key=pki["rogue_client"][1])
        assert _refused_with(lambda: _list_detectors(sc.address, rogue, 2)) == grpc.StatusCode.UNAVAILABLE
        good = ClientAuth(root_ca=ca, cert=pki["client"][0], key=pki["client"][1])
        assert "harmful_request" in _list_detectors(sc.address, good)
    finally:
        sc.stop()


def _every_rpc(ch: grpc.Channel) -> list:
    """One call of each Monitor RPC (unary, client-and-server streaming, server streaming) and of
    server reflection."""
    stub = pb_grpc.MonitorStub(ch)
    end = pb.ClientMessage(end=pb.RequestEnd(request_id="r"))
    reflect = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo
    services = reflection_pb2.ServerReflectionRequest(list_services="")
    return [
        lambda: stub.ListDetectors(pb.ListDetectorsRequest(), timeout=5),
        lambda: stub.Score(pb.ScoreRequest(), timeout=5),
        lambda: list(stub.Stream(iter([end]), timeout=5)),
        lambda: list(stub.WatchAlerts(pb.WatchAlertsRequest(), timeout=5)),
        lambda: list(reflect(iter([services]), timeout=5)),
    ]


def test_bearer_token_guards_every_rpc_but_health(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    sc = SidecarThread(make_config(tmp_path, auth_token_file=str(token_file)))
    refusals = 0
    try:
        for auth in (ClientAuth(), ClientAuth(token="wrong"), ClientAuth(token=TOKEN[:-1])):
            with auth.channel(sc.address) as ch:
                for call in _every_rpc(ch):
                    assert _refused_with(call) == grpc.StatusCode.UNAUTHENTICATED
                    refusals += 1
                # health checks stay open: orchestrators probe liveness without the secret
                check = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
                assert check.status == health_pb2.HealthCheckResponse.SERVING
        assert "harmful_request" in _list_detectors(sc.address, ClientAuth(token=TOKEN))
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{sc.sidecar.metrics_port}/metrics").read().decode()
    finally:
        sc.stop()
    assert f"latentwatch_unauthenticated_calls_total {float(refusals)}" in metrics


def test_capture_client_streams_over_tls_with_a_token(tmp_path, pki):
    cert, key = pki["server"]
    sc = SidecarThread(make_config(tmp_path, tls_cert=cert, tls_key=key, auth_token=TOKEN))
    right = GrpcMonitorClient(sc.address, "smollm2-135m-instruct", auth=ClientAuth(root_ca=pki["ca"][0], token=TOKEN))
    wrong = GrpcMonitorClient(sc.address, "smollm2-135m-instruct", auth=ClientAuth(root_ca=pki["ca"][0], token="wrong"))
    try:
        for client in (right, wrong):
            client.start_request("r1", [])
            client.end_request("r1")
        assert right.wait_final("r1", 30) == []  # the stream went through: RequestDone came back
        assert wrong.wait_final("r1", 2) is None
    finally:
        right.close(flush_timeout=0.5)
        wrong.close(flush_timeout=0.5)
        sc.stop()


def test_unix_socket_is_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = Config(metrics_port=None)
    assert cfg.listen.startswith("unix:")
    sc = SidecarThread(cfg)
    try:
        assert Path("latentwatch-data/monitor.sock").is_socket()
        assert "harmful_request" in _list_detectors(sc.address, ClientAuth())
        # a second sidecar must not take over the live socket of the first
        with pytest.raises(ValueError, match="another server answers there"):
            SidecarThread(Config(metrics_port=None, sqlite_path="other.sqlite"))
    finally:
        sc.stop()


@pytest.mark.parametrize(
    ("listen", "tls", "client_auth", "refused"),
    [
        ("unix:lw.sock", False, False, False),
        ("127.0.0.1:50051", False, False, False),
        ("[::1]:50051", False, False, False),
        ("localhost:50051", False, False, False),
        ("0.0.0.0:50051", False, False, True),
        ("[::]:50051", False, False, True),
        (":50051", False, False, True),
        ("10.1.2.3:50051", False, True, True),  # a token in the clear can be read off the wire and replayed
        ("sidecar.internal:50051", True, False, True),  # encrypted, but anyone may connect
        ("0.0.0.0:50051", True, True, False),
    ],
)
def test_network_reachable_ports_need_tls_and_client_authentication(listen, tls, client_auth, refused):
    if refused:
        with pytest.raises(ValueError, match="reachable from other machines"):
            check_exposure(listen, tls, client_auth, allow_insecure=False)
        check_exposure(listen, tls, client_auth, allow_insecure=True)  # the explicit opt-in
    else:
        check_exposure(listen, tls, client_auth, allow_insecure=False)


def test_serve_refuses_plaintext_on_all_interfaces(tmp_path, capsys):
    # refused before any model or SAE loads, with exit code 2 and the settings that would fix it
    assert main(["serve", "--listen", "0.0.0.0:0", "--sqlite", str(tmp_path / "a.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "reachable from other machines" in err and "tls_cert" in err and "allow_insecure" in err


def test_all_interfaces_with_tls_and_a_token_serves(tmp_path, pki):
    cert, key = pki["server"]
    sc = SidecarThread(make_config(tmp_path, listen="0.0.0.0:0", tls_cert=cert, tls_key=key, auth_token=TOKEN))
    try:
        address = "127.0.0.1:" + sc.address.rsplit(":", 1)[1]
        assert "harmful_request" in _list_detectors(address, ClientAuth(root_ca=pki["ca"][0], token=TOKEN))
    finally:
        sc.stop()


def test_security_settings_are_checked(tmp_path, pki):
    with pytest.raises(ValueError, match="not both"):
        Config(auth_token="a", auth_token_file="f")
    with pytest.raises(ValueError, match="tls_cert and tls_key"):
        SidecarThread(make_config(tmp_path, tls_client_ca=pki["ca"][0]))
    with pytest.raises(ValueError, match="no PEM block"):
        (tmp_path / "junk.pem").write_text("not a certificate")
        SidecarThread(make_config(tmp_path, tls_cert=str(tmp_path / "junk.pem"), tls_key=pki["server"][1]))
    with pytest.raises(FileNotFoundError, match="auth_token_file"):
        SidecarThread(make_config(tmp_path, auth_token_file=str(tmp_path / "missing")))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        SidecarThread(make_config(tmp_path, auth_token_file=str(tmp_path / "empty")))
    assert TOKEN not in repr(Config(auth_token=TOKEN)) and TOKEN not in repr(ClientAuth(token=TOKEN))
    with pytest.raises(ValueError, match="both cert and key"):
        ClientAuth(root_ca=pki["ca"][0], cert=pki["client"][0])
    with pytest.raises(ValueError, match="needs root_ca"):
        ClientAuth(cert=pki["client"][0], key=pki["client"][1])
    assert Config.load(env={"LATENTWATCH_ALLOW_INSECURE": "true"}).allow_insecure is True
    with pytest.raises(ValueError, match="LATENTWATCH_ALLOW_INSECURE"):
        Config.load(env={"LATENTWATCH_ALLOW_INSECURE": "maybe"})


def test_health_probe_reaches_a_tls_port_without_the_token(tmp_path, pki):
    cert, key = pki["server"]
    sc = SidecarThread(make_config(tmp_path, tls_cert=cert, tls_key=key, auth_token=TOKEN))
    probe = [sys.executable, "-m", "latentwatch.sidecar.health", sc.address]
    try:
        trusted = subprocess.run([*probe, "--root-ca", pki["ca"][0]], capture_output=True, text=True, timeout=30)
        plaintext = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    finally:
        sc.stop()
    assert trusted.returncode == 0 and "SERVING" in trusted.stdout, trusted.stdout + trusted.stderr
    assert plaintext.returncode == 1 and "UNREACHABLE" in plaintext.stdout
