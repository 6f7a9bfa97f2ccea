"""Rewriting stored `requests` rows in bulk while every rollup stays equal to the raw rows.

The machinery shared by re-pricing (`reprice`) and re-attribution (`reattribute`). A run:

1. takes the process-wide run lock (`exclusive`): two runs reading the same old rows would both correct
   the rollups, whatever their kinds;
2. settles the runs of every kind that were interrupted (`settle_abandoned`), before reading: an
   unsettled run's rows and rollups disagree, and a later run's corrections would build on that;
3. reads its range in time windows of about `CHUNK_ROWS` rows (`Target.windows`) and works out its
   changes; rows that share a span key (`Target.shared_keys`) cannot be told apart through a join and
   are left alone;
4. puts the changes into a Join-engine table `<kind>_pending_<run>` keyed by (trace_id, span_id), its
   range in its comment (`Pending`), and applies them set-based, never row by row: the kind's own
   statements and signed correction rows into `spend_hour` and `spend_minute` computed in SQL from
   the rows as they now are (`correct_rollups`; mutations do not flow through the materialized views),
   with a deduplication token per run, then marks the pending table as corrected: settling a run
   twice corrects the rollups once;
5. records itself in its kind's runs table, then drops the pending table. A pending table without a
   recorded run is an interrupted run: the next run of any kind completes it with the kind's
   `complete` (every step of which may be repeated safely) and records it as `recovered`.

Money never passes through a float: amounts are read as text, held as integers of 10^-24 USD
(`text_units`) and written as exact decimal text (`units_text`).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, InvalidOperation

from .errors import OtelCostError
from .model import COST_SCALE
from .store.base import Store
from .store.sql import quote
from .store.wire import tsv_line

__all__ = [
    "CHUNK_ROWS",
    "MODEL_SQL",
    "ROLLUP_KEY",
    "ROLLUP_VIEWS",
    "Pending",
    "RewriteBusyError",
    "RewriteIncompleteError",
    "RewriteKind",
    "Target",
    "correct_rollups",
    "decimal_sql",
    "exclusive",
    "from_ns",
    "iso",
    "kill_mutation",
    "milli_sql",
    "ns",
    "parse_when",
    "quote",
    "range_sql",
    "record_run",
    "rollup_side",
    "settle_abandoned",
    "text_units",
    "time_sql",
    "units_text",
]

logger = logging.getLogger(__name__)

#: Rows read per query: bounds memory whatever the range.
CHUNK_ROWS = 50_000
#: Changes sent to a pending table per statement.
_INSERT_ROWS = 20_000
#: On a ClickHouse server another process may be mid-run: its pending table is left alone this long.
#: (An embedded store has one process, whose lock excludes a second run: any pending table is a dead run's.)
_ABANDONED_AFTER = timedelta(hours=1)
#: `spend_minute` keeps 14 days (its TTL): older buckets get no corrections (they are being dropped).
_MINUTE_TTL = "INTERVAL 14 DAY"
_EXACT = Context(prec=80)
_SCALE = 10**COST_SCALE
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# One run at a time per process, whatever its kind (see the module's docstring).
_RUN_LOCK = threading.Lock()

#: The rollups' model dimension, as the materialized views compute it (002_spend_rollups.sql).
MODEL_SQL = "if(priced_model != '', priced_model, if(response_model != '', response_model, request_model))"
#: A rollup row's key, in the order of its table's columns after the time bucket.
ROLLUP_KEY = (
    "cost_center",
    "team",
    "feature",
    "agent",
    "service_name",
    "environment",
    "provider",
    "model",
    "billable",
    "priced",
)
_ROLLUP_TOKENS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")
#: The materialized views on `requests` and the rollups they fill; `correct_rollups` corrects exactly these.
ROLLUP_VIEWS = {"spend_hour_mv": "spend_hour", "spend_minute_mv": "spend_minute"}


class RewriteBusyError(OtelCostError):
    """Another re-pricing or re-attribution run is in progress in this process."""


class RewriteIncompleteError(OtelCostError):
    """Rows were rewritten but the run not completed; the next run (of either kind) completes it."""

    retryable = True


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


# --- dates and SQL text ------------------------------------------------------------------------

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


def ns(moment: datetime) -> int:
    """Nanoseconds since the epoch (microsecond precision, as datetime has)."""
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


def from_ns(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value // 1000)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def time_sql(value_ns: int) -> str:
    """A DateTime64(9) literal."""
    return f"fromUnixTimestamp64Nano(toInt64({int(value_ns)}), 'UTC')"


def milli_sql(moment: datetime) -> str:
    """A DateTime64(3) literal."""
    return f"fromUnixTimestamp64Milli(toInt64({ns(moment) // 1_000_000}), 'UTC')"


def decimal_sql(units: int) -> str:
    """An exact Decimal(38, 24) literal (built from text: no float on the way)."""
    return f"toDecimal128({quote(units_text(units))}, 24)"


def range_sql(lo_ns: int, hi_ns: int) -> str:
    return f"timestamp >= {time_sql(lo_ns)} AND timestamp < {time_sql(hi_ns)}"


@contextmanager
def exclusive(busy: RewriteBusyError) -> Iterator[None]:
    """Hold the process-wide run lock, or raise `busy` when another run holds it."""
    if not _RUN_LOCK.acquire(blocking=False):
        raise busy
    try:
        yield
    finally:
        _RUN_LOCK.release()


# --- reading -----------------------------------------------------------------------------------


class Target:
    """The `requests` rows of one run's range: [since_ns, until_ns) by span end (`timestamp`)."""

    def __init__(self, store: Store, since_ns: int, until_ns: int) -> None:
        self.store = store
        self.since_ns = since_ns
        self.until_ns = until_ns
        self.database = str(store.query("SELECT currentDatabase()").scalar())

    @property
    def range(self) -> str:
        return range_sql(self.since_ns, self.until_ns)

    def windows(self, chunk_rows: int) -> list[tuple[int, int, int]]:
        """[lo, hi) time windows of about `chunk_rows` rows each, from per-hour (then per-minute) counts:
        (lo_ns, hi_ns, rows)."""
        chunk_rows = max(1, chunk_rows)
        windows: list[tuple[int, int, int]] = []

        def plan(lo_ns: int, hi_ns: int, unit: str, unit_ns: int) -> None:
            counts = self.store.query(
                f"SELECT toUnixTimestamp64Nano(toDateTime64({unit}(timestamp), 9, 'UTC')) AS bucket, count() "
                f"FROM requests WHERE {range_sql(lo_ns, hi_ns)} GROUP BY bucket ORDER BY bucket"
            ).rows
            start, size = lo_ns, 0
            for bucket_text, count_value in counts:
                bucket, count = int(bucket_text), int(count_value)
                bucket_end = min(hi_ns, bucket + unit_ns)
                if count > chunk_rows and unit == "toStartOfHour":
                    if size:
                        windows.append((start, max(lo_ns, bucket), size))
                    plan(max(lo_ns, bucket), bucket_end, "toStartOfMinute", 60 * 10**9)
                    start, size = bucket_end, 0
                    continue
                if size and size + count > chunk_rows:
                    windows.append((start, max(lo_ns, bucket), size))
                    start, size = max(lo_ns, bucket), 0
                size += count
            if size:
                windows.append((start, hi_ns, size))

        plan(self.since_ns, self.until_ns, "toStartOfHour", 3600 * 10**9)
        return windows

    def shared_keys(self) -> set[tuple[str, str]]:
        """(trace_id, span_id) keys held by more than one row of the range (e.g. a call replayed after
        the deduplication window). A join by span key cannot tell such rows apart: runs leave them be."""
        return {
            (row[0], row[1])
            for row in self.store.query(
                f"SELECT trace_id, span_id FROM requests WHERE {self.range} "
                "GROUP BY trace_id, span_id HAVING count() > 1"
            ).rows
        }


# --- writing -----------------------------------------------------------------------------------


class Pending:
    """A run's changes: a Join-engine table keyed by (trace_id, span_id), read in SQL with `get`.

    Its comment holds the run's range, for a later run that settles it after a crash, and, once the
    rollups are corrected for it, a mark saying so (`mark_corrected`): a run recovered after more
    inserts than the rollups remember deduplication tokens for must not correct them twice.
    """

    def __init__(
        self, store: Store, database: str, name: str, since_ns: int, until_ns: int, *, corrected: bool = False
    ) -> None:
        self.store = store
        self.database = database
        self.name = name
        self.qualified = f"{database}.{name}"
        self.since_ns = since_ns
        self.until_ns = until_ns
        self.corrected = corrected

    @classmethod
    def found(cls, store: Store, database: str, name: str, comment: str) -> Pending:
        """A pending table left behind, from its comment (`since:until`, then `:corrected` once marked)."""
        since_text, _, rest = comment.partition(":")
        until_text, _, mark = rest.partition(":")
        return cls(store, database, name, int(since_text or 0), int(until_text or 2**62), corrected=mark == "corrected")

    @property
    def range(self) -> str:
        """SQL: the row at hand is in the run's range."""
        return range_sql(self.since_ns, self.until_ns)

    def get(self, column: str) -> str:
        """The SQL of a pending column for the row at hand (its default, "" or 0, for rows not pending)."""
        return f"joinGet('{self.qualified}', '{column}', trace_id, span_id)"

    @property
    def hit(self) -> str:
        """SQL: the row at hand has a pending change."""
        return f"{self.get('hit')} = 1"

    def create(self, columns: Sequence[tuple[str, str]]) -> None:
        """The table, with `columns` (name, type) after the key and `hit`."""
        definitions = ", ".join(f"{name} {kind}" for name, kind in columns)
        self.store.execute(
            f"CREATE TABLE {self.qualified} (trace_id String, span_id String, hit UInt8, {definitions}) "
            f"ENGINE = Join(ANY, LEFT, trace_id, span_id) COMMENT '{self.since_ns}:{self.until_ns}'"
        )

    def insert(self, rows: Sequence[Sequence[str]]) -> None:
        """Each row: trace_id, span_id, then the values of the columns, as text."""
        for start in range(0, len(rows), _INSERT_ROWS):
            lines = [tsv_line((row[0], row[1], "1", *row[2:])) for row in rows[start : start + _INSERT_ROWS]]
            self.store.execute(f"INSERT INTO {self.qualified} FORMAT TabSeparated\n" + "\n".join(lines) + "\n")

    def mark_corrected(self) -> None:
        """Remember that the rollups are corrected for this run (both tables, every row)."""
        try:
            self.store.execute(
                f"ALTER TABLE {self.qualified} MODIFY COMMENT '{self.since_ns}:{self.until_ns}:corrected'"
            )
        except OtelCostError as exc:  # the run's deduplication token still guards a retry for a while
            logger.warning("could not mark %s as corrected: %s", self.name, exc.message)
            return
        self.corrected = True

    def drop(self) -> None:
        self.store.execute(f"DROP TABLE IF EXISTS {self.qualified}")


def kill_mutation(store: Store, database: str, pending: str) -> None:
    """Cancel the mutation that reads `pending`: left queued, it would go on changing rows after the
    rollups were settled for what it had done."""
    try:
        store.execute(
            f"KILL MUTATION WHERE database = {quote(database)} AND table = 'requests' "
            f"AND position(command, {quote(pending)}) > 0 SYNC"
        )
    except OtelCostError as exc:  # the pending table stays; a later run settles it
        logger.error("could not cancel the mutation of %s: %s", pending, exc.message)


def rollup_side(sign: int, values: Mapping[str, str] | None = None) -> str:
    """SQL: one side of a call in a rollup correction, a tuple of the rollup key, the call count and
    the cost, `sign` (+1 or -1) times the call. Each key element is `values`' SQL for it (what the row
    held before, say), else the row's own column; "cost" likewise."""
    values = values or {}
    parts = []
    for name in ROLLUP_KEY:
        expression = values.get(name) or (MODEL_SQL if name == "model" else name)
        parts.append(f"toUInt8({expression})" if name in ("billable", "priced") else f"toString({expression})")
    cost = values.get("cost", "cost")
    parts += [f"toInt64({int(sign)})", cost if sign > 0 else f"-({cost})"]
    return "(" + ", ".join(parts) + ")"


def correct_rollups(store: Store, database: str, source: str, where: str, sides: Sequence[str], token: str) -> None:
    """Insert into `spend_hour` and `spend_minute` (within its TTL) the sum of `sides` (`rollup_side`)
    over the rows of `source` (a table or a subquery) that satisfy `where`, per bucket and rollup key.

    Where two sides of a call meet at one key their calls and tokens cancel and only the cost
    difference remains; groups left with nothing are not inserted. The inserts carry `token`, one per
    run: settling a run again (after a crash, or a retry) inserts nothing twice.
    """
    key = ", ".join(f"side.{position} AS side_{name}" for position, name in enumerate(ROLLUP_KEY, 1))
    group = ", ".join(f"side_{name}" for name in ROLLUP_KEY)
    calls, cost = len(ROLLUP_KEY) + 1, len(ROLLUP_KEY) + 2
    tokens = ", ".join(f"sum(side.{calls} * toInt64({column}))" for column in _ROLLUP_TOKENS)
    for table, bucket, extra in (
        ("spend_hour", "hour", ""),
        ("spend_minute", "minute", f" AND toStartOfMinute(timestamp) > now() - {_MINUTE_TTL}"),
    ):
        start = "toStartOfHour" if bucket == "hour" else "toStartOfMinute"
        store.execute(
            f"INSERT INTO {database}.{table} ({bucket}, {', '.join(ROLLUP_KEY)}, calls, cost, "
            f"{', '.join(_ROLLUP_TOKENS)}) "
            f"SETTINGS insert_deduplicate = 1, insert_deduplication_token = {quote(token)} "
            f"SELECT {start}(timestamp) AS bucket, {key}, sum(side.{calls}) AS side_calls, "
            f"sum(side.{cost}) AS side_cost, {tokens} "
            f"FROM {source} ARRAY JOIN [{', '.join(sides)}] AS side "
            f"WHERE {where}{extra} "
            f"GROUP BY bucket, {group} "
            "HAVING side_calls != 0 OR side_cost != 0"
        )


def record_run(store: Store, table: str, values: Mapping[str, str]) -> None:
    """One row into a runs table: column -> SQL expression."""
    store.execute(f"INSERT INTO {table} ({', '.join(values)}) SELECT {', '.join(values.values())}")


# --- interrupted runs --------------------------------------------------------------------------

#: complete(store, pending, run_id) -> (rows changed, billable cost delta units)
Complete = Callable[[Store, Pending, str], tuple[int, int]]


@dataclass(frozen=True)
class RewriteKind:
    """What a later run needs to finish an interrupted run of a kind."""

    name: str  # reprice | reattribute: the pending tables' prefix and the rollup tokens'
    what: str  # for messages: "re-pricing"
    runs_table: str
    complete: Complete  # settles what the run's pending table says; every step may run twice
    #: The runs-table column that holds a recovered run's billable cost difference, if it has one.
    delta_column: str | None = None

    @property
    def prefix(self) -> str:
        return f"{self.name}_pending_"


def _kinds() -> tuple[RewriteKind, ...]:
    # Every run settles every kind's interrupted runs, not only its own: imported here, late, because
    # these modules import this one.
    from .reattribute import REATTRIBUTE
    from .reprice import REPRICE

    return (REPRICE, REATTRIBUTE)


def settle_abandoned(store: Store, database: str, kinds: Iterable[RewriteKind] | None = None) -> list[str]:
    """Complete the runs (of every kind) that died before recording themselves; returns their run ids."""
    kinds = tuple(kinds) if kinds is not None else _kinds()
    prefixes = ", ".join(quote(kind.prefix) for kind in kinds)
    rows = store.query(
        "SELECT name, comment, toUnixTimestamp(metadata_modification_time) FROM system.tables "
        f"WHERE database = currentDatabase() AND arrayExists(p -> startsWith(name, p), [{prefixes}]) ORDER BY name"
    ).rows
    settled = []
    now = datetime.now(UTC)
    embedded = store.url.startswith("chdb:")
    for name, comment, modified in rows:
        kind = next(kind for kind in kinds if name.startswith(kind.prefix))
        run_id = name.removeprefix(kind.prefix)
        pending = Pending.found(store, database, name, str(comment))
        # A run records itself only once complete: recorded means only the drop was missed.
        if int(store.query(f"SELECT count() FROM {kind.runs_table} WHERE run_id = {quote(run_id)}").scalar()):
            pending.drop()
            continue
        if not embedded and now - datetime.fromtimestamp(int(modified), UTC) < _ABANDONED_AFTER:
            continue  # perhaps another process's run, still going
        running = int(
            store.query(
                "SELECT count() FROM system.mutations WHERE database = currentDatabase() AND table = 'requests' "
                f"AND NOT is_done AND position(command, {quote(name)}) > 0"
            ).scalar()
        )
        if running:
            logger.warning("%s run %s: its mutation is still running; settling it later", kind.what, run_id)
            continue
        applied, delta = kind.complete(store, pending, run_id)
        moment = milli_sql(datetime.now(UTC))
        values = {
            "run_id": quote(run_id),
            "started_at": moment,
            "finished_at": moment,
            "since": time_sql(pending.since_ns),
            "until": time_sql(pending.until_ns),
            "rows_changed": str(applied),
            "status": "'recovered'",
            "message": quote(
                "interrupted run settled by a later one"
                + ("; new_total - old_total is its change" if kind.delta_column else "")
            ),
        }
        if kind.delta_column:
            values[kind.delta_column] = decimal_sql(delta)
        record_run(store, kind.runs_table, values)
        pending.drop()
        logger.warning(
            "%s run %s was interrupted; its %d changed rows are now in the rollups", kind.what, run_id, applied
        )
        settled.append(run_id)
    return settled
