"""``absence``: "A fired, so B was expected; B never came" as a detector.

Monitoring what did *not* happen: once the ``trigger`` detector has fired,
the ``expected`` detector must fire within the first ``within_tokens`` tokens
of the ``watch_role`` span (e.g. a refusal within the first 24 response
tokens). If that many tokens pass, or the request ends, without it, the rule
holds and the detector flags, naming what fired (the trigger's latents) and
what was expected and missing (the latents the expected detector looks for
that did not carry its score, marked ``missing``).

Parameters: ``trigger`` and ``expected`` (detector names; the trigger may
also be ``span:ROLE``, satisfied when the request declares a non-empty span
of that role, e.g. ``span:context`` for "context was supplied"),
``within_tokens`` (default 24), ``watch_role`` (default ``response``).

Attribution: the trigger's tokens with their shares, plus the positions of the
window where the expected signal was looked for (marked ``expected``).

Score: ``0.5 + 0.5 * min(trigger margin, absence margin)``, each margin
normalised to [-1, 1] around its detector's threshold, so the score is 0.5
exactly where the rule starts to hold, grows as the trigger is surer and the
expected signal further below its threshold, and ranks requests for AUROC.
The spec's threshold is therefore 0.5; it is not calibrated separately (the
rule's false-positive rate follows from its two inputs' thresholds).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from latentwatch.detectors.base import Attribution, Detector, Score, Span, TokenRows, Upstream, role_id
from latentwatch.detectors.kinds import register


@dataclass
class _State:
    trigger_span: Span | None  # for ``span:ROLE`` triggers: the declared span, if any
    watched: int = 0  # tokens of the watched role seen so far
    last_position: int = -1
    watch_start: int = -1


def _margin(value: float, threshold: float) -> float:
    """Distance above the threshold, scaled so 1 is certainty and -1 is zero."""
    if value >= threshold:
        return (value - threshold) / max(1.0 - threshold, 1e-9)
    return (value - threshold) / max(threshold, 1e-9)


@dataclass(frozen=True)
class Params:
    trigger: str  # a detector name, or span:ROLE
    expected: str  # the detector that should fire once the trigger has
    within_tokens: int = 24
    watch_role: str = "response"


@register
class Absence(Detector):
    kind = "absence"
    Params = Params

    def __init__(self, spec, sae):
        super().__init__(spec, sae)
        p = self.params
        self.trigger = p.trigger
        self.expected = p.expected
        self.trigger_role = None
        if self.trigger.startswith("span:"):
            self.trigger_role = role_id(spec, self.trigger.removeprefix("span:"))
        self.within = p.within_tokens
        self.watch_role = role_id(spec, p.watch_role)

    @classmethod
    def required_by(cls, spec) -> list[str]:
        p = cls.parse_params(spec)
        return [n for n in (p.trigger, p.expected) if not n.startswith("span:")]

    def new_state(self, spans: list[Span]) -> _State:
        declared = [s for s in spans if s.role == self.trigger_role and s.end > s.start]
        return _State(trigger_span=declared[0] if declared else None)

    def _trigger(self, state: _State, upstream: dict[str, Upstream]) -> Upstream:
        """The trigger as an upstream view; a declared span is a trigger that fired with certainty."""
        if self.trigger_role is None:
            return upstream[self.trigger]
        span = state.trigger_span
        score = Score(1.0, span.start, span.end) if span else None
        return Upstream(self.trigger, 0.5, score, fired=span is not None, signature=[])

    def observe(self, state: _State, rows: TokenRows, upstream: dict[str, Upstream]) -> None:
        # Several layers send the same positions; count each watched position once.
        new = (rows.roles == self.watch_role) & (rows.positions > state.last_position)
        if new.any():
            if state.watch_start < 0:
                state.watch_start = int(rows.positions[new][0])
            state.watched += int(new.sum())
            state.last_position = int(rows.positions[new][-1])

    def score(self, state: _State, final: bool, upstream: dict[str, Upstream]) -> Score | None:
        trig, exp = self._trigger(state, upstream), upstream[self.expected]
        if state.watched == 0:
            return None  # the watched span never came (e.g. a prompt scored alone): nothing was absent
        if not final and (state.watched < self.within or not trig.fired):
            return None  # undecided: the expected signal may still come
        if trig.score is None:
            if self.trigger_role is not None:
                return None  # no such span declared: the rule does not apply to this request
            return Score(value=0.0, token_start=0, token_end=0, explanation=f"{self.trigger} did not run")
        exp_value = exp.score.value if exp.score is not None else 0.0
        value = 0.5 + 0.5 * min(_margin(trig.score.value, trig.threshold), -_margin(exp_value, exp.threshold))
        value = min(max(value, 0.0), 1.0)
        if exp.fired:
            value = min(value, 0.49)  # the expected signal came: the rule does not hold
        start = state.watch_start if state.watch_start >= 0 else trig.score.token_start
        end = state.last_position + 1 if state.last_position >= 0 else trig.score.token_end
        # Missing: latents the expected detector looks for that did not carry its best score.
        seen = {(e.sae_id, e.index) for e in (exp.score.evidence if exp.score else [])}
        missing = [replace(e, missing=True) for e in exp.signature if (e.sae_id, e.index) not in seen]
        fired = (
            f"{self.trigger.removeprefix('span:')} supplied"
            if self.trigger_role is not None
            else f"{self.trigger} fired ({trig.score.value:.2f} >= {trig.threshold:.2f})"
        )
        explanation = (
            f"{fired} on tokens {trig.score.token_start}-{trig.score.token_end}; {self.expected} was expected within "
            f"{self.within} tokens and stayed absent (score {exp_value:.2f} < {exp.threshold:.2f})"
            if value >= 0.5
            else f"rule does not hold: {self.trigger} {trig.score.value:.2f} (threshold {trig.threshold:.2f}), "
            f"{self.expected} {exp_value:.2f} (threshold {exp.threshold:.2f})"
        )
        holds = value >= 0.5
        window = [Attribution(p, 0.0, expected=True) for p in range(start, min(end, start + self.within))]
        return Score(
            value=value,
            token_start=start,
            token_end=end,
            evidence=[*trig.score.evidence, *missing] if holds else [],
            explanation=explanation,
            attribution=[*trig.score.attribution, *window] if holds else [],
        )
