"""Verdicts and alerts as plain data, shared by the server, the in-process
monitor and the alert sinks; ``to_pb`` helpers map them onto the wire."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

from latentwatch.detectors.base import Attribution, Evidence
from latentwatch.detectors.steering import SteerEdit
from latentwatch.v1 import monitor_pb2 as pb
from latentwatch.wire.codec import from_wire, to_wire


@dataclass
class Verdict:
    request_id: str
    detector: str
    score: float
    threshold: float
    flagged: bool
    token_start: int
    token_end: int
    final: bool
    low_confidence: bool = False
    evidence: list[Evidence] = field(default_factory=list)
    explanation: str = ""
    attribution: list[Attribution] = field(default_factory=list)
    action: str = ""  # "steered": the capture should apply ``steer`` to this request from now on
    steer: SteerEdit | None = None

    def to_pb(self) -> pb.Verdict:
        steer = self.steer
        d = asdict(replace(self, steer=None))
        d["evidence"] = [pb.LatentEvidence(**e) for e in d["evidence"]]
        d["attribution"] = [pb.TokenAttribution(**a) for a in d["attribution"]]
        d["steer"] = (
            pb.SteerEdit(hook_name=steer.hook_name, direction=to_wire(steer.direction[None]), strength=steer.strength)
            if steer is not None
            else None
        )
        return pb.Verdict(**d)

    @classmethod
    def from_pb(cls, v: pb.Verdict) -> Verdict:
        return cls(
            request_id=v.request_id,
            detector=v.detector,
            score=v.score,
            threshold=v.threshold,
            flagged=v.flagged,
            token_start=v.token_start,
            token_end=v.token_end,
            final=v.final,
            low_confidence=v.low_confidence,
            evidence=[
                Evidence(e.sae_id, e.index, e.activation, e.contribution, e.label, e.missing) for e in v.evidence
            ],
            explanation=v.explanation,
            attribution=[Attribution(a.position, a.contribution, a.text, a.expected) for a in v.attribution],
            action=v.action,
            steer=_steer_from_pb(v.steer) if v.HasField("steer") else None,
        )


def _steer_from_pb(s: pb.SteerEdit) -> SteerEdit:
    direction = from_wire(s.direction, s.direction.shape[-1] if s.direction.shape else 0, what="steer direction")
    return SteerEdit(s.hook_name, direction[0], s.strength)


@dataclass
class AlertRecord:
    """A flagged generation. ``alert_id`` is derived from request and
    detector, so a redelivered alert can be recognised downstream."""

    request_id: str
    model_id: str
    detector: str
    score: float
    threshold: float
    token_start: int
    token_end: int
    timestamp: float
    low_confidence: bool = False
    evidence: list[Evidence] = field(default_factory=list)
    explanation: str = ""
    text: str = ""  # the flagged tokens' text, already redacted per alert_text (latentwatch.export.redaction)
    alert_id: str = ""
    attribution: list[Attribution] = field(default_factory=list)  # token texts redacted alike
    action: str = ""  # "steered" when the detector's action was asked of the capture

    def __post_init__(self) -> None:
        if not self.alert_id:
            key = f"{self.request_id}\x00{self.detector}".encode()
            self.alert_id = hashlib.sha256(key).hexdigest()[:32]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AlertRecord:
        d = dict(d)
        d["evidence"] = [Evidence(**e) for e in d.get("evidence", [])]
        d["attribution"] = [Attribution(**a) for a in d.get("attribution", [])]
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_pb(self) -> pb.Alert:
        d = self.to_dict()
        d["evidence"] = [pb.LatentEvidence(**e) for e in d["evidence"]]
        d["attribution"] = [pb.TokenAttribution(**a) for a in d["attribution"]]
        return pb.Alert(**d)


@dataclass
class Outcome:
    """What one engine call produced: verdicts for the caller, alert records for the
    sinks, and the figures the metrics need. The engine exports nothing itself; the
    server hands ``alerts`` to the export queue and the whole outcome to the metrics."""

    verdicts: list[Verdict] = field(default_factory=list)
    alerts: list[AlertRecord] = field(default_factory=list)
    tokens: int = 0  # rows encoded by the SAEs
    fvu: list[tuple[str, float]] = field(default_factory=list)  # (SAE id, the chunk's FVU)
    low_confidence: list[str] = field(default_factory=list)  # SAEs that just marked a request low-confidence
    chunks: int = 0  # activation chunks scored

    def absorb(self, other: Outcome) -> None:
        """Take ``other``'s alerts and figures (not its verdicts: a whole-transcript score
        answers with the final verdicts only)."""
        self.alerts += other.alerts
        self.tokens += other.tokens
        self.fvu += other.fvu
        self.low_confidence += other.low_confidence
        self.chunks += other.chunks
