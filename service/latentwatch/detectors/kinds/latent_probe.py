"""``latent_probe``: a sparse linear probe over pooled SAE latents.

The probe reads few latents (it is trained with an L1 penalty), so each
verdict can name the latents that carried it. Parameters:

- ``roles``: span roles whose tokens are pooled (e.g. ``[user]``).
- ``pooling``: ``mean`` pools every token of those roles and scores once the
  spans are complete (prompt-side detectors); ``window`` scores the mean of
  the last ``window`` tokens after every token and keeps the maximum, so a
  response-side signal is flagged as soon as it appears.
- ``probe``: safetensors file with ``indices``, ``weights``, ``bias`` and the
  standardisation ``mean`` and ``scale`` of the selected latents.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from latentwatch.detectors.base import Detector, Evidence, Score, Span, TokenRows, role_id, sigmoid
from latentwatch.detectors.kinds import register
from latentwatch.detectors.probe import LinearProbe

TOP_EVIDENCE = 5


@dataclass
class _State:
    last_needed: int | None  # last position of the pooled spans, None if open-ended
    total: torch.Tensor
    count: int = 0
    first: int = -1
    last: int = -1
    # window pooling: the last window-1 rows seen (the start of the next chunk's first windows)
    tail: torch.Tensor | None = None
    tail_positions: torch.Tensor | None = None
    best: Score | None = None


@dataclass(frozen=True)
class Params:
    probe: str  # the probe artifact, relative to the spec
    roles: list[str] = field(default_factory=lambda: ["user"])
    pooling: str = "mean"  # mean | window
    window: int = 8  # tokens per window (pooling: window)


@register
class LatentProbe(Detector):
    kind = "latent_probe"
    Params = Params

    def __init__(self, spec, sae):
        super().__init__(spec, sae)
        p = self.params
        self.roles = torch.tensor([role_id(spec, r) for r in p.roles])
        self.pooling = p.pooling
        if self.pooling not in ("mean", "window"):
            raise ValueError(f"{spec.name}: pooling must be 'mean' or 'window'")
        self.window = p.window
        if sae is None:
            raise ValueError(f"{spec.name}: latent_probe reads SAE latents; name an SAE in the spec")
        self.probe = LinearProbe.load(spec.artifact(p.probe))
        self.indices, self.weights, self.bias = self.probe.indices, self.probe.weights, self.probe.bias
        if int(self.indices.max()) >= sae.d_sae:
            raise ValueError(f"{spec.name}: probe indexes latent {int(self.indices.max())} >= d_sae {sae.d_sae}")

    def new_state(self, spans: list[Span]) -> _State:
        mine = [s for s in spans if s.role in self.roles.tolist()]
        open_ended = any(s.end == 0 for s in mine) or not mine
        last_needed = None if open_ended else max(s.end for s in mine) - 1
        return _State(last_needed=last_needed, total=torch.zeros(len(self.indices)))

    def signature(self) -> list[Evidence]:
        order = torch.argsort(self.weights, descending=True)
        return [
            Evidence(self.sae.sae_id, int(self.indices[i]), 0.0, 0.0, self.sae.label(int(self.indices[i])))
            for i in order[:TOP_EVIDENCE].tolist()
            if self.weights[i] > 0
        ]

    def observe(self, state: _State, rows: TokenRows, upstream) -> None:
        keep = torch.isin(rows.roles, self.roles)
        if not keep.any():
            return
        z = rows.latents[keep][:, self.indices]
        pos = rows.positions[keep]
        if state.first < 0:
            state.first = int(pos[0])
        state.last = int(pos[-1])
        if self.pooling == "mean":
            state.total += z.sum(0)
            state.count += z.shape[0]
            return
        # Every window ending at one of this chunk's rows, at once: prefix sums over the rows
        # kept from before plus the new ones; the windows are the differences.
        rows = z if state.tail is None else torch.cat([state.tail, z])
        positions = pos if state.tail_positions is None else torch.cat([state.tail_positions, pos])
        kept = rows.shape[0] - z.shape[0]
        sums = torch.cat([torch.zeros(1, rows.shape[1], dtype=torch.float64), rows.double().cumsum(0)])
        ends = torch.arange(kept + 1, rows.shape[0] + 1)  # exclusive end of each new row's window
        starts = (ends - self.window).clamp(min=0)
        pooled = ((sums[ends] - sums[starts]) / (ends - starts).unsqueeze(1)).float()
        values = self.probe.contributions(pooled).sum(1) + self.bias
        j = int(torch.argmax(values))  # the first of the chunk's best windows
        candidate = self._score(pooled[j], int(positions[starts[j]]), int(positions[ends[j] - 1]) + 1)
        if state.best is None or candidate.value > state.best.value:
            state.best = candidate
        keep = rows.shape[0] - min(self.window - 1, rows.shape[0])
        state.tail, state.tail_positions = rows[keep:], positions[keep:]

    def score(self, state: _State, final: bool, upstream) -> Score | None:
        if self.pooling == "window":
            return state.best
        if state.count == 0:
            return None
        complete = state.last_needed is not None and state.last >= state.last_needed
        if not (complete or final):
            return None
        return self._score(state.total / state.count, state.first, state.last + 1)

    def _score(self, pooled: torch.Tensor, start: int, end: int) -> Score:
        contrib = self.probe.contributions(pooled)
        value = sigmoid(float(contrib.sum()) + self.bias)
        order = torch.argsort(contrib, descending=True)[:TOP_EVIDENCE]
        evidence = [
            Evidence(
                sae_id=self.sae.sae_id,
                index=int(self.indices[i]),
                activation=float(pooled[i]),
                contribution=float(contrib[i]),
                label=self.sae.label(int(self.indices[i])),
            )
            for i in order.tolist()
            if contrib[i] > 0
        ]
        return Score(value=value, token_start=start, token_end=end, evidence=evidence)
