"""Lookback ratios of chosen attention heads, computed inside an HF model.

For each token and each chosen (layer, head), the lookback ratio is the
attention mass the token's query puts on the retrieved-context span divided
by the mass on the context plus the previously generated (response) tokens
(the Lookback Lens feature). A model answering from the passage looks back
at it; one answering from memory attends to its own answer.

Cost is linear per token: a pre-hook on the chosen layers' attention module
recomputes the query of the chosen heads only (the module's own ``q_proj``,
norm and rotary embedding) and scores it against the keys of their KV heads,
which the tracker keeps per request (the same keys the module caches). No
full attention matrix is ever formed, and other heads are not touched.
Sliding-window and soft-capped attention variants are not reproduced: on such
layers the ratio is an approximation (SmolLM2 and Llama have neither).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Head:
    layer: int
    head: int

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}"


def parse_heads(specs: list[str]) -> list[Head]:
    """``["L14H3", ...]`` to heads (the spelling specs and configs use)."""
    heads = []
    for s in specs:
        layer, _, head = s.upper().removeprefix("L").partition("H")
        if not (layer.isdigit() and head.isdigit()):
            raise ValueError(f"head {s!r} is not of the form L<layer>H<head>, e.g. L14H3")
        heads.append(Head(int(layer), int(head)))
    return heads


@dataclass
class _RequestKeys:
    context: tuple[int, int]  # [start, end) of the context span
    response_start: int  # first generated position; keys from here on are "generated"
    keys: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [T, n_chosen_kv, head_dim]


class LookbackTracker:
    """Hooks the chosen heads' layers and hands each forward's ratios to ``emit``.

    Use one request at a time (batch size 1), as ``HFCapture`` does:
    ``begin(context_span, response_start)``, run forwards, then ``end()``.
    ``emit(start_position, ratios)`` gets [n_tokens, len(heads)] per forward;
    by default the rows collect in ``rows``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        heads: list[Head],
        emit: Callable[[int, torch.Tensor], None] | None = None,
    ):
        if not heads:
            raise ValueError("choose at least one (layer, head)")
        cfg = model.config
        self.heads = heads
        self.n_heads = cfg.num_attention_heads
        self.group = cfg.num_attention_heads // cfg.num_key_value_heads
        layers = model.model.layers
        for h in heads:
            if not (0 <= h.layer < len(layers) and 0 <= h.head < self.n_heads):
                raise ValueError(f"head {h} is outside this model ({len(layers)} layers, {self.n_heads} heads)")
        self._req: _RequestKeys | None = None
        self._pending: dict[int, torch.Tensor] = {}  # layer -> [T, heads of that layer] ratios of this forward
        self._positions: dict[int, int] = {}
        self.rows: list[tuple[int, torch.Tensor]] = []  # (start position, [T, len(heads)]) per forward
        self.emit = emit or (lambda start, ratios: self.rows.append((start, ratios)))
        self._by_layer: dict[int, list[int]] = {}
        for i, h in enumerate(heads):
            self._by_layer.setdefault(h.layer, []).append(i)
        self._handles = [
            layers[layer].self_attn.register_forward_pre_hook(self._hook(layer), with_kwargs=True)
            for layer in self._by_layer
        ]

    def begin(self, context: tuple[int, int], response_start: int) -> None:
        self._req = _RequestKeys(context=context, response_start=response_start)
        self._positions = dict.fromkeys(self._by_layer, 0)
        self._pending = {}
        self.rows = []

    def end(self) -> None:
        self._req = None
        self._pending = {}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _hook(self, layer: int):
        def fn(module, args, kwargs) -> None:
            if self._req is None:
                return
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            cos, sin = kwargs["position_embeddings"]
            idx = self._by_layer[layer]
            ratios = self._ratios(module, layer, hidden, cos, sin, [self.heads[i].head for i in idx])
            self._pending[layer] = ratios
            if len(self._pending) == len(self._by_layer):  # every chosen layer has run: one row per token
                start = self._positions[layer] - ratios.shape[0]
                out = torch.zeros(ratios.shape[0], len(self.heads))
                for lyr, r in self._pending.items():
                    out[:, self._by_layer[lyr]] = r
                self._pending = {}
                self.emit(start, out)

        return fn

    @torch.no_grad()
    def _ratios(self, attn, layer: int, hidden: torch.Tensor, cos, sin, heads: list[int]) -> torch.Tensor:
        if hidden.shape[0] != 1:
            raise ValueError("LookbackTracker follows one request per forward (batch size 1)")
        rotary = sys.modules[type(attn).__module__].apply_rotary_pos_emb
        hd = attn.head_dim
        x = hidden[0]  # [T, d]
        n = x.shape[0]
        q = _head_projection(attn.q_proj, x, heads, hd)  # [n, h, hd]
        k = _head_projection(attn.k_proj, x, [h // self.group for h in heads], hd)
        if hasattr(attn, "q_norm"):  # Gemma/Qwen3-style per-head norms
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = rotary(q.transpose(0, 1)[None], k.transpose(0, 1)[None], cos, sin)  # [1, h, n, hd]
        q, k = q[0], k[0]
        req = self._req
        keys = torch.cat([req.keys[layer], k], dim=1) if layer in req.keys else k  # [h, T, hd]
        req.keys[layer] = keys
        start = self._positions[layer]
        self._positions[layer] = start + n
        return lookback_ratios(
            q.transpose(0, 1), keys.transpose(0, 1), start, req.context, req.response_start, attn.scaling
        )


@torch.no_grad()
def lookback_ratios(
    q: torch.Tensor, keys: torch.Tensor, start: int, context: tuple[int, int], response_start: int, scale: float
) -> torch.Tensor:
    """Lookback ratios [n, heads] of queries q [n, heads, hd] at positions ``start..start+n``
    against keys [T, heads, hd] of positions 0..T (column h of keys is query head h's KV head).

    The one formula both the HF tracker and the vLLM worker use: softmax over the causal
    keys, mass on the ``context`` span [start, end) over that mass plus the mass on
    previously generated tokens (keys from ``response_start`` up to, not including, the query).
    """
    n, total = q.shape[0], keys.shape[0]
    scores = torch.einsum("nhd,thd->hnt", q.float(), keys.float()) * scale
    qpos = torch.arange(start, start + n, device=q.device)[:, None]
    kpos = torch.arange(total, device=q.device)[None, :]
    w = torch.softmax(scores.masked_fill((kpos > qpos)[None], float("-inf")), dim=-1)
    ctx = w[..., context[0] : context[1]].sum(-1)  # [h, n]
    gen = (w * ((kpos >= response_start) & (kpos < qpos))[None]).sum(-1)
    return (ctx / (ctx + gen).clamp_min(1e-9)).T


def _head_projection(proj: torch.nn.Linear, x: torch.Tensor, heads: list[int], hd: int) -> torch.Tensor:
    """The rows of ``proj`` belonging to ``heads`` only, applied to ``x``: [n, len(heads), hd]."""
    rows = torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in heads])
    bias = None if proj.bias is None else proj.bias[rows]
    return torch.nn.functional.linear(x, proj.weight[rows], bias).view(x.shape[0], len(heads), hd)
