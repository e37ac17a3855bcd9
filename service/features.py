"""Teacher-forced forwards that return residual rows per hook.

Used by offline scoring (``latentwatch score``) and by probe training, so a
probe is trained on exactly the rows the monitor later sees.
"""

from __future__ import annotations

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
