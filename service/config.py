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
from latentwatch.detectors import bundled_spec_paths


@dataclass
class Config:
    listen: str = "127.0.0.1:50051"  # or unix:///path/to.sock; never 0.0.0.0 unless you mean it
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = 9464  # None disables the /metrics endpoint
    redis_url: str | None = None  # alerts go to SQLite when unset
    redis_stream: str = "latentwatch:alerts"
    redis_maxlen: int = 100_000
    sqlite_path: str = "latentwatch-data/alerts.sqlite"
    spool_path: str = "latentwatch-data/redis-spool.sqlite"  # alerts wait here while Redis is unreachable
    detector_specs: list[str] = field(default_factory=list)  # YAML files; empty: the bundled ones
    detectors: list[str] = field(default_factory=list)  # names to enable; empty: all
    saes: list[str] = field(default_factory=list)  # extra SAEs to encode for reconstruction health only
    session_ttl_s: float = 300.0
    max_sessions: int = 10_000
    max_tokens_per_request: int = 65_536
    queue_size: int = 256
    max_message_bytes: int = 64 * 1024 * 1024

    def spec_paths(self) -> list[Path]:
        return [Path(p) for p in self.detector_specs] if self.detector_specs else bundled_spec_paths()

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
                values[name] = _parse(env[key], f.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - set(fields)
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}; known: {sorted(fields)}")
        return cls(**values)


def _parse(text: str, type_name: str):
    t = str(type_name)
    if t.startswith("list"):
        return [s for s in text.split(",") if s]
    if t.startswith("int"):
        return None if text.lower() in ("", "none", "off") else int(text)
    if t.startswith("float"):
        return float(text)
    if "None" in t and text.lower() in ("", "none"):
        return None
    return text
