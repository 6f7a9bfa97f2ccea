"""Span -> outcomes: the accepted or rejected results a trace reports, for cost per accepted result.

Two ways in, on any span of a trace (a model call or not):
- a `gen_ai.evaluation.result` span event (GenAI semantic conventions): its `gen_ai.evaluation.score.label`
  maps to accepted or rejected through the configured values; an event with only a score counts when
  `outcomes.accept_score_at` is set;
- the outcome attribute (`outcomes.attribute`, default `otel_cost.outcome`) with a configured value.
Anything else is counted as unrecognized, never guessed; so is an outcome whose time (the event's, else
the span's end) is missing or outside 2000-2199: the store has nowhere to put it.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from ..config import OutcomesConfig
from .extract import MAX_NS, MIN_NS

__all__ = ["EVALUATION_EVENT", "Outcome", "OutcomeReader"]

EVALUATION_EVENT = "gen_ai.evaluation.result"
_NAME = "gen_ai.evaluation.name"
_LABEL = "gen_ai.evaluation.score.label"
_SCORE = "gen_ai.evaluation.score.value"
_RESPONSE_ID = "gen_ai.response.id"

#: (timestamp_ns, outcome, source, name, label, score, response_id)
Outcome = tuple[int, str, str, str, str, str, str]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return ""


class OutcomeReader:
    """Reads outcomes off spans. Cheap when a span carries none: one dict lookup, one length check."""

    def __init__(self, config: OutcomesConfig | None = None) -> None:
        config = config or OutcomesConfig()
        self.attribute = config.attribute
        self._verdicts = {value: "accepted" for value in config.accepted}
        self._verdicts.update({value: "rejected" for value in config.rejected})
        self._names = frozenset(config.evaluation_names)
        self._threshold = config.accept_score_at

    def wants(self, span: Any, attrs: dict[str, Any]) -> bool:
        return self.attribute in attrs or len(span.events) > 0

    def read(self, span: Any, attrs: dict[str, Any], to_dict: Any) -> tuple[list[Outcome], int]:
        """(outcomes, unrecognized): what the span says, and how many signals named no known result."""
        found: list[Outcome] = []
        unrecognized = 0
        end_ns = span.end_time_unix_nano or span.start_time_unix_nano
        if self.attribute in attrs:
            label = _text(attrs[self.attribute])
            verdict = self._verdicts.get(label.strip().lower())
            if verdict is None or not MIN_NS <= end_ns < MAX_NS:
                unrecognized += 1
            else:
                found.append((end_ns, verdict, "attribute", self.attribute, label, "", ""))
        for event in span.events:
            if event.name != EVALUATION_EVENT:
                continue
            event_attrs = to_dict(event.attributes)
            name = _text(event_attrs.get(_NAME))
            if self._names and name not in self._names:
                continue
            label = _text(event_attrs.get(_LABEL))
            score = _text(event_attrs.get(_SCORE))
            verdict = self._verdicts.get(label.strip().lower()) if label else None
            if verdict is None and self._threshold is not None and score:
                try:
                    verdict = "accepted" if Decimal(score) >= self._threshold else "rejected"
                except InvalidOperation:
                    verdict = None
            at = event.time_unix_nano or end_ns
            if verdict is None or not MIN_NS <= at < MAX_NS:
                unrecognized += 1
                continue
            response_id = _text(event_attrs.get(_RESPONSE_ID)) or _text(attrs.get(_RESPONSE_ID))
            found.append((at, verdict, "event", name, label, score, response_id))
        return found, unrecognized
