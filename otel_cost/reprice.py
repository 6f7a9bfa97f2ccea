"""Re-pricing: stored `requests` rows priced again with the current price book, every rollup kept exact.

    result = reprice(store, PriceBook(config.pricing.overrides), since, until, dry_run=False)

A run reads the rows whose `timestamp` (span end) is in [since, until) in chunks, rebuilds each call
from its columns, prices it (at its request start, `timestamp - duration_ns`, as the receiver did) and
keeps the rows whose cost, priced flag, priced model, price version or unpriced reason differ. Then,
set-based and never row by row:

1. the changes go into a Join-engine table `reprice_pending_<run>` (key: trace_id, span_id);
2. one mutation updates `requests` from it (`joinGet`), synchronously;
3. correction rows go into `spend_hour` and `spend_minute` (mutations do not flow through the
   materialized views): computed in SQL from the rows the mutation actually changed, so a mutation
   that failed half-way is settled for exactly what it did. A call whose rollup key is unchanged adds
   `new - old` cost at its bucket; a call whose key moves (priced, or the model dimension, changed)
   takes one call, its tokens and its old cost off the old key and adds them, at the new cost, to the
   new one (calls and tokens are signed since `005_reprice_runs.sql`);
4. the run is recorded in `reprice_runs`, and the pending table dropped.

Money never passes through a float: costs are read as text, held as integers of 10^-24 USD, compared
exactly, and written as exact decimal text. A second run finds nothing to change. A run interrupted
between steps 2 and 4 leaves its pending table behind; the next run, of either kind, settles it before
doing its own work (the pending table is marked once the rollups are corrected, and the corrections
carry a deduplication token per run, so they are never inserted twice).

The chunked reading, the pending table, the rollup corrections, the run lock and the settling of
interrupted runs are shared with re-attribution: `rewrite`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .errors import OtelCostError
from .model import Call, units_to_decimal
from .pricing import PriceBook
from .rewrite import (
    CHUNK_ROWS,
    Pending,
    RewriteBusyError,
    RewriteIncompleteError,
    RewriteKind,
    Target,
    correct_rollups,
    decimal_sql,
    exclusive,
    iso,
    kill_mutation,
    milli_sql,
    ns,
    parse_when,
    quote,
    range_sql,
    record_run,
    rollup_side,
    settle_abandoned,
    text_units,
    time_sql,
    units_text,
)
from .store.base import Store

__all__ = [
    "CHUNK_ROWS",
    "REPRICE",
    "ChangeGroup",
    "RepriceBusyError",
    "RepriceIncompleteError",
    "RepriceResult",
    "parse_when",
    "reprice",
    "text_units",
    "units_text",
]

logger = logging.getLogger(__name__)

_NO_USAGE = "no usage reported"

#: What a call is priced from, besides its tokens (the `Call` attributes of the same names).
_TEXT_FIELDS = ("provider", "request_model", "response_model", "service_tier", "processing", "status")
#: The columns a run rewrites (none is in the sorting key of `requests`: one UPDATE mutation does it).
_PRICE_COLUMNS = ("cost", "priced", "priced_model", "price_version", "unpriced_reason")


class RepriceBusyError(RewriteBusyError):
    """Another re-pricing (or re-attribution) run is in progress in this process."""


class RepriceIncompleteError(RewriteIncompleteError):
    """Rows were re-priced but the rollups not yet corrected; the next run completes it."""


@dataclass
class ChangeGroup:
    """Changed rows that share a provider, model and old and new price version."""

    provider: str
    model: str
    old_version: str
    new_version: str
    rows: int = 0
    old_units: int = 0  # billable cost before, 10^-24 USD
    new_units: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "old_version": self.old_version,
            "new_version": self.new_version,
            "rows": self.rows,
            "old_cost": units_text(self.old_units),
            "new_cost": units_text(self.new_units),
        }


@dataclass
class RepriceResult:
    """What a run examined and changed. Totals are billable spend of the range, exact."""

    run_id: str
    since: datetime
    until: datetime
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None = None
    rows_examined: int = 0
    rows_changed: int = 0
    old_total_units: int = 0
    new_total_units: int = 0
    price_versions: list[str] = field(default_factory=list)
    replaced_versions: list[str] = field(default_factory=list)
    groups: list[ChangeGroup] = field(default_factory=list)
    status: str = "ok"
    message: str = ""
    recovered: list[str] = field(default_factory=list)  # interrupted runs this one settled first

    @property
    def old_total(self) -> Decimal:
        return units_to_decimal(self.old_total_units)

    @property
    def new_total(self) -> Decimal:
        return units_to_decimal(self.new_total_units)

    @property
    def difference(self) -> Decimal:
        return units_to_decimal(self.new_total_units - self.old_total_units)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: amounts as exact decimal strings (trailing zeros dropped), times in ISO 8601."""
        return {
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "since": iso(self.since),
            "until": iso(self.until),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at) if self.finished_at else None,
            "rows_examined": self.rows_examined,
            "rows_changed": self.rows_changed,
            "old_total": units_text(self.old_total_units),
            "new_total": units_text(self.new_total_units),
            "difference": units_text(self.new_total_units - self.old_total_units),
            "currency": "USD",
            "price_versions": self.price_versions,
            "replaced_versions": self.replaced_versions,
            "changes": [group.to_dict() for group in self.groups],
            "status": self.status,
            "message": self.message,
            "recovered": self.recovered,
        }

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> RepriceResult:
        """The inverse of `to_dict` (the CLI reads a server's answer with it)."""
        finished = document.get("finished_at")
        return cls(
            run_id=document["run_id"],
            since=parse_when(document["since"]),
            until=parse_when(document["until"]),
            dry_run=bool(document["dry_run"]),
            started_at=parse_when(document["started_at"]),
            finished_at=parse_when(finished) if finished else None,
            rows_examined=int(document["rows_examined"]),
            rows_changed=int(document["rows_changed"]),
            old_total_units=text_units(document["old_total"]),
            new_total_units=text_units(document["new_total"]),
            price_versions=list(document.get("price_versions", [])),
            replaced_versions=list(document.get("replaced_versions", [])),
            groups=[
                ChangeGroup(
                    provider=group["provider"],
                    model=group["model"],
                    old_version=group["old_version"],
                    new_version=group["new_version"],
                    rows=int(group["rows"]),
                    old_units=text_units(group["old_cost"]),
                    new_units=text_units(group["new_cost"]),
                )
                for group in document.get("changes", [])
            ],
            status=document.get("status", "ok"),
            message=document.get("message", ""),
            recovered=list(document.get("recovered", [])),
        )


# --- the run -----------------------------------------------------------------------------------


@dataclass
class _Change:
    trace_id: str
    span_id: str
    cost_units: int
    priced: bool
    priced_model: str
    price_version: str
    reason: str
    old_units: int
    old_priced: bool
    old_model: str  # the rollup's model dimension before


def reprice(
    store: Store,
    book: PriceBook,
    since: datetime,
    until: datetime | None = None,
    *,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> RepriceResult:
    """Re-price the `requests` rows with `timestamp` in [since, until) (default: until now) with `book`.

    `progress(rows_examined, rows_in_range)` is called after every chunk. A dry run reads and prices
    but writes nothing. Raises RepriceBusyError if a run is already in progress in this process.
    """
    until = until or datetime.now(UTC)
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be timezone-aware (UTC)")
    if since >= until:
        raise ValueError(f"since ({iso(since)}) must be before until ({iso(until)})")
    busy = RepriceBusyError("a re-pricing or re-attribution run is already in progress; try again when it has finished")
    with exclusive(busy):
        return _Run(store, book, since, until, dry_run, progress, chunk_rows).execute()


class _Run:
    def __init__(
        self,
        store: Store,
        book: PriceBook,
        since: datetime,
        until: datetime,
        dry_run: bool,
        progress: Callable[[int, int], None] | None,
        chunk_rows: int,
    ) -> None:
        self.store = store
        self.book = book
        self.target = Target(store, ns(since), ns(until))
        self.since_ns = self.target.since_ns
        self.until_ns = self.target.until_ns
        self.dry_run = dry_run
        self.progress = progress
        self.chunk_rows = max(1, chunk_rows)
        started = datetime.now(UTC)
        run_id = f"{started:%Y%m%d%H%M%S}_{uuid.uuid4().hex[:8]}"
        self.result = RepriceResult(run_id, since, until, dry_run, started)
        self.database = self.target.database
        self.columns = {
            row[0]
            for row in store.query(
                "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'requests'"
            ).rows
        }
        # Every token count the price book reads, as far as the table has it (newer token classes
        # arrive as columns of the same name as the Call attribute).
        self.token_fields = [name for name in Call.__slots__ if name.endswith("_tokens") and name in self.columns]
        self.text_fields = [name for name in _TEXT_FIELDS if name in self.columns]

    def execute(self) -> RepriceResult:
        result = self.result
        if not self.dry_run:
            result.recovered = settle_abandoned(self.store, self.database)
        changes = self._examine()
        result.rows_changed = len(changes)
        if not self.dry_run:
            if changes:
                self._apply(changes)
            self._record()
        result.finished_at = datetime.now(UTC)
        return result

    # -- reading and pricing --------------------------------------------------------------------

    def _examine(self) -> list[_Change]:
        result = self.result
        windows = self.target.windows(self.chunk_rows)
        total = sum(size for _, _, size in windows)
        versions: set[str] = set()
        replaced: set[str] = set()
        groups: dict[tuple[str, str, str, str], ChangeGroup] = {}
        changes: list[_Change] = []
        skipped = 0
        duplicates = self.target.shared_keys()
        selected = ", ".join(
            [
                "trace_id",
                "span_id",
                "toUnixTimestamp64Nano(timestamp)",
                "duration_ns",
                *self.text_fields,
                *self.token_fields,
                "has(flags, 'usage_missing')",
                "toString(cost)",
                "priced",
                "priced_model",
                "price_version",
                "unpriced_reason",
                "billable",
            ]
        )
        texts, tokens = len(self.text_fields), len(self.token_fields)
        for lo_ns, hi_ns, _ in windows:
            rows = self.store.query(f"SELECT {selected} FROM requests WHERE {range_sql(lo_ns, hi_ns)}").rows
            for row in rows:
                trace_id, span_id, end_ns, duration_ns = row[0], row[1], int(row[2]), int(row[3])
                call = Call()
                for name, value in zip(self.text_fields, row[4 : 4 + texts], strict=True):
                    setattr(call, name, value)
                for name, value in zip(self.token_fields, row[4 + texts : 4 + texts + tokens], strict=True):
                    setattr(call, name, int(value))
                usage_missing, cost_text, priced, priced_model, version, reason, billable = row[4 + texts + tokens :]
                call.timestamp_ns = end_ns
                call.duration_ns = duration_ns
                call.start_ns = end_ns - duration_ns  # prices are dated by the request's start
                old_units, old_priced = text_units(cost_text), bool(int(priced))
                # The receiver prices a call that reported no usage without reading tokens: a successful
                # one is unpriced ('usage_missing', 'no usage reported'); a failed one is priced at 0
                # with no model. Anything else reported usage (possibly all zeros).
                call.usage_reported = not (
                    usage_missing
                    or reason == _NO_USAGE
                    or (call.status == "error" and old_priced and not priced_model and old_units == 0)
                )
                new = self.book.price(call)
                result.rows_examined += 1
                is_billable = bool(int(billable))
                if is_billable:
                    result.old_total_units += old_units
                unchanged = (
                    new.cost_units == old_units
                    and new.priced == old_priced
                    and new.priced_model == priced_model
                    and new.price_version == version
                    and new.reason == reason
                )
                if unchanged or (trace_id, span_id) in duplicates:
                    # A key shared by two rows cannot be updated through the join (both would get one
                    # row's price, and the rollups one row's old values): such rows keep their price.
                    skipped += not unchanged
                    versions.add(version)
                    if is_billable:
                        result.new_total_units += old_units
                    continue
                versions.add(new.price_version)
                if is_billable:
                    result.new_total_units += new.cost_units
                replaced.add(version)
                model = call.response_model or call.request_model
                changes.append(
                    _Change(
                        trace_id,
                        span_id,
                        new.cost_units,
                        new.priced,
                        new.priced_model,
                        new.price_version,
                        new.reason,
                        old_units,
                        old_priced,
                        priced_model or model,
                    )
                )
                key = (call.provider, new.priced_model or priced_model or model, version, new.price_version)
                group = groups.get(key)
                if group is None:
                    group = groups[key] = ChangeGroup(*key)
                group.rows += 1
                if is_billable:
                    group.old_units += old_units
                    group.new_units += new.cost_units
            if self.progress is not None:
                self.progress(result.rows_examined, total)
        if skipped:
            result.message = (
                f"{skipped} row(s) share a trace and span id with another row in the range and keep their price"
            )
        result.price_versions = sorted(versions)
        result.replaced_versions = sorted(replaced)
        result.groups = sorted(
            groups.values(), key=lambda group: (-abs(group.new_units - group.old_units), -group.rows, group.model)
        )
        return changes

    # -- writing --------------------------------------------------------------------------------

    def _apply(self, changes: list[_Change]) -> None:
        store, result = self.store, self.result
        pending = Pending(store, self.database, f"{REPRICE.prefix}{result.run_id}", self.since_ns, self.until_ns)
        pending.create(_PENDING_COLUMNS)
        pending.insert(
            [
                (
                    change.trace_id,
                    change.span_id,
                    units_text(change.cost_units),
                    "1" if change.priced else "0",
                    change.priced_model,
                    change.price_version,
                    change.reason,
                    units_text(change.old_units),
                    "1" if change.old_priced else "0",
                    change.old_model,
                )
                for change in changes
            ]
        )

        error: OtelCostError | None = None
        try:
            store.execute(
                f"ALTER TABLE {self.database}.requests UPDATE "
                + ", ".join(f"{column} = {pending.get(column)}" for column in _PRICE_COLUMNS)
                + f" WHERE {pending.range} AND {pending.hit}"
                " SETTINGS mutations_sync = 2"
            )
        except OtelCostError as exc:
            error = exc
            logger.error("re-pricing run %s: the mutation failed: %s", result.run_id, exc.message)
            kill_mutation(store, self.database, pending.name)
        # Settled from what the mutation actually did, whether it finished or not.
        try:
            applied, delta_units = _settle(store, pending, result.run_id)
        except OtelCostError as exc:
            # Not recorded, so the pending table marks the run as unsettled: the next run completes it.
            raise RepriceIncompleteError(
                f"re-pricing run {result.run_id} updated rows but could not correct the rollups ({exc.message}); "
                "run `otel-cost reprice` again to complete the corrections"
            ) from exc
        if applied != len(changes) or error is not None:
            result.status = "failed" if error is not None else "ok"
            result.message = f"{applied} of {len(changes)} changed rows were updated" + (
                f": {error.message}" if error is not None else " (rows changed while the run was reading)"
            )
        result.rows_changed = applied
        result.new_total_units = result.old_total_units + delta_units
        if error is not None:
            result.finished_at = datetime.now(UTC)
            self._record()
            pending.drop()
            raise error
        pending.drop()

    def _record(self) -> None:
        result = self.result
        record_run(
            self.store,
            REPRICE.runs_table,
            {
                "run_id": quote(result.run_id),
                "started_at": milli_sql(result.started_at),
                "finished_at": milli_sql(result.finished_at or datetime.now(UTC)),
                "since": time_sql(ns(result.since)),
                "until": time_sql(ns(result.until)),
                "price_versions": _strings_sql(result.price_versions),
                "replaced_versions": _strings_sql(result.replaced_versions),
                "rows_examined": str(result.rows_examined),
                "rows_changed": str(result.rows_changed),
                "old_total": decimal_sql(result.old_total_units),
                "new_total": decimal_sql(result.new_total_units),
                "status": quote(result.status),
                "message": quote(result.message),
            },
        )


def _strings_sql(values: list[str]) -> str:
    return "[" + ", ".join(quote(value) for value in values) + "]::Array(String)"


#: The pending table: each changed row's new price columns, and what the rollups held for it before.
_PENDING_COLUMNS = (
    ("cost", "Decimal(38, 24)"),
    ("priced", "UInt8"),
    ("priced_model", "String"),
    ("price_version", "String"),
    ("unpriced_reason", "String"),
    ("old_cost", "Decimal(38, 24)"),
    ("old_priced", "UInt8"),
    ("old_model", "String"),
)


def _settle(store: Store, pending: Pending, run_id: str) -> tuple[int, int]:
    """Correct both rollups for the rows `pending`'s mutation changed (unless they are already);
    (rows, billable cost delta units).

    A row counts as changed when it now holds the new values (every pending row differs from its old
    values in at least one of them). Each contributes twice: minus its old self at the old key, plus
    its new self at the new key; where the key did not move the two meet in one group, calls and
    tokens cancel and the cost difference remains.
    """
    get = pending.get
    applied = f"{pending.range} AND {pending.hit} AND " + " AND ".join(
        f"{column} = {get(column)}" for column in _PRICE_COLUMNS
    )
    count, delta = store.query(
        f"SELECT count(), toString(sumIf(cost - {get('old_cost')}, billable = 1)) FROM requests WHERE {applied}"
    ).rows[0]
    if not int(count):
        return 0, 0
    if not pending.corrected:
        old = rollup_side(-1, {"model": get("old_model"), "priced": get("old_priced"), "cost": get("old_cost")})
        new = rollup_side(1)
        correct_rollups(
            store, pending.database, f"{pending.database}.requests", applied, [old, new], f"reprice-{run_id}"
        )
        pending.mark_corrected()
    return int(count), text_units(delta)


REPRICE = RewriteKind("reprice", "re-pricing", "reprice_runs", _settle, delta_column="new_total")
