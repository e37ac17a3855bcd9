"""Turn chat messages into token ids plus span roles.

Detectors need to know which tokens are the user's, the retrieved context's
and the response's. The chat template is rendered to text, each message's
content is located in it, and tokenizer offsets map characters to tokens.
Anything not inside a message's content is template scaffolding.
"""

from __future__ import annotations

from dataclasses import dataclass

from latentwatch.detectors.base import Span
from latentwatch.v1 import monitor_pb2 as pb

_ROLE_OF = {"system": pb.SPAN_ROLE_SYSTEM, "user": pb.SPAN_ROLE_USER, "assistant": pb.SPAN_ROLE_RESPONSE}
CONTEXT_HEADER = "Context:\n"


@dataclass
class ChatTokens:
    input_ids: list[int]
    spans: list[Span]
    prompt_length: int  # tokens before the response (the generation prompt included)


def with_context(messages: list[dict], context: str | None) -> tuple[list[dict], str | None]:
    """Put retrieved context at the head of the last user turn."""
    if not context:
        return messages, None
    messages = [dict(m) for m in messages]
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    messages[last_user]["content"] = f"{CONTEXT_HEADER}{context}\n\n{messages[last_user]['content']}"
    return messages, context


def tokenize_chat(
    tokenizer,
    messages: list[dict],
    context: str | None = None,
    response: str | None = None,
    passage_text: str | None = None,
) -> ChatTokens:
    """Token ids and spans of a transcript; ``response`` becomes the assistant turn.

    Retrieved context is marked in one of two ways: ``context`` is placed at the
    head of the last user turn (under ``CONTEXT_HEADER``, the layout of the
    scoring input), or ``passage_text`` names text the caller already put in a
    system or user message (a serving client's own RAG layout): its first
    occurrence becomes the CONTEXT span and the rest of that message keeps the
    message's role.
    """
    if context and passage_text:
        raise ValueError("give retrieved context either as `context` or as `passage_text`, not both")
    messages, ctx = with_context(messages, context)
    if response is not None:
        if messages and messages[-1]["role"] == "assistant":
            raise ValueError("give the response either as the last assistant message or as `response`, not both")
        messages = messages + [{"role": "assistant", "content": response}]
    has_response = bool(messages) and messages[-1]["role"] == "assistant"
    prompt_msgs = messages[:-1] if has_response else messages
    prompt_text = tokenizer.apply_chat_template(prompt_msgs, tokenize=False, add_generation_prompt=True)
    text = prompt_text
    if has_response:
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        if not full.startswith(prompt_text):  # templates that do not extend the generation prompt
            raise ValueError("the chat template's transcript does not extend its generation prompt")
        text = full
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    prompt_length = sum(1 for _, e in offsets if e <= len(prompt_text))

    char_spans: list[tuple[int, int, int]] = []
    cursor = 0
    for m in messages:
        content = m["content"]
        at = text.find(content, cursor) if content else -1
        if at < 0:
            continue
        cursor = at + len(content)
        role = _ROLE_OF.get(m["role"], pb.SPAN_ROLE_USER)
        passage = passage_text or (CONTEXT_HEADER + ctx if ctx else None)
        inside = content.find(passage) if passage and m["role"] in ("user", "system") else -1
        if inside >= 0:
            c0 = at + inside + (0 if passage_text else len(CONTEXT_HEADER))
            c1 = at + inside + len(passage)
            char_spans.append((pb.SPAN_ROLE_TEMPLATE if not passage_text else role, at, c0))
            char_spans.append((pb.SPAN_ROLE_CONTEXT, c0, c1))
            char_spans.append((role, c1, cursor))
            passage_text = ctx = None  # only the first occurrence is the retrieved context
        else:
            char_spans.append((role, at, cursor))

    # The scaffolding between the last prompt message and the response (e.g.
    # "<|im_end|>\n<|im_start|>assistant\n") is where a chat model encodes what it
    # makes of the request; prompt-side detectors may read it as ``template``.
    prompt_ends = [c1 for _, _, c1 in char_spans if c1 <= len(prompt_text)]
    if prompt_ends and max(prompt_ends) < len(prompt_text):
        char_spans.append((pb.SPAN_ROLE_TEMPLATE, max(prompt_ends), len(prompt_text)))

    spans = []
    for role, c0, c1 in char_spans:
        toks = [t for t, (s, e) in enumerate(offsets) if s < c1 and e > c0]
        if toks:
            spans.append(Span(role=role, start=toks[0], end=toks[-1] + 1))
    return ChatTokens(input_ids=list(enc["input_ids"]), spans=spans, prompt_length=prompt_length)
