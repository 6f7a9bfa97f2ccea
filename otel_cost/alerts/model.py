"""What an alert is: a finding a detector made, and the alert it becomes once it is new.

A detector returns `Finding`s every time it runs; most of them were already alerted on. The finding's
`key` names what fires once (the budget, threshold and period; the trace; the model and month), and
`cooldown_seconds` says when the same key may fire again (None: never; a rolling window or a storm
re-arms after its cooldown). The engine turns a new finding into an `Alert` with a stable id and
records it before any sink sees it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..formats import iso_utc

__all__ = ["SEVERITIES", "Alert", "Containment", "Finding", "alert_id", "severity_rank"]

SEVERITIES = ("info", "warning", "critical")


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


@dataclass(frozen=True)
class Containment:
    """An automatic, temporary cap a runaway alert asks for (published through the cap state)."""

    scope: dict[str, str]
    action: str  # block | downgrade
    minutes: int
    downgrade: dict[str, str] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        out: dict[str, Any] = {"scope": self.scope, "action": self.action, "minutes": self.minutes}
        if self.downgrade:
            out["downgrade"] = self.downgrade
        return out


@dataclass(frozen=True)
class Finding:
    kind: str
    key: str
    severity: str
    title: str  # one line, at most 150 characters (a Slack header)
    message: str  # what happened, how much, what to look at
    subject: dict[str, str]  # what it is about: budget and scope, trace id, agent, model...
    evidence: dict[str, Any] = field(default_factory=dict)  # JSON values; money as exact strings
    cooldown_seconds: int | None = None
    containment: Containment | None = None


def alert_id(key: str, fired_at: datetime, cooldown_seconds: int | None) -> str:
    """Stable for a key that fires once, so replicas and retried inserts agree; per firing otherwise."""
    basis = key if cooldown_seconds is None else f"{key}@{int(fired_at.timestamp() * 1000)}"
    return hashlib.sha256(basis.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Alert:
    id: str
    key: str
    kind: str
    severity: str
    fired_at: datetime
    title: str
    message: str
    subject: dict[str, str]
    evidence: dict[str, Any]
    containment: Containment | None = None
    expires_at: datetime | None = None  # when its containment ends

    @classmethod
    def from_finding(cls, finding: Finding, fired_at: datetime) -> Alert:
        expires_at = None
        if finding.containment is not None:
            expires_at = fired_at + timedelta(minutes=finding.containment.minutes)
        return cls(
            id=alert_id(finding.key, fired_at, finding.cooldown_seconds),
            key=finding.key,
            kind=finding.kind,
            severity=finding.severity,
            fired_at=fired_at,
            title=finding.title,
            message=finding.message,
            subject=dict(finding.subject),
            evidence=dict(finding.evidence),
            containment=finding.containment,
            expires_at=expires_at,
        )

    def document(self) -> dict[str, Any]:
        """The alert as webhooks, the API and `otel-cost alerts --format json` carry it."""
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "severity": self.severity,
            "fired_at": iso_utc(self.fired_at),
            "title": self.title,
            "message": self.message,
            "subject": self.subject,
            "evidence": self.evidence,
            "key": self.key,
        }
        if self.containment is not None:
            out["containment"] = {
                **self.containment.document(),
                "automatic": True,
                "expires_at": iso_utc(self.expires_at) if self.expires_at else None,
            }
        return out

    def body(self) -> bytes:
        return json.dumps(self.document(), separators=(",", ":"), sort_keys=True).encode()
