"""The scoring engine: per-request sessions -> SAE latents -> detectors -> verdicts.

Both the gRPC server and the in-process monitor drive this one class, so
detector behaviour cannot differ between them. It is thread-safe (one lock);
the server calls it from a single worker thread so the event loop never runs
torch code. Each call returns an ``Outcome``: verdicts, alert records and the
figures for the metrics. The engine exports nothing itself, so nothing slow (a
Redis write) ever runs while it holds its lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import torch

from latentwatch.detectors.base import AttentionRows, Detector, DetectorSpec, Span, TokenRows, Upstream
from latentwatch.detectors.kinds import build, kind_of, load_spec
from latentwatch.detectors.packs import pack, sae_dirs
from latentwatch.detectors.records import AlertRecord, Outcome, Verdict
from latentwatch.detectors.saes import MIN_TOKENS_FOR_CONFIDENCE, LoadedSAE, fvu, load_sae
from latentwatch.detectors.steering import ACTS, steer_edits
from latentwatch.export.redaction import attributed, check_mode, redact
from latentwatch.v1 import monitor_pb2 as pb
from latentwatch.wire.errors import MonitorError, invalid


class Chunk(NamedTuple):
    """A chunk of one request's activations at one layer, decoded to fp32 rows."""

    request_id: str
    hook_name: str
    start_position: int
    acts: torch.Tensor
    token_ids: torch.Tensor | None = None  # [n_tokens], when the capture sent them


@dataclass
class Limits:
    session_ttl_s: float = 300.0
    max_sessions: int = 10_000
    max_tokens_per_request: int = 65_536


@dataclass
class _Session:
    request_id: str
    model_id: str
    spans: list[Span]
    states: dict[str, Any]
    last_seen: float
    flagged: set[str] = field(default_factory=set)
    low_confidence: bool = False
    # per SAE: [squared error, squared deviation, tokens] accumulated over the request
    recon: dict[str, list[float]] = field(default_factory=dict)
    last_score: dict[str, Any] = field(default_factory=dict)
    text: dict[int, str] = field(default_factory=dict)  # token text by position; kept only if alerts may use it
    # per hook (and "attention"): the first position not yet received; chunks must not go back
    next_position: dict[str, int] = field(default_factory=dict)


class Engine:
    def __init__(
        self,
        detectors: list[Detector],
        limits: Limits | None = None,
        extra_saes: list[LoadedSAE] | None = None,
        alert_text: str = "none",
        act: str = "observe",
    ):
        self.detectors = _dependency_order(detectors)
        # SAEs no detector reads are still encoded, for the reconstruction-health metric.
        self.saes: dict[str, LoadedSAE] = {s.sae_id: s for s in extra_saes or []}
        self.saes.update({d.sae.sae_id: d.sae for d in detectors if d.sae is not None})
        self.by_hook: dict[str, list[LoadedSAE]] = {}
        for sae in self.saes.values():
            self.by_hook.setdefault(sae.hook_name, []).append(sae)
        self._by_name = {d.name: d for d in self.detectors}
        self._signatures = {d.name: d.signature() for d in self.detectors}
        self.limits = limits or Limits()
        self.alert_text = check_mode(alert_text)  # latentwatch.export.redaction: none, hashed or full
        if act not in ACTS:
            raise ValueError(f"act must be one of {', '.join(ACTS)}, not {act!r}")
        # Edits of detectors whose specs act by steering (a malformed spec is refused even while
        # observing); handed to captures only when ``act`` is "steer".
        edits = steer_edits(self.detectors)
        self.edits = edits if act == "steer" else {}
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    # -- construction -------------------------------------------------------

    @classmethod
    def from_specs(
        cls,
        spec_paths: list[Path] | None = None,
        only: list[str] | None = None,
        extra_sae_dirs: list[Path] | None = None,
        extra_saes: list[str] | None = None,
        **kwargs,
    ) -> Engine:
        """Load detector specs (default: the bundled ones), their SAEs, and any
        ``extra_saes`` (references as in a spec) to encode for health only."""
        paths = spec_paths if spec_paths is not None else pack().spec_paths()
        specs = [load_spec(p) for p in paths]
        if only:
            unknown = set(only) - {s.name for s in specs}
            if unknown:
                raise ValueError(f"unknown detectors {sorted(unknown)}; available: {[s.name for s in specs]}")
            specs = [s for s in specs if s.name in _with_requirements(only, specs)]
        saes: dict[str, LoadedSAE] = {}
        detectors = []
        for spec in specs:
            if spec.sae is not None and spec.sae not in saes:
                saes[spec.sae] = load_sae(spec.sae, [spec.path.parent, *(extra_sae_dirs or []), *sae_dirs()])
            detectors.append(build(spec, saes.get(spec.sae) if spec.sae else None))
        for ref in extra_saes or []:
            if ref not in saes:
                saes[ref] = load_sae(ref, [*(extra_sae_dirs or []), *sae_dirs()])
        return cls(detectors, extra_saes=list(saes.values()), **kwargs)

    @property
    def hook_names(self) -> list[str]:
        return sorted(self.by_hook)

    # -- request lifecycle ----------------------------------------------------

    def start(self, request_id: str, model_id: str, spans: list[Span]) -> None:
        if not request_id:
            raise invalid("request_id is empty")
        for s in spans:
            if s.role not in pb.SpanRole.values() or s.role == pb.SPAN_ROLE_UNSPECIFIED:
                raise invalid(f"span has unknown role {s.role}")
            if s.end != 0 and s.end <= s.start:
                raise invalid(f"span [{s.start}, {s.end}) is empty or reversed")
        with self._lock:
            self._expire_locked(time.monotonic())
            if request_id in self._sessions:
                # Starting it again would throw away what it already received.
                raise MonitorError(
                    f"request {request_id!r} is already open; send RequestEnd before reusing its id",
                    grpc.StatusCode.ALREADY_EXISTS,
                )
            if len(self._sessions) >= self.limits.max_sessions:
                raise MonitorError(
                    f"too many live requests ({self.limits.max_sessions}); end some first",
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                )
            self._sessions[request_id] = _Session(
                request_id=request_id,
                model_id=model_id,
                spans=spans,
                states={d.name: d.new_state(spans) for d in self.detectors},
                last_seen=time.monotonic(),
            )

    @property
    def active_requests(self) -> int:
        """Requests with live session state."""
        return len(self._sessions)

    def add_text(self, request_id: str, start_position: int, pieces: list[str]) -> None:
        """Record the text of tokens at consecutive positions, for alerts to quote (see
        latentwatch.export.redaction). With ``alert_text: none`` the text is not kept at all."""
        with self._lock:
            session = self._session(request_id)
            positions = self._positions(session, "text", start_position, len(pieces))
            if self.alert_text != "none":
                session.text.update(zip(positions.tolist(), pieces, strict=True))

    def add_chunk(
        self,
        request_id: str,
        hook_name: str,
        start_position: int,
        acts: torch.Tensor,
        token_ids: torch.Tensor | None = None,
    ) -> Outcome:
        """Score a chunk of already-decoded fp32 activations; the outcome's verdicts are new flags."""
        (result,) = self.add_chunks([Chunk(request_id, hook_name, start_position, acts, token_ids)])
        if isinstance(result, MonitorError):
            raise result
        return result

    def add_chunks(self, chunks: list[Chunk]) -> list[Outcome | MonitorError]:
        """Score many chunks, of any requests and layers, as ``add_chunk`` would one by one
        (in order: each is checked against those before it), but with one SAE encode per
        SAE over all their rows. Each chunk gets its outcome, or the error that refused it."""
        results: list[Outcome | MonitorError] = [Outcome() for _ in chunks]
        with self._lock:
            accepted: list[tuple[int, _Session, torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
            for i, c in enumerate(chunks):
                try:
                    session = self._session(c.request_id)
                    if c.hook_name not in self.by_hook:
                        raise invalid(f"unknown layer {c.hook_name!r}; this sidecar monitors {self.hook_names}")
                    positions = self._positions(session, c.hook_name, c.start_position, c.acts.shape[0])
                except MonitorError as exc:
                    results[i] = exc
                    continue
                keep = positions > 0  # position 0 is the attention sink: no SAE explains it
                if keep.any():
                    ids = c.token_ids[keep] if c.token_ids is not None else None
                    accepted.append((i, session, positions[keep], c.acts[keep], ids))
            # One encode per SAE over every accepted chunk of its layer.
            encoded: dict[int, list[tuple[LoadedSAE, torch.Tensor, float, float]]] = {i: [] for i, *_ in accepted}
            for sae in self.saes.values():
                mine = [(i, acts) for i, _, _, acts, _ in accepted if chunks[i].hook_name == sae.hook_name]
                if mine:
                    for (i, _), (feats, err, dev) in zip(mine, sae.encode_many([a for _, a in mine]), strict=True):
                        encoded[i].append((sae, feats, err, dev))
            # Then each chunk in order, exactly as add_chunk alone would see it.
            for i, session, positions, acts, ids in accepted:
                out = results[i]
                out.chunks, out.tokens = 1, acts.shape[0]
                latents = {}
                for sae, feats, err, dev in encoded[i]:
                    latents[sae.sae_id] = feats
                    out.fvu.append((sae.sae_id, fvu(err, dev)))
                    if self._track_confidence(session, sae, err, dev, acts.shape[0]):
                        out.low_confidence.append(sae.sae_id)
                roles = _roles_at(session.spans, positions)
                for det in self.detectors:  # dependency order: a composite sees this chunk's upstream scores
                    if det.sae is not None and det.sae.sae_id not in latents:
                        continue  # its layer is not in this chunk
                    lat = latents[det.sae.sae_id] if det.sae is not None else None
                    rows = TokenRows(positions=positions, roles=roles, latents=lat, residual=acts, token_ids=ids)
                    det.observe(session.states[det.name], rows, self._upstream(session, det))
                    self._judge(session, det, False, out)
        return results

    @property
    def heads(self) -> list[str]:
        """Attention heads whose lookback ratios some detector reads."""
        return sorted({h for d in self.detectors for h in d.heads})

    def add_attention(self, request_id: str, start_position: int, heads: list[str], lookback: torch.Tensor) -> Outcome:
        """Score a chunk of lookback ratios ([n_tokens, len(heads)], in [0, 1]); the verdicts are new flags."""
        if lookback.ndim != 2 or lookback.shape[1] != len(heads) or lookback.shape[0] == 0:
            raise invalid(f"lookback must have shape [n_tokens>0, {len(heads)} heads], got {list(lookback.shape)}")
        if not torch.isfinite(lookback).all() or lookback.min() < 0 or lookback.max() > 1:
            raise invalid("lookback ratios must be finite and within [0, 1]")
        column = {h: i for i, h in enumerate(heads)}
        for det in self.detectors:
            missing = [h for h in det.heads if h not in column]
            if missing:
                raise invalid(f"detector {det.name} needs heads {missing}; this chunk carries {heads}")
        with self._lock:
            session = self._session(request_id)
            positions = self._positions(session, "attention", start_position, lookback.shape[0])
            roles = _roles_at(session.spans, positions)
            out = Outcome()
            for det in self.detectors:
                if det.heads:
                    rows = AttentionRows(positions, roles, lookback[:, [column[h] for h in det.heads]])
                    det.observe_attention(session.states[det.name], rows, self._upstream(session, det))
                elif det.sae is None:  # composite rules see every chunk's positions
                    rows = TokenRows(positions=positions, roles=roles, latents=None)
                    det.observe(session.states[det.name], rows, self._upstream(session, det))
                else:
                    continue
                self._judge(session, det, False, out)
            return out

    def end(self, request_id: str) -> Outcome:
        """Close a request; the outcome holds every detector's final verdict."""
        with self._lock:
            session = self._session(request_id)
            out = Outcome()
            for det in self.detectors:
                self._judge(session, det, True, out)
            del self._sessions[request_id]
            return out

    def score(
        self,
        request_id: str,
        model_id: str,
        spans: list[Span],
        chunks: list[tuple[str, int, torch.Tensor] | tuple[str, int, torch.Tensor, torch.Tensor | None]],
        attention: list[tuple[int, list[str], torch.Tensor]] = (),
        text: list[tuple[int, list[str]]] = (),
    ):
        """Score a whole transcript at once (the unary Score RPC, offline scoring): the
        outcome's verdicts are the final ones; its alerts include those raised on the way."""
        self.start(request_id, model_id, spans)
        on_the_way = Outcome()
        try:
            for start_position, pieces in text:
                self.add_text(request_id, start_position, pieces)
            for start_position, heads, lookback in attention:
                on_the_way.absorb(self.add_attention(request_id, start_position, heads, lookback))
            for hook_name, start_position, acts, *ids in chunks:  # token ids: an optional fourth item
                on_the_way.absorb(self.add_chunk(request_id, hook_name, start_position, acts, *ids))
        except MonitorError:
            with self._lock:
                self._sessions.pop(request_id, None)
            raise
        final = self.end(request_id)
        on_the_way.absorb(final)
        on_the_way.verdicts = final.verdicts
        return on_the_way

    def is_open(self, request_id: str) -> bool:
        return request_id in self._sessions

    def expire(self) -> int:
        with self._lock:
            return self._expire_locked(time.monotonic())

    # -- internals --------------------------------------------------------------

    def _track_confidence(self, session: _Session, sae: LoadedSAE, err: float, dev: float, n: int) -> bool:
        """Mark the request low-confidence once its cumulative FVU exceeds the SAE's bound;
        True when this chunk did so."""
        acc = session.recon.setdefault(sae.sae_id, [0.0, 0.0, 0])
        acc[0] += err
        acc[1] += dev
        acc[2] += n
        if not session.low_confidence and acc[2] >= MIN_TOKENS_FOR_CONFIDENCE and fvu(acc[0], acc[1]) > sae.fvu_limit:
            session.low_confidence = True
            return True
        return False

    def _positions(self, session: _Session, stream: str, start: int, n: int) -> torch.Tensor:
        """The positions a chunk of ``stream`` (a hook, or attention) covers, within the per-request
        token cap and after every position already received (a repeated or reordered chunk would
        be counted twice; a gap is fine: the client dropped rows). Marks the session live."""
        if start + n > self.limits.max_tokens_per_request:
            raise MonitorError(
                f"request exceeds {self.limits.max_tokens_per_request} tokens", grpc.StatusCode.RESOURCE_EXHAUSTED
            )
        expected = session.next_position.get(stream, 0)
        if start < expected:
            raise invalid(
                f"{stream} rows from position {start} overlap rows already received (next expected {expected}); "
                "send each position once, in order"
            )
        session.next_position[stream] = start + n
        session.last_seen = time.monotonic()
        return torch.arange(start, start + n)

    def _session(self, request_id: str) -> _Session:
        session = self._sessions.get(request_id)
        if session is None:
            raise MonitorError(
                f"unknown request_id {request_id!r}: send RequestStart first (or it expired)",
                grpc.StatusCode.FAILED_PRECONDITION,
            )
        return session

    def _expire_locked(self, now: float) -> int:
        stale = [k for k, s in self._sessions.items() if now - s.last_seen > self.limits.session_ttl_s]
        for k in stale:
            del self._sessions[k]
        return len(stale)

    def _upstream(self, session: _Session, det: Detector) -> dict[str, Upstream]:
        return {
            name: Upstream(
                name=name,
                threshold=self._by_name[name].spec.threshold,
                score=session.last_score.get(name),
                fired=name in session.flagged,
                signature=self._signatures[name],
            )
            for name in det.requires
        }

    def _judge(self, session: _Session, det: Detector, final: bool, out: Outcome) -> None:
        """Score ``det`` and add what came of it to ``out``: every final verdict; while
        streaming, only a new flag; an alert record the first time an alerting detector flags."""
        s = det.score(session.states[det.name], final, self._upstream(session, det))
        if s is None:
            return
        session.last_score[det.name] = s
        threshold = det.spec.threshold
        flagged = s.value >= threshold
        v = Verdict(
            request_id=session.request_id,
            detector=det.name,
            score=s.value,
            threshold=threshold,
            flagged=flagged,
            token_start=s.token_start,
            token_end=s.token_end,
            final=final,
            low_confidence=session.low_confidence,
            evidence=s.evidence,
            explanation=s.explanation,
            attribution=s.attribution,
        )
        if flagged and det.name not in session.flagged:
            session.flagged.add(det.name)
            if det.name in self.edits:  # the first flag hands the capture its edit
                v.action, v.steer = "steered", self.edits[det.name]
            if det.spec.alert:  # else a signal for other detectors: no alert, no flagged-generation count
                out.alerts.append(
                    AlertRecord(
                        request_id=session.request_id,
                        model_id=session.model_id,
                        detector=det.name,
                        score=s.value,
                        threshold=threshold,
                        token_start=s.token_start,
                        token_end=s.token_end,
                        timestamp=time.time(),
                        low_confidence=session.low_confidence,
                        evidence=s.evidence,
                        explanation=s.explanation,
                        text=redact(
                            [session.text.get(p, "") for p in range(s.token_start, s.token_end)], self.alert_text
                        ),
                        attribution=attributed(s.attribution, session.text, self.alert_text),
                        action=v.action,
                    )
                )
        elif not final and det.name in session.flagged:
            return  # already reported while streaming; the final verdict repeats it
        if final or flagged:
            out.verdicts.append(v)


def _roles_at(spans: list[Span], positions: torch.Tensor) -> torch.Tensor:
    """The span role of each position (later spans win; UNSPECIFIED outside all)."""
    roles = torch.full_like(positions, pb.SPAN_ROLE_UNSPECIFIED)
    for s in spans:
        end = s.end if s.end != 0 else torch.iinfo(torch.int64).max
        roles[(positions >= s.start) & (positions < end)] = s.role
    return roles


def _with_requirements(names: list[str], specs: list[DetectorSpec]) -> set[str]:
    """``names`` plus every detector they require, transitively."""
    by_name = {s.name: s for s in specs}
    out: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in out or name not in by_name:
            continue
        out.add(name)
        spec = by_name[name]
        todo += kind_of(spec).required_by(spec)
    return out


def _dependency_order(detectors: list[Detector]) -> list[Detector]:
    """Detectors ordered so each comes after those it requires."""
    by_name = {d.name: d for d in detectors}
    ordered: list[Detector] = []
    visiting: set[str] = set()

    def visit(d: Detector) -> None:
        if d in ordered:
            return
        if d.name in visiting:
            raise ValueError(f"detector {d.name!r} requires itself (a cycle)")
        visiting.add(d.name)
        for name in d.requires:
            if name not in by_name:
                raise ValueError(f"detector {d.name!r} requires {name!r}, which is not configured")
            visit(by_name[name])
        ordered.append(d)

    for d in detectors:
        visit(d)
    return ordered
