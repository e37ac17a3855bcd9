"""What an alert may carry of the monitored text.

Prompts and answers can hold personal data, and alerts travel further than the model server's
own logs (Redis consumers, SQLite files, every WatchAlerts client). So the sidecar keeps the
text a client sends only when ``alert_text`` asks for it, and turns it into an alert's ``text``
here, once, before any sink sees the alert:

- ``none`` (the default): alerts carry no text and the sidecar does not even keep it; the
  request id joins an alert to the model server's records, under that server's retention rules.
- ``hashed``: ``sha256:<hex>`` of the flagged tokens' text, to group alerts on identical text
  without storing it. An unsalted hash of a short text can be confirmed by guessing it, so this
  hides text from casual reading, not from someone who can guess candidate texts.
- ``full``: the text itself, cut at ``EXCERPT_MAX_CHARS``.

An alert's attribution names token positions always, and each token's own text
only under ``full``: one token's hash would be guessed at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from latentwatch.detectors.base import Attribution

ALERT_TEXT_MODES = ("none", "hashed", "full")
EXCERPT_MAX_CHARS = 2000


def check_mode(mode: str) -> str:
    if mode not in ALERT_TEXT_MODES:
        raise ValueError(f"alert_text must be one of {', '.join(ALERT_TEXT_MODES)}, not {mode!r}")
    return mode


def redact(pieces: list[str], mode: str) -> str:
    """The alert's ``text`` for the flagged tokens' pieces under ``mode`` ("" when nothing was sent)."""
    text = "".join(pieces) if mode != "none" else ""
    if not text:
        return ""
    if mode == "hashed":
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text if len(text) <= EXCERPT_MAX_CHARS else text[: EXCERPT_MAX_CHARS - 1] + "…"


def attributed(attribution: list[Attribution], text: dict[int, str], mode: str) -> list[Attribution]:
    """``attribution`` with each token's text filled in as ``mode`` allows (only ``full`` does)."""
    if mode != "full":
        return [replace(a, text="") for a in attribution]
    return [replace(a, text=text.get(a.position, "")) for a in attribution]
