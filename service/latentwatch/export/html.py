"""The self-contained HTML pages latentwatch writes (``inspect``, ``explain-alert``):
one page skeleton and one way to shade a token, so every page reads alike."""

from __future__ import annotations

import html

STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto}"
    "div.t{font-family:monospace;white-space:pre-wrap;line-height:1.8}"
    "span.expected{outline:1px dashed #555}"
    "table{border-collapse:collapse}td,th{padding:0 .6em;text-align:left}"
)


def shade(token: str, strength: float, title: str = "", negative: bool = False, **attrs: str) -> str:
    """A token on a background whose opacity is ``strength`` (0..1): red for what
    pushed a score up, blue for what pulled it down."""
    rgb = "40,90,220" if negative else "220,60,40"
    extra = "".join(f' {k.rstrip("_").replace("_", "-")}="{html.escape(v)}"' for k, v in attrs.items())
    return (
        f'<span title="{html.escape(title)}" style="background: rgba({rgb},{min(max(strength, 0.0), 1.0):.2f})"'
        f"{extra}>{html.escape(token)}</span>"
    )


def page(title: str, body: str) -> str:
    return f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style>{body}"
