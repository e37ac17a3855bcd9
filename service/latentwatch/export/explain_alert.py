"""``latentwatch explain-alert ALERT_ID``: the tokens behind one alert.

An alert carries its score's attribution: the positions of the tokens that
carried the score, each with its exact share of the probe's logit (and, for an
absence rule, the window where the expected signal was looked for). This module
finds the alert where the sidecar put it (the SQLite file, or the Redis stream)
and shows those tokens highlighted, in the terminal and as a self-contained
HTML page. Token text appears only where the sidecar's ``alert_text: full``
let the alert carry it; otherwise the view shows positions.
"""

from __future__ import annotations

import html
import sqlite3
from pathlib import Path

from latentwatch.detectors.records import AlertRecord
from latentwatch.export.html import page, shade
from latentwatch.export.sinks import RedisStreamSink

MIN_PREFIX = 8  # characters of an alert id that may stand for the whole id
TOP = 5  # tokens the summary lists


class AlertNotFound(ValueError):
    """No alert (or more than one) matches the id; the message says where it looked."""


def _match(alert_id: str, candidates: list[str], where: str) -> str:
    hits = [a for a in candidates if a == alert_id] or [a for a in candidates if a.startswith(alert_id)]
    if len(alert_id) < MIN_PREFIX and not any(a == alert_id for a in candidates):
        raise AlertNotFound(f"give at least {MIN_PREFIX} characters of the alert id, not {alert_id!r}")
    if not hits:
        raise AlertNotFound(f"no alert {alert_id!r} in {where}")
    if len(set(hits)) > 1:
        raise AlertNotFound(f"{len(set(hits))} alerts in {where} start with {alert_id!r}; give more of the id")
    return hits[0]


def from_sqlite(path: Path, alert_id: str) -> AlertRecord:
    """The alert with this id (or unique id prefix) in a sidecar's SQLite file."""
    if not path.exists():
        raise AlertNotFound(f"no SQLite alert file at {path}")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        ids = [r[0] for r in db.execute("SELECT alert_id FROM alerts WHERE alert_id LIKE ?", (alert_id + "%",))]
        chosen = _match(alert_id, ids, f"the SQLite file {path}")
        cur = db.execute("SELECT * FROM alerts WHERE alert_id = ?", (chosen,))
        row = dict(zip([c[0] for c in cur.description], cur.fetchone(), strict=True))
    finally:
        db.close()
    # The stream's field parser reads a row alike: every value as text, JSON fields as JSON.
    return RedisStreamSink.parse({k: str(v) for k, v in row.items() if v is not None})


def from_redis(client, stream: str, alert_id: str, batch: int = 1000) -> AlertRecord:
    """The alert with this id (or unique id prefix) in a Redis stream, newest first
    (the stream is capped by MAXLEN, so the scan is bounded)."""
    found: dict[str, dict[str, str]] = {}
    end = "+"
    while True:
        entries = client.xrevrange(stream, max=end, min="-", count=batch)
        for _, fields in entries:
            if fields.get("alert_id", "").startswith(alert_id):
                found.setdefault(fields["alert_id"], fields)
        if len(entries) < batch:
            break
        end = "(" + entries[-1][0]
    chosen = _match(alert_id, list(found), f"the Redis stream {stream}")
    return RedisStreamSink.parse(found[chosen])


def _token(a) -> str:
    return a.text if a.text else f"⟨{a.position}⟩"


def _summary(alert: AlertRecord) -> list[str]:
    lines = [
        f"alert {alert.alert_id}: {alert.detector} {alert.score:.3f} (threshold {alert.threshold:.3f}) "
        f"on model {alert.model_id or '?'}, request {alert.request_id}, tokens {alert.token_start}-{alert.token_end}",
    ]
    if alert.explanation:
        lines.append(alert.explanation)
    for e in alert.evidence:
        lines.append(f"  latent {e.sae_id}/{e.index}{' (missing)' if e.missing else ''}: '{e.label or '?'}'")
    return lines


def top_tokens(alert: AlertRecord, n: int = TOP) -> list:
    """The attributed tokens that pushed the score up most, strongest first."""
    return sorted(
        (a for a in alert.attribution if not a.expected and a.contribution > 0), key=lambda a: -a.contribution
    )[:n]


def render_terminal(alert: AlertRecord, color: bool = True) -> str:
    """The alert, then its attributed tokens in position order (red: pushed the score
    up, blue: down, underlined: where an absence rule expected its signal), then the top few."""
    if not alert.attribution:
        return "\n".join([*_summary(alert), "(this alert carries no token attribution)"])
    peak = max(abs(a.contribution) for a in alert.attribution) or 1.0
    pieces = []
    for a in alert.attribution:
        tok = _token(a)
        if not color:
            pieces.append(f"[{tok}|{a.contribution:+.2f}]" if a.contribution else (f"_{tok}_" if a.expected else tok))
            continue
        level = min(5, int(6 * abs(a.contribution) / peak))
        bg = (52, 88, 124, 160, 196, 196)[level] if a.contribution > 0 else (17, 18, 19, 20, 21, 21)[level]
        style = f"\x1b[48;5;{bg}m" if level else ""
        pieces.append(f"{style}{chr(27) + '[4m' if a.expected else ''}{tok}\x1b[0m")
    lines = [*_summary(alert), "", "".join(pieces), "", "top tokens (position: share of the score's logit):"]
    for a in top_tokens(alert):
        lines.append(f"  {a.position:>6}: {a.contribution:+.3f}" + (f"  {a.text!r}" if a.text else ""))
    return "\n".join(lines)


def render_html(alert: AlertRecord) -> str:
    """A self-contained page of the alert's attributed tokens, shaded by their share."""
    peak = max((abs(a.contribution) for a in alert.attribution), default=1.0) or 1.0
    spans = [
        shade(
            _token(a),
            abs(a.contribution) / peak,
            f"position {a.position}: {a.contribution:+.3f}" + (" (expected signal window)" if a.expected else ""),
            negative=a.contribution < 0,
            class_="tok expected" if a.expected else "tok",
            data_position=str(a.position),
            data_contribution=f"{a.contribution:.4f}",
        )
        for a in alert.attribution
    ]
    head, *rest = _summary(alert)
    top = "".join(
        f"<tr class='top'><td>{a.position}</td><td>{a.contribution:+.3f}</td><td>{html.escape(_token(a))}</td></tr>"
        for a in top_tokens(alert)
    )
    body = (
        f"<h1>{html.escape(alert.detector)} alert</h1><p>{html.escape(head)}</p>"
        + "".join(f"<p>{html.escape(line)}</p>" for line in rest)
        + f"<div class='t'>{''.join(spans) or '(no token attribution)'}</div>"
        + "<p>Red: pushed the score up; blue: pulled it down; dashed: where the expected signal was looked for.</p>"
        + f"<table><tr><th>position</th><th>share of logit</th><th>token</th></tr>{top}</table>"
    )
    return page(f"latentwatch alert {alert.alert_id}", body)
