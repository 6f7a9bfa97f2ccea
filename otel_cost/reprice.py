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
between steps 2 and 4 leaves its pending table behind; the next run settles it (the corrections carry
a deduplication token per run, so they are never inserted twice) before doing its own work.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, InvalidOperation
from typing import Any

from .errors import OtelCostError
from .model import COST_SCALE, Call, units_to_decimal
from .pricing import PriceBook
from .store.base import Store
from .store.wire import tsv_line

__all__ = [
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

#: Rows read (and priced) per query: bounds memory whatever the range.
CHUNK_ROWS = 50_000
#: Changes sent to the pending table per statement.
_INSERT_ROWS = 20_000
#: On a ClickHouse server another process may be mid-run: its pending table is left alone this long.
#: (An embedded store has one process, whose lock excludes a second run: any pending table is a dead run's.)
_ABANDONED_AFTER = timedelta(hours=1)
#: `spend_minute` keeps 14 days (its TTL): older buckets get no corrections (they are being dropped).
_MINUTE_TTL = "INTERVAL 14 DAY"
_NO_USAGE = "no usage reported"
_PENDING_PREFIX = "reprice_pending_"
_EXACT = Context(prec=80)
_SCALE = 10**COST_SCALE
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# One run at a time per process: two runs reading the same old rows would both correct the rollups.
_RUN_LOCK = threading.Lock()

#: What a call is priced from, besides its tokens (the `Call` attributes of the same names).
_TEXT_FIELDS = ("provider", "request_model", "response_model", "service_tier", "processing", "status")
#: The rollup's model dimension, as the materialized views compute it (002_spend_rollups.sql).
_MODEL_SQL = "if(priced_model != '', priced_model, if(response_model != '', response_model, request_model))"
_ROLLUP_DIMENSIONS = "cost_center, team, feature, agent, service_name, environment, provider"
_ROLLUP_TOKENS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


class RepriceBusyError(OtelCostError):
    """Another re-pricing run is in progress in this process."""


class RepriceIncompleteError(OtelCostError):
    """Rows were re-priced but the rollups not yet corrected; the next run completes it."""

    retryable = True


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
            "since": _iso(self.since),
            "until": _iso(self.until),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at) if self.finished_at else None,
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


# --- exact money -------------------------------------------------------------------------------


def text_units(text: str) -> int:
    """A decimal amount as text ("1.5", "-0.000000000000000000000001") -> integer 10^-24 USD, exactly."""
    try:
        scaled = Decimal(text).scaleb(COST_SCALE, _EXACT)
    except InvalidOperation:
        raise ValueError(f"not a decimal amount: {text!r}") from None
    if not scaled.is_finite() or scaled != scaled.to_integral_value(context=_EXACT):
        raise ValueError(f"{text!r} has more than {COST_SCALE} decimal places")
    return int(scaled)


def units_text(units: int) -> str:
    """Integer 10^-24 USD -> plain decimal text, never an exponent, trailing zeros dropped."""
    sign = "-" if units < 0 else ""
    whole, fraction = divmod(abs(units), _SCALE)
    digits = f"{fraction:0{COST_SCALE}d}".rstrip("0")
    return f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}"


# --- dates -------------------------------------------------------------------------------------

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_when(text: str) -> datetime:
    """`YYYY-MM-DD` (midnight UTC) or an ISO 8601 date and time (UTC unless it names an offset)."""
    value = text.strip()
    try:
        if _DAY.match(value):
            parsed = datetime.strptime(value, "%Y-%m-%d")
        else:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD, UTC) or an ISO 8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _ns(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


def _from_ns(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _time_sql(ns: int) -> str:
    return f"fromUnixTimestamp64Nano(toInt64({int(ns)}), 'UTC')"


def _range_sql(lo_ns: int, hi_ns: int) -> str:
    return f"timestamp >= {_time_sql(lo_ns)} AND timestamp < {_time_sql(hi_ns)}"


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


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
        raise ValueError(f"since ({_iso(since)}) must be before until ({_iso(until)})")
    if not _RUN_LOCK.acquire(blocking=False):
        raise RepriceBusyError("a re-pricing run is already in progress; try again when it has finished")
    try:
        return _Run(store, book, since, until, dry_run, progress, chunk_rows).execute()
    finally:
        _RUN_LOCK.release()


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
        self.since_ns = _ns(since)
        self.until_ns = _ns(until)
        self.dry_run = dry_run
        self.progress = progress
        self.chunk_rows = max(1, chunk_rows)
        started = datetime.now(UTC)
        run_id = f"{started:%Y%m%d%H%M%S}_{uuid.uuid4().hex[:8]}"
        self.result = RepriceResult(run_id, since, until, dry_run, started)
        self.database = str(store.query("SELECT currentDatabase()").scalar())
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
            result.recovered = _settle_abandoned(self.store, self.database)
        changes = self._examine()
        result.rows_changed = len(changes)
        if not self.dry_run:
            if changes:
                self._apply(changes)
            self._record()
        result.finished_at = datetime.now(UTC)
        return result

    # -- reading and pricing --------------------------------------------------------------------

    def _windows(self) -> list[tuple[int, int, int]]:
        """[lo, hi) time windows of about `chunk_rows` rows each, from per-hour (then per-minute) counts."""
        windows: list[tuple[int, int, int]] = []

        def plan(lo_ns: int, hi_ns: int, unit: str, unit_ns: int) -> None:
            counts = self.store.query(
                f"SELECT toUnixTimestamp64Nano(toDateTime64({unit}(timestamp), 9, 'UTC')) AS bucket, count() "
                f"FROM requests WHERE {_range_sql(lo_ns, hi_ns)} GROUP BY bucket ORDER BY bucket"
            ).rows
            start, size = lo_ns, 0
            for bucket_text, count_value in counts:
                bucket, count = int(bucket_text), int(count_value)
                bucket_end = min(hi_ns, bucket + unit_ns)
                if count > self.chunk_rows and unit == "toStartOfHour":
                    if size:
                        windows.append((start, max(lo_ns, bucket), size))
                    plan(max(lo_ns, bucket), bucket_end, "toStartOfMinute", 60 * 10**9)
                    start, size = bucket_end, 0
                    continue
                if size and size + count > self.chunk_rows:
                    windows.append((start, max(lo_ns, bucket), size))
                    start, size = max(lo_ns, bucket), 0
                size += count
            if size:
                windows.append((start, hi_ns, size))

        plan(self.since_ns, self.until_ns, "toStartOfHour", 3600 * 10**9)
        return windows

    def _examine(self) -> list[_Change]:
        result = self.result
        windows = self._windows()
        total = sum(size for _, _, size in windows)
        versions: set[str] = set()
        replaced: set[str] = set()
        groups: dict[tuple[str, str, str, str], ChangeGroup] = {}
        changes: list[_Change] = []
        skipped = 0
        duplicates = {
            (row[0], row[1])
            for row in self.store.query(
                f"SELECT trace_id, span_id FROM requests WHERE {_range_sql(self.since_ns, self.until_ns)} "
                "GROUP BY trace_id, span_id HAVING count() > 1"
            ).rows
        }
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
            rows = self.store.query(f"SELECT {selected} FROM requests WHERE {_range_sql(lo_ns, hi_ns)}").rows
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
        pending = f"{_PENDING_PREFIX}{result.run_id}"
        qualified = f"{self.database}.{pending}"
        # The range travels with the table (its comment), for a later run that settles it after a crash.
        store.execute(
            f"CREATE TABLE {qualified} (trace_id String, span_id String, hit UInt8, cost Decimal(38, 24), "
            "priced UInt8, priced_model String, price_version String, unpriced_reason String, "
            "old_cost Decimal(38, 24), old_priced UInt8, old_model String) "
            f"ENGINE = Join(ANY, LEFT, trace_id, span_id) COMMENT '{self.since_ns}:{self.until_ns}'"
        )
        for start in range(0, len(changes), _INSERT_ROWS):
            lines = [
                tsv_line(
                    (
                        change.trace_id,
                        change.span_id,
                        "1",
                        units_text(change.cost_units),
                        "1" if change.priced else "0",
                        change.priced_model,
                        change.price_version,
                        change.reason,
                        units_text(change.old_units),
                        "1" if change.old_priced else "0",
                        change.old_model,
                    )
                )
                for change in changes[start : start + _INSERT_ROWS]
            ]
            store.execute(f"INSERT INTO {qualified} FORMAT TabSeparated\n" + "\n".join(lines) + "\n")

        error: OtelCostError | None = None
        get = f"joinGet('{qualified}', '{{}}', trace_id, span_id)"
        try:
            store.execute(
                f"ALTER TABLE {self.database}.requests UPDATE "
                + ", ".join(
                    f"{column} = {get.format(column)}"
                    for column in ("cost", "priced", "priced_model", "price_version", "unpriced_reason")
                )
                + f" WHERE {_range_sql(self.since_ns, self.until_ns)} AND {get.format('hit')} = 1"
                " SETTINGS mutations_sync = 2"
            )
        except OtelCostError as exc:
            error = exc
            logger.error("re-pricing run %s: the mutation failed: %s", result.run_id, exc.message)
            # A mutation left queued would go on changing rows after we settled the rollups.
            _kill_mutation(store, self.database, pending)
        # Settled from what the mutation actually did, whether it finished or not.
        try:
            applied, delta_units = _settle(store, self.database, pending, result.run_id, self.since_ns, self.until_ns)
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
            store.execute(f"DROP TABLE IF EXISTS {qualified}")
            raise error
        store.execute(f"DROP TABLE IF EXISTS {qualified}")

    def _record(self) -> None:
        _record_run(self.store, self.result)


def _record_run(store: Store, result: RepriceResult) -> None:
    finished = result.finished_at or datetime.now(UTC)
    values = ", ".join(
        [
            _quote(result.run_id),
            f"fromUnixTimestamp64Milli(toInt64({_ns(result.started_at) // 1_000_000}), 'UTC')",
            f"fromUnixTimestamp64Milli(toInt64({_ns(finished) // 1_000_000}), 'UTC')",
            _time_sql(_ns(result.since)),
            _time_sql(_ns(result.until)),
            "[" + ", ".join(_quote(version) for version in result.price_versions) + "]::Array(String)",
            "[" + ", ".join(_quote(version) for version in result.replaced_versions) + "]::Array(String)",
            str(result.rows_examined),
            str(result.rows_changed),
            f"toDecimal128({_quote(units_text(result.old_total_units))}, 24)",
            f"toDecimal128({_quote(units_text(result.new_total_units))}, 24)",
            _quote(result.status),
            _quote(result.message),
        ]
    )
    store.execute(
        "INSERT INTO reprice_runs (run_id, started_at, finished_at, since, until, price_versions, "
        "replaced_versions, rows_examined, rows_changed, old_total, new_total, status, message) "
        f"SELECT {values}"
    )


def _kill_mutation(store: Store, database: str, pending: str) -> None:
    try:
        store.execute(
            f"KILL MUTATION WHERE database = {_quote(database)} AND table = 'requests' "
            f"AND position(command, {_quote(pending)}) > 0 SYNC"
        )
    except OtelCostError as exc:  # the pending table stays; a later run settles it
        logger.error("could not cancel the mutation of %s: %s", pending, exc.message)


def _settle(store: Store, database: str, pending: str, run_id: str, since_ns: int, until_ns: int) -> tuple[int, int]:
    """Correct both rollups for the rows `pending`'s mutation changed; (rows, billable cost delta units).

    A row counts as changed when it now holds the new values (every pending row differs from its old
    values in at least one of them). The inserts carry a token per run and table: settling the same
    run twice (after a crash, or a retry) inserts nothing the second time.
    """
    qualified = f"{database}.{pending}"

    def get(column: str) -> str:
        return f"joinGet('{qualified}', '{column}', trace_id, span_id)"

    applied = (
        f"{_range_sql(since_ns, until_ns)} AND {get('hit')} = 1 AND cost = {get('cost')} "
        f"AND priced = {get('priced')} AND priced_model = {get('priced_model')} "
        f"AND price_version = {get('price_version')} AND unpriced_reason = {get('unpriced_reason')}"
    )
    count, delta = store.query(
        f"SELECT count(), toString(sumIf(cost - {get('old_cost')}, billable = 1)) FROM requests WHERE {applied}"
    ).rows[0]
    if not int(count):
        return 0, 0
    # Each changed row contributes twice: minus its old self at the old key, plus its new self at the
    # new key. Where the key did not move the two meet in one group: calls and tokens cancel, the cost
    # difference remains.
    sides = (
        f"[(toString({get('old_model')}), {get('old_priced')}, toInt64(-1), -{get('old_cost')}), "
        f"(toString({_MODEL_SQL}), priced, toInt64(1), cost)]"
    )
    tokens = ", ".join(f"sum(side.3 * toInt64({column}))" for column in _ROLLUP_TOKENS)
    for table, bucket, extra in (
        ("spend_hour", "hour", ""),
        ("spend_minute", "minute", f" AND toStartOfMinute(timestamp) > now() - {_MINUTE_TTL}"),
    ):
        start = "toStartOfHour" if bucket == "hour" else "toStartOfMinute"
        store.execute(
            f"INSERT INTO {database}.{table} ({bucket}, {_ROLLUP_DIMENSIONS}, model, billable, priced, calls, cost, "
            f"{', '.join(_ROLLUP_TOKENS)}) "
            f"SETTINGS insert_deduplicate = 1, insert_deduplication_token = {_quote(f'reprice-{run_id}')} "
            f"SELECT {start}(timestamp) AS bucket, {_ROLLUP_DIMENSIONS}, side.1 AS side_model, billable, "
            f"side.2 AS side_priced, sum(side.3) AS side_calls, sum(side.4) AS side_cost, {tokens} "
            f"FROM {database}.requests ARRAY JOIN {sides} AS side "
            f"WHERE {applied}{extra} "
            f"GROUP BY bucket, {_ROLLUP_DIMENSIONS}, side_model, billable, side_priced "
            "HAVING side_calls != 0 OR side_cost != 0"
        )
    return int(count), text_units(delta)


def _settle_abandoned(store: Store, database: str) -> list[str]:
    """Settle the pending tables of runs that died after their mutation; returns their run ids."""
    rows = store.query(
        "SELECT name, comment, toUnixTimestamp(metadata_modification_time) FROM system.tables "
        f"WHERE database = currentDatabase() AND startsWith(name, '{_PENDING_PREFIX}')"
    ).rows
    if not rows:
        return []
    settled = []
    now = datetime.now(UTC)
    embedded = store.url.startswith("chdb:")
    for name, comment, modified in rows:
        run_id = name.removeprefix(_PENDING_PREFIX)
        # A run records itself only after settling the rollups: recorded means only the drop was missed.
        if int(store.query(f"SELECT count() FROM reprice_runs WHERE run_id = {_quote(run_id)}").scalar()):
            store.execute(f"DROP TABLE IF EXISTS {database}.{name}")
            continue
        if not embedded and now - datetime.fromtimestamp(int(modified), UTC) < _ABANDONED_AFTER:
            continue  # perhaps another process's run, still going
        running = int(
            store.query(
                "SELECT count() FROM system.mutations WHERE database = currentDatabase() AND table = 'requests' "
                f"AND NOT is_done AND position(command, {_quote(name)}) > 0"
            ).scalar()
        )
        if running:
            logger.warning("re-pricing run %s: its mutation is still running; settling it later", run_id)
            continue
        since_text, _, until_text = str(comment).partition(":")
        since_ns, until_ns = int(since_text or 0), int(until_text or 2**62)
        applied, delta = _settle(store, database, name, run_id, since_ns, until_ns)
        recovered = RepriceResult(
            run_id, _from_ns(since_ns), _from_ns(until_ns), False, datetime.now(UTC), datetime.now(UTC)
        )
        recovered.rows_changed = applied
        recovered.new_total_units = delta
        recovered.status = "recovered"
        recovered.message = "interrupted run settled by a later one; new_total - old_total is its change"
        _record_run(store, recovered)
        store.execute(f"DROP TABLE IF EXISTS {database}.{name}")
        logger.warning("re-pricing run %s was interrupted; its %d changed rows are now in the rollups", run_id, applied)
        settled.append(run_id)
    return settled
