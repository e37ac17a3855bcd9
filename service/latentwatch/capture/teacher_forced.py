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


class _Stop(Exception):
    """Raised by the deepest hook once it has its rows: the layers above it and the LM head
    have nothing to add, so the forward ends there."""


def last_hook(model: torch.nn.Module, hook_names: list[str]) -> str:
    """The hooked module the forward reaches last (modules run in registration order)."""
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return max(hook_names, key=lambda n: order[n])


@torch.no_grad()
def batched_rows(
    lm: LoadedModel, sequences: list[list[int]], hook_names: list[str], batch_size: int = 8
) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """Teacher-forced forwards of many token sequences, as ``residual_rows`` gives one.

    Sequences are grouped by length and right-padded into batches (a causal model's rows
    for real tokens never see the padding after them), and each forward stops at the
    deepest hooked layer, so the layers above it and the LM head are skipped. Yields
    ``(index into sequences, rows per hook)`` in order of length."""
    stop_at = last_hook(lm.model, hook_names)
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name in hook_names:

        def fn(module, args, output, name=name):
            captured[name] = output[0] if isinstance(output, tuple) else output
            if name == stop_at:
                raise _Stop

        handles.append(lm.model.get_submodule(name).register_forward_hook(fn))
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    try:
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            width = max(len(sequences[i]) for i in idx)
            ids = torch.tensor([sequences[i] + [pad] * (width - len(sequences[i])) for i in idx])
            mask = torch.tensor([[1] * len(sequences[i]) + [0] * (width - len(sequences[i])) for i in idx])
            captured.clear()
            try:
                lm.model(ids, attention_mask=mask, use_cache=False)
            except _Stop:
                pass
            for row, i in enumerate(idx):
                n = len(sequences[i])
                yield i, {h: captured[h][row, :n].float().clone() for h in hook_names}
    finally:
        for h in handles:
            h.remove()


def transcript_rows(
    lm: LoadedModel, transcripts: list, hook_names: list[str], heads: list[str], batch_size: int = 8
) -> Iterator[tuple[int, dict[str, torch.Tensor], torch.Tensor | None]]:
    """Rows per hook, and lookback ratios where ``heads`` are asked for and a context span is
    declared, of many tokenised transcripts (``chat.ChatTokens``). Batched forwards
    (``batched_rows``), except for transcripts whose lookback ratios are needed: those are
    forwarded one at a time, as the ratios are computed per request. Yields
    ``(index, rows, ratios or None)`` in an order of its own."""
    from latentwatch.v1 import monitor_pb2 as pb

    single = [i for i, ct in enumerate(transcripts) if heads and any(s.role == pb.SPAN_ROLE_CONTEXT for s in ct.spans)]
    for i in single:
        yield i, *monitored_rows(lm, transcripts[i].input_ids, transcripts[i].spans, hook_names, heads)
    alone = set(single)
    rest = [i for i in range(len(transcripts)) if i not in alone]
    if not hook_names:
        yield from ((i, {}, None) for i in rest)
        return
    for k, rows in batched_rows(lm, [transcripts[i].input_ids for i in rest], hook_names, batch_size):
        yield rest[k], rows, None
