"""The detector interface and its YAML spec.

A detector *kind* is a small module in ``latentwatch/detectors/kinds/`` that
subclasses ``Detector``, declares its typed ``Params`` and registers itself
(``latentwatch.detectors.kinds.register``). A detector *instance* is a YAML spec
in a model's pack (``detectors/<model>/specs/``) naming its kind, SAE,
threshold and the kind's parameters.

A detector may read other detectors of the same request (``requires``): the
engine runs those first and hands it an ``Upstream`` view of each. Such a
composite detector may have no SAE of its own (``sae: null``).
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from abc import ABC, abstractmethod
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, get_type_hints

import torch
import yaml

from latentwatch.detectors.saes import LoadedSAE
from latentwatch.v1 import monitor_pb2 as pb

ROLE_NAMES = {
    "system": pb.SPAN_ROLE_SYSTEM,
    "user": pb.SPAN_ROLE_USER,
    "context": pb.SPAN_ROLE_CONTEXT,
    "response": pb.SPAN_ROLE_RESPONSE,
    "template": pb.SPAN_ROLE_TEMPLATE,
}


def role_id(spec: DetectorSpec, name: str) -> int:
    """A span role named in a spec, refused with a sentence when it is not one."""
    if name not in ROLE_NAMES:
        raise ValueError(
            f"{spec.path}: detector {spec.name!r} names span role {name!r}; roles: {', '.join(ROLE_NAMES)}"
        )
    return ROLE_NAMES[name]


@dataclass
class DetectorSpec:
    """One detector as configured in YAML."""

    name: str
    kind: str
    sae: str | None
    threshold: float
    path: Path
    description: str = ""
    target_fpr: float = 0.01
    params: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    baselines: list[str] = field(default_factory=list)  # measured beside it by `latentwatch eval`
    alert: bool = True  # False: a signal other detectors read; its flags raise no alerts
    # What a capture that can act does once this detector flags (latentwatch.detectors.steering):
    # "observe" (default) or "steer", with ``steer: {toward: DETECTOR, strength: FLOAT}``.
    act: str = "observe"
    steer: dict[str, Any] | None = None

    def artifact(self, name: str) -> Path:
        """Resolve a file named in the spec relative to the spec's folder."""
        p = Path(name)
        return p if p.is_absolute() else self.path.parent / p

    @classmethod
    def from_yaml(cls, path: Path) -> DetectorSpec:
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a detector spec is a mapping of settings")
        missing = {"name", "kind", "sae", "threshold"} - set(raw)
        if missing:
            raise ValueError(f"{path}: detector spec lacks {sorted(missing)}")
        known = {f.name for f in fields(cls)} - {"path"}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        return cls(path=path, **raw)

    def calibrated(self, threshold: float, benign_examples: int, source: str, fpr: float | None = None) -> None:
        """Set the threshold found on benign data and record how (size, FPR, date, source)."""
        import datetime as dt

        self.target_fpr = self.target_fpr if fpr is None else fpr
        self.threshold = round(threshold, 6)
        self.calibration = {
            "benign_examples": benign_examples,
            "target_fpr": self.target_fpr,
            "date": dt.date.today().isoformat(),
            "source": source,
        }

    def to_yaml(self) -> str:
        data = {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "sae": self.sae,
            "threshold": self.threshold,
            "target_fpr": self.target_fpr,
            "params": self.params,
        }
        if self.calibration:
            data["calibration"] = self.calibration
        if self.baselines:
            data["baselines"] = self.baselines
        if not self.alert:
            data["alert"] = False
        if self.act != "observe":
            data["act"] = self.act
        if self.steer:
            data["steer"] = self.steer
        return yaml.safe_dump(data, sort_keys=False)


@dataclass
class Span:
    role: int
    start: int
    end: int  # 0 on a response span means open-ended


@dataclass
class TokenRows:
    """What a detector observes from one chunk: rows past the attention sink."""

    positions: torch.Tensor  # [n] token positions
    roles: torch.Tensor  # [n] SpanRole values
    latents: torch.Tensor | None  # [n, d_sae]; None for detectors without an SAE
    residual: torch.Tensor | None = None  # [n, d_model]: the rows the latents encode
    token_ids: torch.Tensor | None = None  # [n] when the capture sends them (optional on the wire)


@dataclass
class AttentionRows:
    """Lookback ratios of one chunk, columns in the detector's ``heads`` order."""

    positions: torch.Tensor  # [n]
    roles: torch.Tensor  # [n]
    lookback: torch.Tensor  # [n, len(heads)]


@dataclass
class Evidence:
    sae_id: str
    index: int
    activation: float
    contribution: float
    label: str
    missing: bool = False  # expected and not seen (absence rules)


@dataclass
class Attribution:
    """One token's share of a score: what ``latentwatch explain-alert`` highlights.

    For a linear probe over pooled rows the shares are exact: pooling is a mean,
    so the logit (bias aside) is the sum of each pooled token's own probe logit
    divided by the number pooled. Absence rules add the positions where the
    expected signal was looked for (``expected``, share 0)."""

    position: int
    contribution: float
    text: str = ""  # the token's text, only on alerts and only as alert_text allows
    expected: bool = False


@dataclass
class Score:
    value: float
    token_start: int
    token_end: int
    evidence: list[Evidence] = field(default_factory=list)
    explanation: str = ""
    attribution: list[Attribution] = field(default_factory=list)  # by position


@dataclass
class Upstream:
    """What a composite detector sees of a detector it requires, on the same request."""

    name: str
    threshold: float
    score: Score | None  # the latest score, None while undecided
    fired: bool  # flagged at some point of this request
    signature: list[Evidence]  # the latents that detector looks for (for "missing" evidence)


class Detector(ABC):
    """Base class of detector kinds. One instance serves every request;
    per-request data lives in the state object it creates."""

    kind: ClassVar[str]
    Params: ClassVar[type]  # a dataclass of the kind's parameters (``params:`` in the spec), with defaults

    def __init__(self, spec: DetectorSpec, sae: LoadedSAE | None):
        self.spec = spec
        self.sae = sae
        self.params = self.parse_params(spec)

    @classmethod
    def parse_params(cls, spec: DetectorSpec) -> Any:
        """The spec's ``params`` as this kind's ``Params``. An unknown or misspelt key, a
        missing required one or a value of the wrong type is refused with a sentence naming it."""
        hints = get_type_hints(cls.Params)
        known = [f.name for f in fields(cls.Params)]
        where = f"{spec.path}: detector {spec.name!r} (kind {cls.kind})"
        for key in spec.params:
            if key not in hints:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"{where} has no parameter {key!r}{hint}; its parameters are {', '.join(known)}")
        required = [f.name for f in fields(cls.Params) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in spec.params]
        if missing:
            raise ValueError(f"{where} needs params {', '.join(missing)}")
        for key, value in spec.params.items():
            if not _fits(value, hints[key]):
                raise ValueError(f"{where}: parameter {key!r} must be {_type_name(hints[key])}, got {value!r}")
        return cls.Params(**spec.params)

    @property
    def name(self) -> str:
        return self.spec.name

    @classmethod
    def required_by(cls, spec: DetectorSpec) -> list[str]:
        """Names of the detectors a spec of this kind reads (known before any SAE loads,
        so selecting one detector can enable what it needs)."""
        return []

    @property
    def requires(self) -> list[str]:
        if not hasattr(self, "_requires"):  # read on every chunk: derive it from the spec once
            self._requires = self.required_by(self.spec)
        return self._requires

    @property
    def heads(self) -> list[str]:
        """Attention heads ("L14H3") whose lookback ratios this detector reads."""
        return []

    def observe_attention(self, state: Any, rows: AttentionRows, upstream: dict[str, Upstream]) -> None:
        """Fold one chunk of lookback ratios (columns in ``self.heads`` order) into the state.
        Detectors without heads never receive any, so the default ignores them."""
        return None

    def signature(self) -> list[Evidence]:
        """The latents this detector looks for, strongest first (activation 0);
        a composite rule names them as missing when this detector stays silent."""
        return []

    @abstractmethod
    def new_state(self, spans: list[Span]) -> Any:
        """Fresh per-request state."""

    @abstractmethod
    def observe(self, state: Any, rows: TokenRows, upstream: dict[str, Upstream]) -> None:
        """Fold one chunk into the state. ``rows.latents`` is None for a
        detector without an SAE; ``upstream`` holds the required detectors."""

    @abstractmethod
    def score(self, state: Any, final: bool, upstream: dict[str, Upstream]) -> Score | None:
        """Current score, or None while there is nothing to judge yet."""


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _fits(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a parameter's type hint (int, float, str, bool, lists, optionals)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin in (list, tuple):
        (item, *_) = typing.get_args(hint) or (Any,)
        return isinstance(value, list | tuple) and all(_fits(v, item) for v in value)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is Any:
        return True
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
