"""vLLM general plugin: wires latentwatch into an unmodified ``vllm serve``.

vLLM loads every ``vllm.general_plugins`` entry point in each of its
processes (API server, engine core, workers). ``register`` reads the settings
and, when a sidecar is configured, only connects vLLM's extension points; the
hooks themselves live in ``latentwatch.vllm_worker``. Without settings it does
nothing, so installing ``latentwatch[vllm]`` never changes a server by itself.

What it wires:
- engine config: names ``LatentwatchWorkerExtension`` as the worker extension
  (unless another one is set) and forces eager mode, because the capture is
  Python forward hooks, which CUDA graphs and torch.compile would bypass; the
  V1 model runner is pinned, whose batch layout the hooks read;
- workers: once the model and KV cache exist, the extension installs its hooks;
- API server: chat requests get their span roles computed from the messages
  (``vllm_xargs``: ``latentwatch_spans``), and, when detectors are named in
  ``abort``, their alerts abort the request, with the reason in the choice's
  ``stop_reason``.

Per-request keys the client may put in ``vllm_xargs``:
``latentwatch: "off"`` (opt out), ``latentwatch_context: "<passage text>"``
(the retrieved context inside a message; its tokens get the CONTEXT role).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

WORKER_EXTENSION = "latentwatch.vllm_worker.LatentwatchWorkerExtension"
OPT_OUT_KEY = "latentwatch"  # vllm_xargs {"latentwatch": "off"}
CONTEXT_KEY = "latentwatch_context"
SPANS_KEY = "latentwatch_spans"  # flat [role, start, end, ...], filled in by the API server
PROMPT_LEN_KEY = "latentwatch_prompt_len"  # the prompt length those spans were computed for


@dataclass(frozen=True)
class Settings:
    """Where the sidecar is and what to capture (env ``LATENTWATCH_VLLM_*`` over a YAML file)."""

    sidecar: str
    layers: tuple[int, ...]
    heads: tuple[str, ...] = ()
    abort: tuple[str, ...] = ()  # detectors whose alerts abort the request
    max_buffer: int = 4096  # buffered chunks before the sender drops and counts

    @property
    def hook_names(self) -> list[str]:
        """The sidecar's names for the captured layers (HF module paths)."""
        return [f"model.layers.{i}" for i in self.layers]

    @classmethod
    def load(cls, environ: dict[str, str] | None = None) -> Settings | None:
        """The configured settings, or None when no sidecar is named (the plugin stays off).

        ``LATENTWATCH_VLLM_CONFIG`` names a YAML file with the keys ``sidecar``,
        ``layers``, ``heads``, ``abort``, ``max_buffer``; each
        ``LATENTWATCH_VLLM_<KEY>`` variable overrides its key (lists comma-separated).
        """
        env = os.environ if environ is None else environ
        values: dict = {}
        if env.get("LATENTWATCH_VLLM_CONFIG"):
            import yaml

            path = Path(env["LATENTWATCH_VLLM_CONFIG"])
            loaded = yaml.safe_load(path.read_text()) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"{path}: expected a mapping of sidecar, layers, heads, abort, max_buffer")
            values.update(loaded)
        for key in ("sidecar", "layers", "heads", "abort", "max_buffer"):
            if env.get(f"LATENTWATCH_VLLM_{key.upper()}"):
                values[key] = env[f"LATENTWATCH_VLLM_{key.upper()}"]
        unknown = set(values) - {"sidecar", "layers", "heads", "abort", "max_buffer"}
        if unknown:
            raise ValueError(f"unknown latentwatch vLLM settings {sorted(unknown)}")
        if not values.get("sidecar"):
            return None
        layers = tuple(int(x) for x in _items(values.get("layers")))
        if not layers:
            raise ValueError("LATENTWATCH_VLLM_LAYERS must name the decoder layers to capture, e.g. 12,20")
        from latentwatch.lookback import parse_heads

        heads = tuple(str(h) for h in parse_heads(_items(values.get("heads"))))
        return cls(
            sidecar=str(values["sidecar"]),
            layers=layers,
            heads=heads,
            abort=tuple(_items(values.get("abort"))),
            max_buffer=int(values.get("max_buffer", cls.max_buffer)),
        )


def _items(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [x.strip() for x in value.split(",") if x.strip()]
    return [str(x) for x in value]


def register() -> None:
    """The ``vllm.general_plugins`` entry point: wire up when configured, else do nothing."""
    settings = Settings.load()
    if settings is None:
        return
    _patch_engine_args()
    _patch_worker_startup()
    if multiprocessing.parent_process() is None:  # the API server's process (or an offline LLM's)
        _patch_chat_spans()
        if settings.abort:
            from latentwatch.vllm_abort import patch_generate

            patch_generate(settings)


def _once(obj, name: str, make) -> None:
    """Replace ``obj.name`` by ``make(original)`` unless this plugin already did."""
    original = getattr(obj, name)
    if getattr(original, "__latentwatch__", False):
        return
    wrapped = make(original)
    wrapped.__latentwatch__ = True
    setattr(obj, name, wrapped)


def _patch_engine_args() -> None:
    from vllm.engine.arg_utils import EngineArgs

    def make(original):
        @functools.wraps(original)
        def create_engine_config(self, *args, **kwargs):
            if self.worker_extension_cls and self.worker_extension_cls != WORKER_EXTENSION:
                log.error(
                    "latentwatch: another worker extension (%s) is set; capture stays off", self.worker_extension_cls
                )
            else:
                self.worker_extension_cls = WORKER_EXTENSION
                if not self.enforce_eager:
                    log.warning("latentwatch: capture uses Python forward hooks; enabling --enforce-eager")
                self.enforce_eager = True
                os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
            return original(self, *args, **kwargs)

        return create_engine_config

    _once(EngineArgs, "create_engine_config", make)


def _patch_worker_startup() -> None:
    """Install the hooks once a worker has its model and KV cache."""
    from vllm.v1.worker.worker_base import WorkerWrapperBase

    def make(original):
        @functools.wraps(original)
        def initialize_from_config(self, *args, **kwargs):
            out = original(self, *args, **kwargs)
            install = getattr(self.worker, "latentwatch_install", None)
            if install is not None:
                try:
                    install()
                except Exception:  # noqa: BLE001 - the monitor never stops the model server
                    log.exception("latentwatch: installing the capture hooks failed; serving without capture")
            return out

        return initialize_from_config

    _once(WorkerWrapperBase, "initialize_from_config", make)


def _patch_chat_spans() -> None:
    """Chat requests carry their span roles to the worker in ``vllm_xargs``."""
    from vllm.entrypoints.openai.chat_completion.serving import OpenAIServingChat

    def make(original):
        @functools.wraps(original)
        async def create_chat_completion(self, request, raw_request=None):
            try:
                _add_spans(self, request)
            except Exception:  # noqa: BLE001 - spans are best effort; the worker falls back
                log.debug("latentwatch: no spans for this chat request", exc_info=True)
            return await original(self, request, raw_request)

        return create_chat_completion

    _once(OpenAIServingChat, "create_chat_completion", make)


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _add_spans(serving, request) -> None:
    """Compute the prompt's span roles the way ``latentwatch.chat`` does and put them in ``vllm_xargs``.

    The worker trusts them only when ``latentwatch_prompt_len`` equals the
    prompt it sees (a request with tools, template options or multimodal
    parts may render differently); otherwise the whole prompt counts as user.
    """
    xargs = dict(request.vllm_xargs or {})
    if str(xargs.get(OPT_OUT_KEY, "")).lower() == "off" or SPANS_KEY in xargs:
        return
    messages = []
    for m in request.messages:
        content = m.get("content")
        if not isinstance(content, str):
            return  # content parts, tool calls: rendered by vLLM's own rules; the worker falls back
        messages.append({"role": m["role"], "content": content})
    if request.tools or request.chat_template_kwargs or not request.add_generation_prompt:
        return
    from latentwatch.chat import tokenize_chat

    tokenizer = _tokenizer(serving.model_config.tokenizer)
    passage = xargs.get(CONTEXT_KEY)
    ct = tokenize_chat(tokenizer, messages, passage_text=passage if isinstance(passage, str) and passage else None)
    xargs[SPANS_KEY] = [int(x) for s in ct.spans for x in (s.role, s.start, s.end)]
    xargs[PROMPT_LEN_KEY] = len(ct.input_ids)
    request.vllm_xargs = xargs
