"""Sidecar configuration: defaults < YAML file < ``LATENTWATCH_*`` environment < CLI flags.

Every field can be set in the file by its name and in the environment as
``LATENTWATCH_<NAME>`` (upper case), e.g. ``LATENTWATCH_REDIS_URL``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from latentwatch.detectors.packs import DEFAULT_PACK, pack_for_model
from latentwatch.detectors.steering import ACTS
from latentwatch.export.redaction import check_mode


@dataclass
class Config:
    # A unix socket by default: only processes that may open the file can connect. host:port also
    # works; a non-loopback one needs TLS and client authentication (see latentwatch.wire.security).
    listen: str = "unix:latentwatch-data/monitor.sock"
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = 9464  # None disables the /metrics endpoint
    redis_url: str | None = None  # alerts go to SQLite when unset
    redis_cluster: bool = False  # redis_url names one node of a Redis Cluster (see deploy/README.md)
    redis_stream: str = "latentwatch:alerts"
    redis_maxlen: int = 100_000
    sqlite_path: str = "latentwatch-data/alerts.sqlite"
    spool_path: str = "latentwatch-data/redis-spool.sqlite"  # alerts wait here while Redis is unreachable
    redis_timeout_s: float = 0.5  # per Redis call; a slow Redis stalls only the export thread, then spools
    alert_queue_size: int = 10_000  # alerts waiting for the sinks; beyond it they are dropped and counted
    # The models this sidecar monitors, each by its bundled detector pack; a request's model_id
    # picks one (by name, or the last part of a path or hub id: see detectors/packs.py).
    models: list[str] = field(default_factory=lambda: [DEFAULT_PACK])
    detector_specs: list[str] = field(default_factory=list)  # YAML files for every model; overrides `models`
    # Names to enable; empty: the pack's defaults. Names may be the pack's experimental ones.
    detectors: list[str] = field(default_factory=list)
    saes: list[str] = field(default_factory=list)  # extra SAEs to encode for reconstruction health only
    session_ttl_s: float = 300.0
    max_sessions: int = 10_000
    max_tokens_per_request: int = 65_536
    queue_size: int = 256
    batch_wait_ms: float = 2.0  # how long the scoring thread waits for other streams' chunks to batch with
    batch_rows: int = 512  # rows that end that wait at once
    max_message_bytes: int = 64 * 1024 * 1024
    tls_cert: str | None = None  # PEM certificate chain of the gRPC port; TLS when set (with tls_key)
    tls_key: str | None = None  # PEM private key
    tls_client_ca: str | None = None  # PEM CA bundle: mutual TLS, clients must present a certificate it signed
    auth_token: str | None = field(default=None, repr=False)  # bearer token; prefer the env or auth_token_file
    auth_token_file: str | None = None  # file holding the bearer token
    allow_insecure: bool = False  # accept a network-reachable port without TLS and client authentication
    alert_text: str = "none"  # what alerts carry of the flagged tokens' text: none, hashed or full
    act: str = "observe"  # "steer": detectors whose specs say act: steer hand captures their edit

    def __post_init__(self) -> None:
        check_mode(self.alert_text)
        if self.act not in ACTS:
            raise ValueError(f"act must be one of {', '.join(ACTS)}, not {self.act!r}")
        if self.auth_token is not None and self.auth_token_file is not None:
            raise ValueError("set auth_token or auth_token_file, not both")

    def bearer_token(self) -> str | None:
        """The token clients must present, read from auth_token_file when that is set."""
        if self.auth_token_file is None:
            token = self.auth_token
        else:
            path = Path(self.auth_token_file)
            if not path.is_file():
                raise FileNotFoundError(f"auth_token_file: no file at {path}")
            token = path.read_text().strip()
        if token is not None and not token.strip():
            raise ValueError("the bearer token is empty")
        return token

    def spec_paths(self, model: str | None = None) -> list[Path]:
        """The detector specs for ``model`` (default: the first configured model). When
        ``detectors`` names some, the pack's experimental specs are candidates too (the
        engine keeps only the named ones and what they read), so an operator or an
        evaluator can score an experimental detector without writing its path."""
        if self.detector_specs:
            return [Path(p) for p in self.detector_specs]
        pack = pack_for_model(model or self.models[0])
        return pack.spec_paths() + (pack.spec_paths(experimental=True) if self.detectors else [])

    @classmethod
    def load(cls, path: str | None = None, env: dict[str, str] | None = None, **overrides) -> Config:
        env = os.environ if env is None else env
        values: dict = {}
        if path:
            raw = yaml.safe_load(Path(path).read_text()) or {}
            if not isinstance(raw, dict):
                raise ValueError(f"{path}: expected a mapping of settings")
            values.update(raw)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name, f in fields.items():
            key = f"LATENTWATCH_{name.upper()}"
            if key in env:
                try:
                    values[name] = _parse(env[key], f.type)
                except ValueError as exc:
                    raise ValueError(f"{key}: {exc}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - set(fields)
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}; known: {sorted(fields)}")
        return cls(**values)


_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _parse(text: str, type_name: str):
    t = str(type_name)
    if t == "bool":
        if text.lower() not in _BOOLS:
            raise ValueError(f"expected one of {sorted(_BOOLS)} for a true/false setting, got {text!r}")
        return _BOOLS[text.lower()]
    if t.startswith("list"):
        return [s for s in text.split(",") if s]
    if t.startswith("int"):
        return None if text.lower() in ("", "none", "off") else int(text)
    if t.startswith("float"):
        return float(text)
    if "None" in t and text.lower() in ("", "none"):
        return None
    return text
