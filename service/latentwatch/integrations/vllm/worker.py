"""The vLLM worker extension: capture hooks on vLLM's decoder layers.

vLLM (V1 model runner) runs one flat batch per step: the tokens of every
scheduled request back to back, request ``i`` owning rows
``query_start_loc[i]:query_start_loc[i + 1]``, its first row at position
``num_computed_tokens[i]``, in the order of ``input_batch.req_ids`` (which the
runner reorders between steps). The hooks split each step by those arrays:

- requests start and end with the scheduler's own bookkeeping
  (``scheduled_new_reqs``, ``finished_req_ids``; the engine runs one more step
  to deliver the last finished ids, so ends arrive promptly);
- a chunked prefill arrives over several steps, each chunk at its positions;
- prefix-cached prompt tokens are not recomputed, so their rows do not exist:
  capture starts at the first computed position (counted in
  ``prefix_cached_positions``); a request preempted and recomputed sends each
  position once;
- decoder layers return ``(hidden, residual)`` (the fused add-norm keeps them
  apart); the residual stream after the layer is their sum, which is also the
  one copy made: only the scheduled rows, summed into a fresh tensor (pinned
  host memory without a sync on GPUs), then handed to the sender thread of
  ``GrpcMonitorClient`` (bounded buffer: when full, drop and count).

Lookback ratios: a pre-hook on the chosen layers' ``Attention`` module gets
the rotated query and key of every scheduled token. It writes the chosen KV
heads' keys into a shadow of the paged KV cache (same block table, same
slots, so prefix-cached blocks are found where vLLM finds them, whatever the
attention backend's own cache layout), then scores each monitored request's
chosen query heads against the keys of that request's blocks only: per head
``[new tokens, sequence]``, never the full attention matrix.

Steering (``act: steer``): a verdict that carries an edit (its detector's spec
says ``act: steer``) arms it for that request; from the next step on, a hook on
the edit's layer adds ``strength * ||row|| * direction`` to that request's
rows only (the layer's ``hidden`` output, which the next layer adds into the
residual stream). The edit's layer is one the sidecar reads, so with ``act:
steer`` each captured layer gets a steering hook at start-up, after its capture
hook (the monitor sees unedited rows); it returns at once while nothing is
steered. With ``act: observe`` (the default) no such hook exists.

Only global rank 0 captures: with tensor parallelism the layer outputs are
all-reduced, so rank 0 sees the whole residual stream, and lookback heads must
be among rank 0's heads. Pipeline parallelism is not supported (the hooks
refuse layers that are not on rank 0).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import numpy as np
import torch

from latentwatch.capture import GrpcMonitorClient
from latentwatch.capture.lookback import lookback_ratios, parse_heads
from latentwatch.detectors.base import Span
from latentwatch.detectors.steering import SteerEdit
from latentwatch.integrations.vllm.settings import OPT_OUT_KEY, PROMPT_LEN_KEY, SPANS_KEY, Settings
from latentwatch.v1 import monitor_pb2 as pb

log = logging.getLogger(__name__)
_SUFFIX = re.compile(r"-[0-9a-f]{8}$")  # vLLM appends one to the id the client sees


def public_request_id(internal_id: str, randomized: bool = True) -> str:
    """The request id the client sees (``chatcmpl-...``): vLLM's internal id less its random suffix.

    Parallel samples (``n > 1``) keep their ``<index>_`` prefix, so each sample
    is a request of its own.
    """
    return _SUFFIX.sub("", internal_id) if randomized else internal_id


def request_spans(prompt_len: int, extra_args: dict | None) -> list[Span] | None:
    """The spans of a new request, or None when it opted out.

    The API server's spans (``latentwatch_spans``) are used when they were
    computed for this prompt; otherwise the whole prompt is the user's. The
    response is open-ended from the prompt's end.
    """
    extra = extra_args or {}
    if str(extra.get(OPT_OUT_KEY, "")).lower() == "off":
        return None
    spans = [Span(pb.SPAN_ROLE_USER, 0, prompt_len)]
    flat = extra.get(SPANS_KEY)
    if isinstance(flat, list) and len(flat) % 3 == 0 and extra.get(PROMPT_LEN_KEY) == prompt_len:
        given = [Span(int(r), int(s), int(e)) for r, s, e in zip(flat[::3], flat[1::3], flat[2::3], strict=True)]
        if given and all(0 <= s.start < s.end <= prompt_len and s.role in pb.SpanRole.values() for s in given):
            spans = given
    return spans + [Span(pb.SPAN_ROLE_RESPONSE, prompt_len, 0)]


@dataclass
class _Request:
    public_id: str
    context: tuple[int, int] | None  # [start, end) of the CONTEXT span
    response_start: int
    sent: dict[str, int] = field(default_factory=dict)  # stream ("" = lookback) -> next unsent position


@dataclass
class _Step:
    """One forward's batch layout, read once from the runner."""

    rows: list[tuple[str, int, int, int]]  # (internal id, first row, end row, first position)
    n_tokens: int
    slots: np.ndarray | None = None  # KV slot of every scheduled token (lookback only)
    ids: torch.Tensor | None = None  # token id of every scheduled token, host memory (see _read_ids)


class _Capture:
    """The hooks of one worker (global rank 0) and the client they feed."""

    def __init__(self, worker, settings: Settings):
        import vllm.envs as envs

        self.runner = worker.model_runner
        self.settings = settings
        self.randomized_ids = not envs.VLLM_DISABLE_REQUEST_ID_RANDOMIZATION
        model_id = worker.vllm_config.model_config.served_model_name
        self.client = GrpcMonitorClient(settings.sidecar, model_id, max_buffer=settings.max_buffer, auth=settings.auth)
        self.requests: dict[str, _Request] = {}
        self.prefix_cached_positions = 0
        self.hook_errors = 0
        self._step: _Step | None = None
        self._in_step = False
        model = self.runner.get_model()
        layers = _decoder_layers(model)
        embed = getattr(getattr(model, "model", None), "embed_tokens", None)
        if isinstance(embed, torch.nn.Module):  # token ids ride along with the rows (optional on the wire)
            embed.register_forward_pre_hook(self._read_ids)
        for i, name in zip(settings.layers, settings.hook_names, strict=True):
            _layer(layers, i).register_forward_hook(self._residual_hook(name))
        self.lookback = _Lookback(self, layers, settings.heads) if settings.heads else None
        self.edits: dict[str, SteerEdit] = {}  # public request id -> its edit (set by the client's thread)
        self.steered_rows = 0
        if settings.act == "steer":
            self.client.on_verdict = self._on_verdict
            for i, name in zip(settings.layers, settings.hook_names, strict=True):
                _layer(layers, i).register_forward_hook(self._steer_hook(name))
        self._wrap_execute_model()

    # -- request bookkeeping (before each step's forward) ----------------------------------------

    def _wrap_execute_model(self) -> None:
        original = self.runner.execute_model

        def execute_model(scheduler_output, *args, **kwargs):
            try:
                self._begin_step(scheduler_output)
            except Exception:  # noqa: BLE001 - bookkeeping must never fail a step
                self.hook_errors += 1
                log.exception("latentwatch: request bookkeeping failed")
            self._in_step = True
            try:
                return original(scheduler_output, *args, **kwargs)
            finally:
                self._in_step = False
                self._step = None

        self.runner.execute_model = execute_model

    def _on_verdict(self, v) -> None:
        if v.steer is not None:
            self.edits[v.request_id] = v.steer

    def _begin_step(self, out) -> None:
        for rid in out.finished_req_ids:
            req = self.requests.pop(rid, None)
            if req is not None:
                self.client.end_request(req.public_id)
                self.edits.pop(req.public_id, None)
        for new in out.scheduled_new_reqs:
            if new.prompt_token_ids is None or new.sampling_params is None:
                continue  # prompt embeddings or pooling: nothing the detectors read
            n = len(new.prompt_token_ids)
            spans = request_spans(n, new.sampling_params.extra_args)
            if spans is None or new.req_id in self.requests:
                continue
            context = next(((s.start, s.end) for s in spans if s.role == pb.SPAN_ROLE_CONTEXT), None)
            req = _Request(public_request_id(new.req_id, self.randomized_ids), context, n)
            self.requests[new.req_id] = req
            self.prefix_cached_positions += new.num_computed_tokens
            self.client.start_request(req.public_id, spans)

    def step(self) -> _Step | None:
        """This forward's layout (None outside ``execute_model``: profiling and warm-up runs)."""
        if not self._in_step:
            return None
        if self._step is None:
            batch = self.runner.input_batch
            n = batch.num_reqs
            qsl = self.runner.query_start_loc.np[: n + 1]
            starts = batch.num_computed_tokens_cpu[:n]
            rows = [(rid, int(qsl[i]), int(qsl[i + 1]), int(starts[i])) for i, rid in enumerate(batch.req_ids[:n])]
            self._step = _Step(rows=rows, n_tokens=int(qsl[n]))
        return self._step

    def monitored(self, step: _Step, stream: str):
        """(batch index, request, first row, end row, first position) of each monitored request's unsent rows."""
        for i, (rid, a, b, pos) in enumerate(step.rows):
            req = self.requests.get(rid)
            if req is None or b <= a:
                continue
            skip = max(0, req.sent.get(stream, 0) - pos)  # recomputed after preemption: sent already
            if skip >= b - a:
                continue
            req.sent[stream] = pos + b - a
            yield i, req, a + skip, b, pos + skip

    # -- the residual stream -----------------------------------------------------------------------

    def _read_ids(self, module, args) -> None:
        """The ids the embedding is about to read, copied to the host without waiting: the
        residual hook's copy comes later on the same stream, so its event covers this one."""
        if not self.requests or not args:
            return
        step = self.step()
        if step is None or not isinstance(args[0], torch.Tensor) or args[0].dim() != 1:
            return
        try:
            ids = args[0][: step.n_tokens]  # the runner's buffer: the next step overwrites it
            step.ids = ids.clone() if ids.device.type == "cpu" else _to_host(ids, record=False)[0]
        except Exception:  # noqa: BLE001 - the monitor never fails a forward
            self.hook_errors += 1
            log.exception("latentwatch: token id capture failed")

    def _residual_hook(self, name: str):
        def hook(module, args, output) -> None:
            if not self.requests:
                return
            step = self.step()
            if step is None:
                return
            try:
                parts = list(self.monitored(step, name))
                if not parts:
                    return
                hidden, residual = output
                n = step.n_tokens
                summed = torch.add(hidden[:n], residual[:n])  # the one copy: residual stream of scheduled rows
                host, ready = _to_host(summed)
                for _, req, a, b, pos in parts:
                    ids = step.ids[a:b] if step.ids is not None else ()
                    self.client.send_chunk(req.public_id, name, pos, host[a:b], ready, ids=ids)
            except Exception:  # noqa: BLE001 - the monitor never fails a forward
                self.hook_errors += 1
                log.exception("latentwatch: residual capture failed")

        return hook

    def _steer_hook(self, name: str):
        def hook(module, args, output) -> None:
            if not self.edits:
                return
            step = self.step()
            if step is None:
                return
            try:
                hidden, residual = output
                for rid, a, b, _ in step.rows:
                    req = self.requests.get(rid)
                    edit = self.edits.get(req.public_id) if req is not None else None
                    if edit is None or edit.hook_name != name or b <= a:
                        continue
                    norm = torch.add(hidden[a:b], residual[a:b]).float().norm(dim=-1, keepdim=True)
                    hidden[a:b] += (edit.strength * norm * edit.direction.to(norm.device)).to(hidden.dtype)
                    self.steered_rows += b - a
            except Exception:  # noqa: BLE001 - the monitor never fails a forward
                self.hook_errors += 1
                log.exception("latentwatch: steering failed")

        return hook

    def stats(self) -> dict:
        """Counters for operators and tests (plain ints: read without a lock)."""
        return {
            "requests": len(self.requests),
            "dropped": self.client.dropped,
            "dropped_control": self.client.dropped_control,
            "rejected": self.client.rejected,
            "connected": self.client.connected,
            "prefix_cached_positions": self.prefix_cached_positions,
            "hook_errors": self.hook_errors,
            "steered_rows": self.steered_rows,
            "lookback_heads": list(self.settings.heads) if self.lookback else [],
        }


def _to_host(t: torch.Tensor, record: bool = True) -> tuple[torch.Tensor, object]:
    """``t`` in host memory, and the event that marks the copy complete (None on CPU,
    or when ``record`` is False because a later copy's event will cover this one).

    From a GPU the copy is asynchronous into pinned memory, so the forward does
    not wait for it; the sender thread waits on the event before serialising.
    """
    if t.device.type == "cpu":
        return t, None
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t, non_blocking=True)
    if not record:
        return host, None
    event = torch.cuda.Event()
    event.record()
    return host, event


def _decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(f"latentwatch: {type(model).__name__} has no model.layers; this architecture is not supported")
    return layers


def _layer(layers: torch.nn.ModuleList, i: int) -> torch.nn.Module:
    if not 0 <= i < len(layers):
        raise ValueError(f"latentwatch: layer {i} is outside this model ({len(layers)} layers)")
    layer = layers[i]
    if type(layer).__name__ == "PPMissingLayer":
        raise ValueError(f"latentwatch: layer {i} is on another pipeline stage; pipeline parallelism is not supported")
    return layer


class _Lookback:
    """Lookback ratios of chosen heads from the query and a paged shadow of their keys."""

    def __init__(self, capture: _Capture, layers: torch.nn.ModuleList, heads: tuple[str, ...]):
        self.capture = capture
        self.names = list(heads)
        self.heads = parse_heads(list(heads))
        runner = capture.runner
        self.block_table = runner.input_batch.block_table.block_tables[0]
        self.block_size = int(self.block_table.block_size)
        self.capacity = int(runner.kv_cache_config.num_blocks) * int(runner.cache_config.block_size)
        self.by_layer: dict[int, list[int]] = {}
        for j, h in enumerate(self.heads):
            self.by_layer.setdefault(h.layer, []).append(j)
        self.last_layer = max(self.by_layer)
        self.keys: dict[int, torch.Tensor] = {}  # layer -> [slots, chosen kv heads, head_dim]
        self.kv_of: dict[int, list[int]] = {}  # layer -> per chosen head, its column in keys[layer]
        self.pending: dict[str, list[torch.Tensor | None]] = {}  # request -> per head, this step's ratios
        for layer_idx, cols in self.by_layer.items():
            attn = _layer(layers, layer_idx).self_attn.attn
            for j in cols:
                if not 0 <= self.heads[j].head < attn.num_heads:
                    raise ValueError(
                        f"latentwatch: head {self.heads[j]} is not on this rank ({attn.num_heads} heads here; "
                        "with tensor parallelism choose heads of rank 0)"
                    )
            group = attn.num_heads // attn.num_kv_heads
            kv = sorted({self.heads[j].head // group for j in cols})
            self.kv_of[layer_idx] = [kv.index(self.heads[j].head // group) for j in cols]
            attn.register_forward_pre_hook(self._hook(layer_idx, attn, kv))

    def _slots(self, step: _Step) -> np.ndarray:
        """The KV slot of each scheduled token (as vLLM's slot mapping computes it)."""
        if step.slots is None:
            slots = np.empty(step.n_tokens, dtype=np.int64)
            table = self.block_table.block_table.np
            for i, (_, a, b, pos) in enumerate(step.rows):
                p = np.arange(pos, pos + b - a)
                slots[a:b] = table[i, p // self.block_size] * self.block_size + p % self.block_size
            step.slots = slots
        return step.slots

    def _request_slots(self, row: int, length: int) -> np.ndarray:
        p = np.arange(length)
        return self.block_table.block_table.np[row, p // self.block_size] * self.block_size + p % self.block_size

    def _hook(self, layer_idx: int, attn, kv: list[int]):
        cols = self.by_layer[layer_idx]
        q_heads = [self.heads[j].head for j in cols]
        kv_cols = self.kv_of[layer_idx]
        hd = attn.head_size

        def hook(module, args) -> None:
            capture = self.capture
            step = capture.step()
            if step is None:
                return
            try:
                query, key = args[0], args[1]
                n = step.n_tokens
                k = key[:n].view(n, -1, hd)[:, kv]  # [n, chosen kv heads, hd]
                store = self.keys.get(layer_idx)
                if store is None:
                    store = self.keys[layer_idx] = k.new_zeros(self.capacity, len(kv), hd)
                slots = self._slots(step)
                store[torch.from_numpy(slots).to(store.device)] = k  # every request's keys, monitored or not
                if not capture.requests:
                    return
                q = query[:n].view(n, -1, hd)[:, q_heads]  # [n, chosen heads of this layer, hd]
                for i, req, a, b, pos in capture.monitored(step, f"lookback{layer_idx}"):
                    if req.context is None:
                        continue
                    seq = pos + b - a
                    keys = store[torch.from_numpy(self._request_slots(i, seq))]
                    ratios = lookback_ratios(
                        q[a:b], keys[:, kv_cols], pos, req.context, req.response_start, attn.impl.scale
                    )
                    per_head = self.pending.setdefault(req.public_id, [None] * len(self.heads))
                    for c, j in enumerate(cols):
                        per_head[j] = ratios[:, c]
                    if layer_idx == self.last_layer:
                        done = self.pending.pop(req.public_id)
                        if all(r is not None for r in done):
                            host, ready = _to_host(torch.stack(done, 1))
                            capture.client.send_attention(req.public_id, pos, self.names, host, ready)
            except Exception:  # noqa: BLE001 - the monitor never fails a forward
                capture.hook_errors += 1
                log.exception("latentwatch: lookback failed")

        return hook


class LatentwatchWorkerExtension:
    """Mixed into vLLM's worker class (``--worker-extension-cls``); the plugin calls
    ``latentwatch_install`` once the model and KV cache exist."""

    def latentwatch_install(self) -> bool:
        """Install the hooks on global rank 0 when configured; True when capture is on."""
        settings = Settings.load()
        if settings is None or getattr(self, "rank", 0) != 0 or getattr(self, "_latentwatch", None) is not None:
            return False
        self._latentwatch = _Capture(self, settings)
        log.info(
            "latentwatch: capturing %s%s for %s",
            settings.hook_names,
            f" and lookback heads {list(settings.heads)}" if settings.heads else "",
            settings.sidecar,
        )
        return True

    def latentwatch_stats(self) -> dict | None:
        """Capture counters of this worker (None where nothing is captured), via ``collective_rpc``."""
        capture = getattr(self, "_latentwatch", None)
        return None if capture is None else capture.stats()
