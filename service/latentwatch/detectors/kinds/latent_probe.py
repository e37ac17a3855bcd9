"""``latent_probe``: a linear probe over pooled SAE latents (or the residual they explain).

By default the probe reads few latents (it is trained with an L1 penalty), so
each verdict can name the latents that carried it. Parameters:

- ``roles``: span roles whose tokens are pooled (e.g. ``[user]``).
- ``pooling``: ``mean`` pools every token of those roles and scores once the
  spans are complete (prompt-side detectors); ``tail`` does the same over only
  the last ``window`` of those tokens (with ``roles: [user, template]``: the end
  of the request and the chat template after it, where a chat model encodes
  what it makes of the request); ``window`` scores the mean of the last
  ``window`` tokens after every token and keeps the maximum, so a
  response-side signal is flagged as soon as it appears.
- ``features``: ``latents`` (default) or ``residual``: a dense direction over
  the raw residual rows at the SAE's layer, for where a dense probe
  generalises better than a sparse one. Its score is still explained by
  latents: latent j's share is its pooled activation times its decoder row's
  projection on the direction (exact up to the SAE's reconstruction error).
- Attribution: each pooled token's exact share of the logit (its own probe
  logit over the number pooled), for the tokens of the scored span. ``tail``
  pooling also attributes the request tokens before the tail by the same
  formula (own logit over the tail's size): the tail rows are chat-template
  tokens whose content was read from those earlier tokens, and the probe's
  reading of each earlier token is what an operator can act on (measured:
  deleting the top three moves the score more than deleting random ones;
  see the pack card). Exact for the tail's tokens, a reading for the others.
- ``probe``: safetensors file with ``indices``, ``weights``, ``bias`` and the
  standardisation ``mean`` and ``scale`` of the selected features.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from latentwatch.detectors.base import Attribution, Detector, Evidence, Score, Span, TokenRows, role_id, sigmoid
from latentwatch.detectors.kinds import register
from latentwatch.detectors.probe import LinearProbe

TOP_EVIDENCE = 5
MAX_ATTRIBUTED = 128  # tokens an attribution keeps (largest shares) when a mean pools more


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
    # mean and tail pooling: every observed token's own probe logit, for the attribution
    token_logits: list[torch.Tensor] = field(default_factory=list)
    token_positions: list[torch.Tensor] = field(default_factory=list)


@dataclass(frozen=True)
class Params:
    probe: str  # the probe artifact, relative to the spec
    roles: list[str] = field(default_factory=lambda: ["user"])
    pooling: str = "mean"  # mean | tail | window
    window: int = 8  # tokens per window (pooling: window, tail)
    features: str = "latents"  # latents | residual


@register
class LatentProbe(Detector):
    kind = "latent_probe"
    Params = Params

    def __init__(self, spec, sae):
        super().__init__(spec, sae)
        p = self.params
        self.roles = torch.tensor([role_id(spec, r) for r in p.roles])
        self.pooling = p.pooling
        if self.pooling not in ("mean", "tail", "window"):
            raise ValueError(f"{spec.name}: pooling must be 'mean', 'tail' or 'window'")
        if p.features not in ("latents", "residual"):
            raise ValueError(f"{spec.name}: features must be 'latents' or 'residual'")
        self.window = p.window
        if sae is None:
            raise ValueError(f"{spec.name}: latent_probe reads SAE latents; name an SAE in the spec")
        self.probe = LinearProbe.load(spec.artifact(p.probe))
        self.indices, self.weights, self.bias = self.probe.indices, self.probe.weights, self.probe.bias
        self.dense = p.features == "residual"
        width = sae.d_in if self.dense else sae.d_sae
        if int(self.indices.max()) >= width:
            top = int(self.indices.max())
            raise ValueError(f"{spec.name}: probe indexes feature {top} >= {p.features} width {width}")
        # A dense probe's score, spread over the latents through their decoder rows.
        self.latent_weight = sae.decoder_projection(self.residual_direction()) if self.dense else None

    def new_state(self, spans: list[Span]) -> _State:
        mine = [s for s in spans if s.role in self.roles.tolist()]
        open_ended = any(s.end == 0 for s in mine) or not mine
        last_needed = None if open_ended else max(s.end for s in mine) - 1
        return _State(last_needed=last_needed, total=torch.zeros(()))

    def signature(self) -> list[Evidence]:
        """The latents this detector looks for: its heaviest positive weights (for a
        dense probe, the latents whose decoder rows point most along its direction)."""
        weights, index = (self.latent_weight, None) if self.dense else (self.weights, self.indices)
        order = torch.argsort(weights, descending=True)[:TOP_EVIDENCE].tolist()
        latents = [(int(i if index is None else index[i]), i) for i in order if weights[i] > 0]
        return [Evidence(self.sae.sae_id, j, 0.0, 0.0, self.sae.label(j)) for j, _ in latents]

    def residual_direction(self) -> torch.Tensor:
        """The probe as one direction in residual space (standardisation folded in): a dense
        probe's weights, or a sparse probe's weights carried through its latents' decoder rows."""
        if not self.dense:
            return (self.weights / self.probe.scale) @ self.sae.sae.W_dec[self.indices].detach().float()
        direction = torch.zeros(self.sae.d_in)
        direction[self.indices] = self.weights / self.probe.scale
        return direction

    def _features(self, rows: TokenRows, keep: torch.Tensor) -> torch.Tensor:
        """The probe's features of the kept rows; a dense probe carries the latents
        after them (columns ``len(indices):``), pooled alike, for its evidence."""
        if not self.dense:
            return rows.latents[keep][:, self.indices]
        return torch.cat([rows.residual[keep].float(), rows.latents[keep]], 1)

    def observe(self, state: _State, rows: TokenRows, upstream) -> None:
        keep = torch.isin(rows.roles, self.roles)
        if not keep.any():
            return
        z = self._features(rows, keep)
        pos = rows.positions[keep]
        if state.first < 0:
            state.first = int(pos[0])
        state.last = int(pos[-1])
        if self.pooling == "mean":
            state.total = z.sum(0) if state.count == 0 else state.total + z.sum(0)
            state.count += z.shape[0]
            state.token_logits.append(self._token_logits(z))
            state.token_positions.append(pos)
            return
        if self.pooling == "tail":
            state.token_logits.append(self._token_logits(z))
            state.token_positions.append(pos)
            rows_ = z if state.tail is None else torch.cat([state.tail, z])
            state.tail = rows_[-self.window :]
            state.tail_positions = pos if state.tail_positions is None else torch.cat([state.tail_positions, pos])
            state.tail_positions = state.tail_positions[-self.window :]
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
        values = self.probe.contributions(pooled[:, : len(self.indices)]).sum(1) + self.bias
        j = int(torch.argmax(values))  # the first of the chunk's best windows
        if state.best is None or sigmoid(float(values[j])) > state.best.value:
            span = slice(int(starts[j]), int(ends[j]))
            state.best = self._score(pooled[j], int(positions[span.start]), int(positions[span.stop - 1]) + 1)
            state.best.attribution = _attribution(positions[span], self._token_logits(rows[span]))
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
        if self.pooling == "tail":
            score = self._score(state.tail.mean(0), int(state.tail_positions[0]), state.last + 1)
            pooled = state.tail.shape[0]
            score.attribution = _attribution(torch.cat(state.token_positions), torch.cat(state.token_logits), pooled)
            return score
        score = self._score(state.total / state.count, state.first, state.last + 1)
        score.attribution = _attribution(torch.cat(state.token_positions), torch.cat(state.token_logits))
        return score

    def _token_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Each row's own probe logit, bias aside: the mean of these over the pooled
        rows is the pooled logit (the probe is affine), so a row's share is this / n."""
        return self.probe.contributions(z[:, : len(self.indices)].float()).sum(1)

    def _score(self, pooled: torch.Tensor, start: int, end: int) -> Score:
        n = len(self.indices)
        contrib = self.probe.contributions(pooled[:n])
        value = sigmoid(float(contrib.sum()) + self.bias)
        if self.dense:  # the evidence: latents by their share of the direction
            shares = pooled[n:] * self.latent_weight
            acts, index = pooled[n:], torch.arange(shares.shape[0])
        else:
            shares, acts, index = contrib, pooled, self.indices
        order = torch.argsort(shares, descending=True)[:TOP_EVIDENCE]
        evidence = [
            Evidence(
                sae_id=self.sae.sae_id,
                index=int(index[i]),
                activation=float(acts[i]),
                contribution=float(shares[i]),
                label=self.sae.label(int(index[i])),
            )
            for i in order.tolist()
            if shares[i] > 0
        ]
        return Score(value=value, token_start=start, token_end=end, evidence=evidence)


def _attribution(positions: torch.Tensor, token_logits: torch.Tensor, pooled: int | None = None) -> list[Attribution]:
    """Each token's share of the logit, its own probe logit over the ``pooled`` count (default:
    all of them), in position order (the largest ``MAX_ATTRIBUTED`` by size when more)."""
    shares = token_logits / max(pooled or len(token_logits), 1)
    keep = torch.argsort(shares.abs(), descending=True)[:MAX_ATTRIBUTED].sort().values
    return [Attribution(int(positions[i]), float(shares[i])) for i in keep.tolist()]
