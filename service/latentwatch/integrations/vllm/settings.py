"""The vLLM integration's settings and the per-request keys it reads, shared by the
plugin (API server, engine), the worker extension and the abort watcher.

Settings come from ``LATENTWATCH_VLLM_*`` variables over an optional YAML file
(``LATENTWATCH_VLLM_CONFIG``). The connection to the sidecar takes the same TLS
and bearer-token options as every other client (``latentwatch.wire.security.ClientAuth``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from latentwatch.wire.security import ClientAuth

OPT_OUT_KEY = "latentwatch"  # vllm_xargs {"latentwatch": "off"}
CONTEXT_KEY = "latentwatch_context"
SPANS_KEY = "latentwatch_spans"  # flat [role, start, end, ...], filled in by the API server
PROMPT_LEN_KEY = "latentwatch_prompt_len"  # the prompt length those spans were computed for

KEYS = ("sidecar", "layers", "heads", "abort", "act", "max_buffer", "tls_root_ca", "tls_cert", "tls_key",
        "auth_token_file")  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """Where the sidecar is, how to reach it, and what to capture."""

    sidecar: str
    layers: tuple[int, ...]
    heads: tuple[str, ...] = ()
    abort: tuple[str, ...] = ()  # detectors whose alerts abort the request
    act: str = "observe"  # "steer": apply the steering edits verdicts hand over (latentwatch.detectors.steering)
    max_buffer: int = 4096  # buffered chunks before the sender drops and counts
    auth: ClientAuth = field(default_factory=ClientAuth)  # TLS / mutual TLS / bearer token; plaintext by default

    @property
    def hook_names(self) -> list[str]:
        """The sidecar's names for the captured layers (HF module paths)."""
        return [f"model.layers.{i}" for i in self.layers]

    @classmethod
    def load(cls, environ: dict[str, str] | None = None) -> Settings | None:
        """The configured settings, or None when no sidecar is named (the plugin stays off).

        ``LATENTWATCH_VLLM_CONFIG`` names a YAML file with the keys in ``KEYS``; each
        ``LATENTWATCH_VLLM_<KEY>`` variable overrides its key (lists comma-separated).
        ``LATENTWATCH_VLLM_AUTH_TOKEN`` gives the bearer token itself (kept out of files).
        """
        env = os.environ if environ is None else environ
        values: dict = {}
        if env.get("LATENTWATCH_VLLM_CONFIG"):
            import yaml

            path = Path(env["LATENTWATCH_VLLM_CONFIG"])
            loaded = yaml.safe_load(path.read_text()) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"{path}: expected a mapping of {', '.join(KEYS)}")
            values.update(loaded)
        for key in KEYS:
            if env.get(f"LATENTWATCH_VLLM_{key.upper()}"):
                values[key] = env[f"LATENTWATCH_VLLM_{key.upper()}"]
        unknown = set(values) - set(KEYS)
        if unknown:
            raise ValueError(f"unknown latentwatch vLLM settings {sorted(unknown)}; known: {', '.join(KEYS)}")
        if not values.get("sidecar"):
            return None
        layers = tuple(int(x) for x in _items(values.get("layers")))
        if not layers:
            raise ValueError("LATENTWATCH_VLLM_LAYERS must name the decoder layers to capture, e.g. 12,20")
        from latentwatch.capture.lookback import parse_heads

        heads = tuple(str(h) for h in parse_heads(_items(values.get("heads"))))
        return cls(
            sidecar=str(values["sidecar"]),
            layers=layers,
            heads=heads,
            abort=tuple(_items(values.get("abort"))),
            act=_act(values.get("act", "observe")),
            max_buffer=int(values.get("max_buffer", cls.max_buffer)),
            auth=ClientAuth(
                root_ca=values.get("tls_root_ca"),
                cert=values.get("tls_cert"),
                key=values.get("tls_key"),
                token=_token(env.get("LATENTWATCH_VLLM_AUTH_TOKEN"), values.get("auth_token_file")),
            ),
        )


def _act(value) -> str:
    from latentwatch.detectors.steering import ACTS

    if value not in ACTS:
        raise ValueError(f"LATENTWATCH_VLLM_ACT must be one of {', '.join(ACTS)}, not {value!r}")
    return value


def _token(token: str | None, token_file: str | None) -> str | None:
    if token and token_file:
        raise ValueError("set LATENTWATCH_VLLM_AUTH_TOKEN or auth_token_file, not both")
    if token_file:
        path = Path(token_file)
        if not path.is_file():
            raise FileNotFoundError(f"latentwatch vLLM auth_token_file: no file at {path}")
        token = path.read_text().strip()
        if not token:
            raise ValueError(f"latentwatch vLLM auth_token_file {path} is empty")
    return token or None


def _items(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [x.strip() for x in value.split(",") if x.strip()]
    return [str(x) for x in value]


def once(obj, name: str, make) -> None:
    """Replace ``obj.name`` by ``make(original)`` unless this plugin already did."""
    original = getattr(obj, name)
    if getattr(original, "__latentwatch__", False):
        return
    wrapped = make(original)
    wrapped.__latentwatch__ = True
    setattr(obj, name, wrapped)
