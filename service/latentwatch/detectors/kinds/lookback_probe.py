"""``lookback_probe``: is the response drawing on the supplied context?

A logistic probe over two kinds of evidence averaged across the response so
far: the lookback ratio of chosen attention heads (attention mass on the
context vs. on the model's own answer, the Lookback Lens feature) and a few
SAE latents (context-copying vs. parametric-recall features, ReDeEP's idea in
SAE terms). It scores once ``min_tokens`` response tokens carry both, and
after every chunk from then on, so an absence rule can judge early.

A third, optional input is ``overlap``: the share of response tokens whose
id also occurs in the context span, counted in the sidecar from the token
ids the capture sends with its rows (an answer copied from the passage
reuses its tokens; one from memory brings new ones). Without ids on the
wire it sits at its training mean, so it adds nothing either way.

Parameters: ``heads`` (``["L14H3", ...]``), ``probe`` (safetensors with
``indices`` of the latents, ``weights`` over [heads..., latents...,
overlap if ``overlap``], ``bias``, ``mean``, ``scale``), ``overlap``
(default false), ``min_tokens`` (default 4), ``roles`` (default ``[response]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from latentwatch.detectors.base import (
    ROLE_NAMES,
    AttentionRows,
    Detector,
    Evidence,
    Score,
    Span,
    TokenRows,
    role_id,
    sigmoid,
)
from latentwatch.detectors.kinds import register
from latentwatch.detectors.probe import LinearProbe

TOP_EVIDENCE = 5
OVERLAP_LABEL = "answer tokens found in the context"


@dataclass
class _State:
    has_context: bool
    lookback_sum: torch.Tensor
    latent_sum: torch.Tensor
    lookback_n: int = 0
    latent_n: int = 0
    context_ids: set[int] = field(default_factory=set)
    overlap_hits: int = 0
    overlap_n: int = 0
    rows_seen: bool = False  # an activation chunk came: whether ids travel with them is known
    first: int = -1
    last: int = -1


@dataclass(frozen=True)
class Params:
    heads: list[str]  # "L14H3", ...
    probe: str  # the probe artifact, relative to the spec
    roles: list[str] = field(default_factory=lambda: ["response"])
    min_tokens: int = 4
    overlap: bool = False  # the probe's last weight reads the answer-context token overlap


@register
class LookbackProbe(Detector):
    kind = "lookback_probe"
    Params = Params

    def __init__(self, spec, sae):
        super().__init__(spec, sae)
        p = self.params
        self._heads = list(p.heads)
        if not self._heads:
            raise ValueError(f"{spec.name}: lookback_probe needs params.heads")
        self.roles = torch.tensor([role_id(spec, r) for r in p.roles])
        self.min_tokens = p.min_tokens
        self.probe = LinearProbe.load(spec.artifact(p.probe))
        self.indices, self.weights, self.bias = self.probe.indices, self.probe.weights, self.probe.bias
        self.overlap = p.overlap
        self._context_role = ROLE_NAMES["context"]
        if len(self.weights) != len(self._heads) + len(self.indices) + self.overlap:
            raise ValueError(
                f"{spec.name}: probe has {len(self.weights)} weights for {len(self._heads)} heads, "
                f"{len(self.indices)} latents" + (" and the overlap" if self.overlap else "")
            )
        if len(self.indices) and (sae is None or int(self.indices.max()) >= sae.d_sae):
            raise ValueError(f"{spec.name}: probe latents need an SAE with more than {int(self.indices.max())} latents")

    @property
    def heads(self) -> list[str]:
        return self._heads

    def new_state(self, spans: list[Span]) -> _State:
        has_context = any(s.role == ROLE_NAMES["context"] and s.end > s.start for s in spans)
        return _State(has_context, torch.zeros(len(self._heads)), torch.zeros(len(self.indices)))

    def observe_attention(self, state: _State, rows: AttentionRows, upstream) -> None:
        keep = torch.isin(rows.roles, self.roles)
        if keep.any():
            state.lookback_sum += rows.lookback[keep].sum(0)
            state.lookback_n += int(keep.sum())
            self._span(state, rows.positions[keep])

    def observe(self, state: _State, rows: TokenRows, upstream) -> None:
        keep = torch.isin(rows.roles, self.roles)
        state.rows_seen = True
        if self.overlap and rows.token_ids is not None:
            state.context_ids.update(rows.token_ids[rows.roles == self._context_role].tolist())
            if keep.any() and state.context_ids:
                state.overlap_hits += sum(i in state.context_ids for i in rows.token_ids[keep].tolist())
                state.overlap_n += int(keep.sum())
        if keep.any() and rows.latents is not None:
            state.latent_sum += rows.latents[keep][:, self.indices].sum(0)
            state.latent_n += int(keep.sum())
            self._span(state, rows.positions[keep])

    @staticmethod
    def _span(state: _State, positions: torch.Tensor) -> None:
        if state.first < 0:
            state.first = int(positions[0])
        state.last = max(state.last, int(positions[-1]))

    def score(self, state: _State, final: bool, upstream) -> Score | None:
        if not state.has_context:
            return None  # nothing to attend to: no judgement
        needs_latents = len(self.indices) > 0
        n = min(state.lookback_n, state.latent_n) if needs_latents else state.lookback_n
        if self.overlap:  # ratios may come before the rows (and ids) of the same tokens: wait for both
            n = min(n, state.overlap_n) if state.context_ids else (n if state.rows_seen else 0)
        if n < self.min_tokens and not (final and n > 0):
            return None
        lookback = state.lookback_sum / max(state.lookback_n, 1)
        latents = state.latent_sum / max(state.latent_n, 1)
        x = torch.cat([lookback, latents])
        if self.overlap:  # without ids on the wire: the training mean, which contributes nothing
            share = state.overlap_hits / state.overlap_n if state.overlap_n else float(self.probe.mean[-1])
            x = torch.cat([x, torch.tensor([share])])
        contrib = self.probe.contributions(x)
        value = sigmoid(float(contrib.sum()) + self.bias)
        evidence = []
        for i in torch.argsort(contrib, descending=True)[:TOP_EVIDENCE].tolist():
            if contrib[i] <= 0:
                continue
            if i < len(self._heads):  # a head's evidence: source "attention:L14H3", activation = its mean ratio
                h = self._heads[i]
                evidence.append(Evidence(f"attention:{h}", 0, float(x[i]), float(contrib[i]), f"lookback ratio {h}"))
            elif i == len(x) - 1 and self.overlap:
                evidence.append(Evidence("tokens:context", 0, float(x[i]), float(contrib[i]), OVERLAP_LABEL))
            else:
                j = int(self.indices[i - len(self._heads)])
                evidence.append(Evidence(self.sae.sae_id, j, float(x[i]), float(contrib[i]), self.sae.label(j)))
        return Score(value=value, token_start=state.first, token_end=state.last + 1, evidence=evidence)

    def signature(self) -> list[Evidence]:
        order = torch.argsort(self.weights, descending=True)
        out = []
        for i in order[:TOP_EVIDENCE].tolist():
            if self.weights[i] <= 0:
                continue
            if i < len(self._heads):
                h = self._heads[i]
                out.append(Evidence(f"attention:{h}", 0, 0.0, 0.0, f"lookback ratio {h}"))
            elif i == len(self.weights) - 1 and self.overlap:
                out.append(Evidence("tokens:context", 0, 0.0, 0.0, OVERLAP_LABEL))
            else:
                j = int(self.indices[i - len(self._heads)])
                out.append(Evidence(self.sae.sae_id, j, 0.0, 0.0, self.sae.label(j)))
        return out
