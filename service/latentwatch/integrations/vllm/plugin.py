"""vLLM general plugin: wires latentwatch into an unmodified ``vllm serve``.

vLLM loads every ``vllm.general_plugins`` entry point in each of its
processes (API server, engine core, workers). ``register`` reads the settings
and, when a sidecar is configured, only connects vLLM's extension points; the
hooks themselves live in ``latentwatch.integrations.vllm.worker``. Without settings it does
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

from latentwatch.integrations.vllm.settings import CONTEXT_KEY, OPT_OUT_KEY, PROMPT_LEN_KEY, SPANS_KEY, Settings, once

log = logging.getLogger(__name__)

WORKER_EXTENSION = "latentwatch.integrations.vllm.worker.LatentwatchWorkerExtension"


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
            from latentwatch.integrations.vllm.abort import patch_generate

            patch_generate(settings)


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

    once(EngineArgs, "create_engine_config", make)


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

    once(WorkerWrapperBase, "initialize_from_config", make)


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

    once(OpenAIServingChat, "create_chat_completion", make)


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _add_spans(serving, request) -> None:
    """Compute the prompt's span roles the way ``latentwatch.capture.chat`` does and put them in ``vllm_xargs``.

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
    from latentwatch.capture.chat import tokenize_chat

    tokenizer = _tokenizer(serving.model_config.tokenizer)
    passage = xargs.get(CONTEXT_KEY)
    ct = tokenize_chat(tokenizer, messages, passage_text=passage if isinstance(passage, str) and passage else None)
    xargs[SPANS_KEY] = [int(x) for s in ct.spans for x in (s.role, s.start, s.end)]
    xargs[PROMPT_LEN_KEY] = len(ct.input_ids)
    request.vllm_xargs = xargs
