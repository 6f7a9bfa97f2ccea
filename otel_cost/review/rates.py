"""The list prices the review's SQL joins: `model_rates` and `model_alternatives` (clickhouse/009_review.sql).

Prices live in the bundled catalog, in Python; the review queries run unchanged in clickhouse-client,
so whoever owns the store (the server, or `otel-cost review` opening it directly) writes the base-tier
rates of every priced model seen, and of the cheaper models the config names, into the store.
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ..config import Config
from ..errors import OtelCostError
from ..formats import stored_decimal
from ..pricing import PriceBook, probe_call
from ..store import Store

__all__ = ["RatesPublisher", "publish_rates"]

logger = logging.getLogger(__name__)


def _rate_rows(book: PriceBook, wanted: set[tuple[str, str]], now: datetime) -> list[dict[str, Any]]:
    rows = []
    for provider, model in sorted(wanted):
        card = book.card(probe_call(model, provider, now.date()))
        segments = card.rates() if card is not None else []
        if card is None or not segments:
            continue  # not priced, or priced only call by call by genai-prices: no flat rate to show
        base = segments[0][1]
        rows.append(
            {
                "provider": provider,
                "model": model,
                "price_version": card.price_version,
                **{name: stored_decimal(base[name]) for name in ("input", "cache_read", "cache_write", "output")},
            }
        )
    return rows


def publish_rates(store: Store, config: Config, now: datetime | None = None) -> int:
    """Write the rates and the alternatives where they changed; returns the rate rows written."""
    now = now or datetime.now(UTC)
    mix = config.review.model_mix
    seen = [
        (str(provider), str(model))
        for provider, model in store.query(
            "SELECT DISTINCT provider, model FROM spend_hour WHERE priced = 1 AND billable = 1"
        ).rows
    ]
    wanted = set(seen) | {(provider, mix.alternatives[model]) for provider, model in seen if model in mix.alternatives}
    rows = _rate_rows(PriceBook(config.pricing.overrides), wanted, now)
    stored = {
        (row["provider"], row["model"]): row
        for row in store.query(
            "SELECT provider, model, price_version, toString(input) AS input, toString(cache_read) AS cache_read, "
            "toString(cache_write) AS cache_write, toString(output) AS output FROM model_rates FINAL"
        ).dicts()
    }
    changed = [row for row in rows if _differs(stored.get((row["provider"], row["model"])), row)]
    store.insert_rows("model_rates", changed, uuid.uuid4().hex)

    alternatives = [
        {
            "model": model,
            "alternative": alternative,
            "light_operations": list(mix.light_operations),
            "short_output_tokens": mix.short_output_tokens,
        }
        for model, alternative in sorted(mix.alternatives.items())
    ]
    current = store.query(
        "SELECT model, alternative, light_operations, short_output_tokens FROM model_alternatives FINAL ORDER BY model"
    ).dicts()
    if current != alternatives:
        store.execute("TRUNCATE TABLE model_alternatives")
        store.insert_rows("model_alternatives", alternatives, uuid.uuid4().hex)
    return len(changed)


def _differs(stored: dict[str, Any] | None, row: dict[str, Any]) -> bool:
    if stored is None:
        return True
    return stored["price_version"] != row["price_version"] or any(
        Decimal(stored[name]) != Decimal(row[name]) for name in ("input", "cache_read", "cache_write", "output")
    )


class RatesPublisher:
    """Keeps the rates current inside a long-running process: on start, every `interval_seconds`,
    and soon after new rows are stored (`nudge`, at most once per `min_gap_seconds`), so a model first
    seen a moment ago has its rates by the time someone reads the review."""

    def __init__(
        self, store: Store, config: Config, interval_seconds: float = 300.0, min_gap_seconds: float = 5.0
    ) -> None:
        self.store = store
        self.config = config
        self.interval = interval_seconds
        self.min_gap = min_gap_seconds
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self) -> None:
        try:
            publish_rates(self.store, self.config)
        except OtelCostError as exc:
            logger.warning("review: publishing model rates failed (retrying later): %s", exc.message)

    def nudge(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="otel-cost-rates", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.publish()
            if self._stop.wait(self.min_gap):
                return
            self._wake.wait(max(self.interval - self.min_gap, 0))
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
