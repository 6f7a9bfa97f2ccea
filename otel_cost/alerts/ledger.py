"""The alert ledger: tables `alerts` and `alert_deliveries` in the store (clickhouse/008_alerts.sql).

An alert is recorded before any sink sees it; a sink's acknowledgement is recorded after. So after a
restart the engine knows every key that fired (no repeats), every alert a sink never acknowledged
(sent again: no losses) and every automatic cap still in force.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from ..store import Store
from ..store.sql import quote
from .model import Alert, Containment

__all__ = ["AlertLedger", "millis_literal"]

#: Keys are reloaded this far back: the longest period a key names is a quarter.
KEY_MEMORY_DAYS = 100

# Aliases differ from the column names: ClickHouse would otherwise read `any(kind) AS kind` back into
# the WHERE clause.
_COLUMNS = (
    "alert_id, any(key) AS a_key, any(kind) AS a_kind, any(severity) AS a_severity, "
    "toUnixTimestamp64Milli(any(fired_at)) AS fired_ms, any(title) AS a_title, any(message) AS a_message, "
    "any(subject) AS a_subject, any(evidence) AS a_evidence, any(containment) AS a_containment, "
    "toUnixTimestamp64Milli(any(expires_at)) AS expires_ms"
)


def millis_literal(moment: datetime) -> str:
    return f"fromUnixTimestamp64Milli(toInt64({int(moment.timestamp() * 1000)}), 'UTC')"


def _stored_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _from_millis(value: Any) -> datetime | None:
    if value is None:
        return None
    return datetime.fromtimestamp(int(value) / 1000, UTC)


class AlertLedger:
    def __init__(self, store: Store) -> None:
        self.store = store

    def fired_keys(self, now: datetime) -> dict[str, datetime]:
        """key -> when it last fired, for every key recent enough to matter."""
        since = now - timedelta(days=KEY_MEMORY_DAYS)
        result = self.store.poll(
            f"SELECT key, toUnixTimestamp64Milli(max(fired_at)) FROM alerts WHERE fired_at >= {millis_literal(since)} "
            "GROUP BY key",
            lane="alerts",
        )
        return {key: datetime.fromtimestamp(int(millis) / 1000, UTC) for key, millis in result.rows}

    def record(self, alert: Alert) -> None:
        """Raises StoreError when the store cannot take it (the engine retries)."""
        row = {
            "alert_id": alert.id,
            "key": alert.key,
            "kind": alert.kind,
            "severity": alert.severity,
            "fired_at": _stored_time(alert.fired_at),
            "title": alert.title,
            "message": alert.message,
            "subject": alert.subject,
            "evidence": json.dumps(alert.evidence, sort_keys=True, default=str),
            "containment": json.dumps(alert.containment.document(), sort_keys=True) if alert.containment else "",
            "expires_at": _stored_time(alert.expires_at) if alert.expires_at else None,
        }
        self.store.insert_rows("alerts", [row], alert.id)

    def record_delivery(
        self, alert_id: str, sink: str, at: datetime, attempts: int, *, outcome: str = "delivered", reason: str = ""
    ) -> None:
        """A sink acknowledged the alert, or refused it for good (`outcome="failed"`): either way it is not
        sent to that sink again after a restart."""
        row = {
            "alert_id": alert_id,
            "sink": sink,
            "delivered_at": _stored_time(at),
            "attempts": attempts,
            "outcome": outcome,
            "reason": reason[:500],
        }
        self.store.insert_rows("alert_deliveries", [row], f"{alert_id}/{sink}")

    def undelivered(self, sinks: Iterable[str], since: datetime) -> list[tuple[Alert, list[str]]]:
        """Alerts fired since `since` with the sinks (of `sinks`) that never answered them (neither
        acknowledged nor refused for good), oldest first."""
        wanted = list(sinks)
        if not wanted:
            return []
        alerts = self._alerts(f"fired_at >= {millis_literal(since)}", "fired_ms ASC")
        if not alerts:
            return []
        ids = ", ".join(quote(alert.id) for alert in alerts)
        delivered: dict[str, set[str]] = {}
        for alert_id, sink in self.store.poll(
            f"SELECT DISTINCT alert_id, sink FROM alert_deliveries WHERE alert_id IN ({ids})", lane="alerts"
        ).rows:
            delivered.setdefault(alert_id, set()).add(sink)
        out = []
        for alert in alerts:
            missing = [sink for sink in wanted if sink not in delivered.get(alert.id, set())]
            if missing:
                out.append((alert, missing))
        return out

    def active_containments(self, now: datetime) -> list[Alert]:
        return self._alerts(f"containment != '' AND expires_at > {millis_literal(now)}", "fired_ms ASC")

    def recent(self, since: datetime, *, kinds: Iterable[str] = (), limit: int = 100) -> list[dict[str, Any]]:
        """Alerts fired since `since`, newest first, as documents with the sinks that acknowledged each."""
        where = f"fired_at >= {millis_literal(since)}"
        kinds = list(kinds)
        if kinds:
            where += f" AND kind IN ({', '.join(quote(kind) for kind in kinds)})"
        alerts = self._alerts(
            where, "fired_ms DESC, indexOf(['info', 'warning', 'critical'], a_severity) DESC", limit, lane=None
        )
        if not alerts:
            return []
        ids = ", ".join(quote(alert.id) for alert in alerts)
        delivered: dict[str, list[str]] = {}
        for alert_id, sinks in self.store.query(
            f"SELECT alert_id, arraySort(groupUniqArray(sink)) FROM alert_deliveries WHERE alert_id IN ({ids}) "
            "AND outcome = 'delivered' GROUP BY alert_id"
        ).rows:
            delivered[alert_id] = list(sinks)
        return [{**alert.document(), "delivered_to": delivered.get(alert.id, [])} for alert in alerts]

    def _alerts(self, where: str, order: str, limit: int | None = None, *, lane: str | None = "alerts") -> list[Alert]:
        sql = f"SELECT {_COLUMNS} FROM alerts WHERE {where} GROUP BY alert_id ORDER BY {order}, alert_id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        result = self.store.poll(sql, lane=lane) if lane else self.store.query(sql)
        return [_alert(row) for row in result.dicts()]


def _alert(row: dict[str, Any]) -> Alert:
    containment = None
    if row["a_containment"]:
        spec = json.loads(row["a_containment"])
        containment = Containment(
            scope=dict(spec["scope"]),
            action=spec["action"],
            minutes=int(spec["minutes"]),
            downgrade=dict(spec.get("downgrade", {})),
        )
    fired_at = _from_millis(row["fired_ms"])
    assert fired_at is not None
    return Alert(
        id=row["alert_id"],
        key=row["a_key"],
        kind=row["a_kind"],
        severity=row["a_severity"],
        fired_at=fired_at,
        title=row["a_title"],
        message=row["a_message"],
        subject=dict(row["a_subject"]),
        evidence=json.loads(row["a_evidence"] or "{}"),
        containment=containment,
        expires_at=_from_millis(row["expires_ms"]),
    )
