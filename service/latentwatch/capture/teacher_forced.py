"""Teacher-forced forwards that return residual rows per hook.

Used by offline scoring (``latentwatch score``) and by probe training, so a
probe is trained on exactly the rows the monitor later sees.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from latentwatch.models import LoadedModel


@torch.no_grad()
def residual_rows(lm: LoadedModel, input_ids: list[int], hook_names: list[str]) -> dict[str, torch.Tensor]:
    """One forward; the output of each named module as [seq, d_model] fp32."""
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name in hook_names:

        def fn(module, args, output, name=name):
            hidden = output[0] if isinstance(output, tuple) else output
            captured[name] = hidden[0].detach().float().clone()

        handles.append(lm.model.get_submodule(name).register_forward_hook(fn))
    try:
        lm.model(torch.tensor([input_ids]))
    finally:
        for h in handles:
            h.remove()
    return captured


@torch.no_grad()
def monitored_rows(
    lm: LoadedModel, input_ids: list[int], spans: list, hook_names: list[str], heads: list[str]
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """One forward: residual rows per hook and, when ``heads`` are asked for and
    the request declares a context span, their lookback ratios [seq, len(heads)]."""
    from latentwatch.capture.lookback import LookbackTracker, parse_heads
    from latentwatch.v1 import monitor_pb2 as pb

    context = [s for s in spans if s.role == pb.SPAN_ROLE_CONTEXT]
    if not heads or not context:
        return residual_rows(lm, input_ids, hook_names), None
    response = [s for s in spans if s.role == pb.SPAN_ROLE_RESPONSE]
    out: list[torch.Tensor] = []
    tracker = LookbackTracker(lm.model, parse_heads(heads), emit=lambda start, r: out.append(r))
    try:
        tracker.begin((context[0].start, context[-1].end), response[0].start if response else len(input_ids))
        rows = residual_rows(lm, input_ids, hook_names)
    finally:
        tracker.remove()
    return rows, out[0]


@torch.no_grad()
def batched_residuals(
    lm: LoadedModel, rows: list[list[int]], hook_name: str, batch_size: int = 8
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Forward equal-length token rows in batches; yield (token ids, residual
    rows) per batch with position 0 (the attention sink) dropped, flattened to
    [batch * (seq - 1)] and [batch * (seq - 1), d_model]."""
    captured: list[torch.Tensor] = []
    module = lm.model.get_submodule(hook_name)
    handle = module.register_forward_hook(lambda m, i, o: captured.append(o[0] if isinstance(o, tuple) else o))
    try:
        for b in range(0, len(rows), batch_size):
            ids = torch.tensor(rows[b : b + batch_size])
            captured.clear()
            lm.model(ids)
            acts = captured[0][:, 1:]
            yield ids[:, 1:].reshape(-1), acts.reshape(-1, acts.shape[-1]).float()
    finally:
        handle.remove()
