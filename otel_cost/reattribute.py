"""Re-attribution: stored `requests` rows given the owners the current attribution rules say, every
rollup kept exact.

    result = reattribute(store, config.attribution, since, until, dry_run=False)

A run reads the rows whose `timestamp` (span end) is in [since, until) in chunks and attributes each
again, as the pipeline did on arrival, from what the row stored: its span `attributes` and its
`resource_attributes`. A billable call that another row names in `duplicate_of` (the other layer of a
nested pair) inherits that row's attributes where its own are silent, as on arrival. Rows whose
`cost_center`, `team`, `feature`, `agent`, `environment`, `owner_source`, `owner_rules` or `tags`
differ are rewritten. `cost_center` and `team` are in the sorting key of `requests`, which a mutation
cannot update, so a changed row is replaced rather than updated. Set-based, never row by row (the
shared machinery is `rewrite`):

1. the changes, new and old owner columns, go into a Join-engine table `reattribute_pending_<run>`;
2. `spend_hour` and `spend_minute` get one correction row per bucket and old key: minus the calls,
   their tokens and their cost (first, so that the rollups never count a call twice, not even for
   a moment: enforcement reads them);
3. the new rows are inserted (the materialized views add them, at their new keys, to the rollups),
   each only if it is not there yet;
4. the old rows are deleted by one mutation, synchronously;
5. the run is recorded in `reattribute_runs`, and the pending table dropped.

Every step may be repeated: a run interrupted after step 1 leaves its pending table behind, and the
next run of either kind (reprice or reattribute) completes it before its own work. Costs are never
changed; money is read as text and summed as integers of 10^-24 USD.

Stored attribute values are text (`store.wire.attribute_text`). They are read back as the pipeline
saw them where that is unambiguous enough: `true`/`false` as booleans and JSON arrays as arrays (an
array owns nothing), a value cut at 256 characters on the way in without its marker. A rule reading a
span key that rows never store (token counts, models: `semconv.TYPED_KEYS`) makes the run refuse, and
a row whose owner depends on a JSON attribute that was cut keeps its owner.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from .attribution import PRESETS, Attributor, ResourceOwner
from .config import OWNER_DIMENSIONS, AttributionConfig, JSONSource
from .errors import OtelCostError
from .model import UNATTRIBUTED, units_to_decimal
from .rewrite import (
    CHUNK_ROWS,
    ROLLUP_VIEWS,
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
from .semconv import TYPED_KEYS
from .store.base import Store
from .store.wire import MAX_ATTRIBUTE_CHARS

__all__ = [
    "REATTRIBUTE",
    "OwnerChange",
    "ReattributeBusyError",
    "ReattributeIncompleteError",
    "ReattributeResult",
    "reattribute",
]

logger = logging.getLogger(__name__)

#: The columns a run rewrites, as the pending table holds them: the maps as keys and values joined by
#: the unit separator, as the ingest view receives them (`Owner.rule_keys`, ...).
_OWNER_TEXT = (*OWNER_DIMENSIONS, "owner_source")
_MAP_TEXT = {
    "owner_rule_keys": "arrayStringConcat(mapKeys(owner_rules), '\\x1f')",
    "owner_rule_values": "arrayStringConcat(mapValues(owner_rules), '\\x1f')",
    "tag_keys": "arrayStringConcat(mapKeys(tags), '\\x1f')",
    "tag_values": "arrayStringConcat(mapValues(tags), '\\x1f')",
}
_REWRITTEN = (*_OWNER_TEXT, *_MAP_TEXT)
_PENDING_COLUMNS = tuple((f"{prefix}{name}", "String") for prefix in ("", "old_") for name in _REWRITTEN)
#: How far from its partner the other row of a nested pair may end (the outer span's duration).
_PAIR_WINDOW_NS = int(timedelta(days=1).total_seconds()) * 10**9
_CUT_MARK = "…"  # what the ingest view appends to a value it cuts (003_ingest.sql)


class ReattributeBusyError(RewriteBusyError):
    """Another re-attribution (or re-pricing) run is in progress in this process."""


class ReattributeIncompleteError(RewriteIncompleteError):
    """Rows were rewritten but the run not completed; the next run completes it."""


@dataclass
class OwnerChange:
    """Changed rows that moved from one value of an owner dimension to another."""

    dimension: str
    old: str
    new: str
    rows: int = 0
    cost_units: int = 0  # billable cost of those rows, 10^-24 USD

    def to_dict(self) -> dict[str, Any]:
        return {
            "dimension": self.dimension,
            "from": self.old,
            "to": self.new,
            "rows": self.rows,
            "cost": units_text(self.cost_units),
        }


@dataclass
class ReattributeResult:
    """What a run examined and changed. Amounts are billable spend of the range, exact."""

    run_id: str
    since: datetime
    until: datetime
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None = None
    rows_examined: int = 0
    rows_changed: int = 0  # rows given another owner, owner_rules or tags
    rows_moved: int = 0  # of those, rows whose rollup key (an owner dimension) changed
    billable_units: int = 0
    unattributed_before_units: int = 0
    unattributed_after_units: int = 0
    rules_digest: str = ""
    changes: list[OwnerChange] = field(default_factory=list)
    status: str = "ok"
    message: str = ""
    recovered: list[str] = field(default_factory=list)  # interrupted runs this one settled first

    @property
    def billable_total(self) -> Decimal:
        return units_to_decimal(self.billable_units)

    @property
    def unattributed_before(self) -> Decimal:
        return units_to_decimal(self.unattributed_before_units)

    @property
    def unattributed_after(self) -> Decimal:
        return units_to_decimal(self.unattributed_after_units)

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
            "rows_moved": self.rows_moved,
            "billable_total": units_text(self.billable_units),
            "unattributed_before": units_text(self.unattributed_before_units),
            "unattributed_after": units_text(self.unattributed_after_units),
            "currency": "USD",
            "rules_digest": self.rules_digest,
            "changes": [change.to_dict() for change in self.changes],
            "status": self.status,
            "message": self.message,
            "recovered": self.recovered,
        }

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> ReattributeResult:
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
            rows_moved=int(document["rows_moved"]),
            billable_units=text_units(document["billable_total"]),
            unattributed_before_units=text_units(document["unattributed_before"]),
            unattributed_after_units=text_units(document["unattributed_after"]),
            rules_digest=document.get("rules_digest", ""),
            changes=[
                OwnerChange(
                    dimension=change["dimension"],
                    old=change["from"],
                    new=change["to"],
                    rows=int(change["rows"]),
                    cost_units=text_units(change["cost"]),
                )
                for change in document.get("changes", [])
            ],
            status=document.get("status", "ok"),
            message=document.get("message", ""),
            recovered=list(document.get("recovered", [])),
        )


def reattribute(
    store: Store,
    attribution: AttributionConfig | None,
    since: datetime,
    until: datetime | None = None,
    *,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> ReattributeResult:
    """Attribute the `requests` rows with `timestamp` in [since, until) (default: until now) again with
    the rules of `attribution` (a config's `attribution` section; None: the built-in rules).

    `progress(rows_examined, rows_in_range)` is called after every chunk. A dry run reads and
    attributes but writes nothing. Raises ReattributeBusyError if a run is already in progress in this
    process, ValueError if the rules read what rows do not store.
    """
    until = until or datetime.now(UTC)
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be timezone-aware (UTC)")
    if since >= until:
        raise ValueError(f"since ({iso(since)}) must be before until ({iso(until)})")
    config = attribution or AttributionConfig()
    attributor = Attributor(config)  # one per run: its cardinality guard counts this run's values
    unstored = sorted({key for chain in attributor.chains.values() for key in chain.span_keys} & TYPED_KEYS)
    if unstored:
        raise ValueError(
            f"the attribution rules read span attributes that stored rows do not keep ({', '.join(unstored)}: "
            "they become columns such as request_model): re-attribution would lose what they said"
        )
    busy = ReattributeBusyError(
        "a re-attribution or re-pricing run is already in progress; try again when it has finished"
    )
    with exclusive(busy):
        return _Run(store, config, attributor, since, until, dry_run, progress, chunk_rows).execute()


# --- reading stored attributes -----------------------------------------------------------------


def _restored(value: str) -> tuple[Any, bool]:
    """A stored attribute value as the pipeline saw it, as far as text tells; and whether the ingest
    view cut it (at 256 characters; it marks a value of more than 256 bytes, cut or not)."""
    if value.endswith(_CUT_MARK):
        text = value[: -len(_CUT_MARK)]
        cut = len(text) >= MAX_ATTRIBUTE_CHARS
        if cut or len(text.encode()) > MAX_ATTRIBUTE_CHARS:
            return text, cut
    if value in ("true", "false"):
        return value == "true", False
    if value.startswith("[") and value.endswith("]"):
        try:
            loaded = json.loads(value)
        except ValueError:
            return value, False
        if isinstance(loaded, list):
            return loaded, False
    return value, False


def _attributes(keys: list[str], values: list[str]) -> tuple[dict[str, Any], frozenset[str]]:
    """A stored map as attributes, and the keys whose value was cut."""
    attrs: dict[str, Any] = {}
    cut: set[str] = set()
    for key, text in zip(keys, values, strict=True):
        attrs[key], was_cut = _restored(text)
        if was_cut:
            cut.add(key)
    return attrs, frozenset(cut)


def _json_sources(config: AttributionConfig) -> Iterator[str]:
    """What every JSON source the rules may apply reads (`span:metadata`, ...), presets expanded."""
    stack: list[Any] = [f"preset:{name}" for name in config.presets]
    for sources in (*config.dimensions.values(), *config.tags.values()):
        stack += sources
    expanded: set[str] = set()
    while stack:
        source = stack.pop()
        if isinstance(source, JSONSource):
            yield source.from_
        elif isinstance(source, dict) and "json" in source:
            yield str(source["from"])
        elif isinstance(source, str) and source.startswith("preset:"):
            name = source.split(":", 1)[1]
            if name in PRESETS and name not in expanded:
                expanded.add(name)
                for preset_sources in PRESETS[name].values():
                    stack += preset_sources


def _json_keys(config: AttributionConfig) -> tuple[frozenset[str], frozenset[str]]:
    """(span keys, resource keys) that JSON sources parse: a cut value there cannot be parsed again."""
    span: set[str] = set()
    resource: set[str] = set()
    for source in _json_sources(config):
        kind, _, key = source.partition(":")
        if kind in ("span", "attribute", "baggage"):
            span.add(key)
        if kind == "baggage":
            span.add(f"baggage.{key}")
        if kind in ("resource", "attribute"):
            resource.add(key)
    return frozenset(span), frozenset(resource)


def _digest(config: AttributionConfig, attributor: Attributor) -> tuple[str, str]:
    """(the rules as JSON, a digest of them and of the service catalog's contents)."""
    rules = json.dumps(config.model_dump(mode="json", by_alias=True), sort_keys=True)
    catalog = json.dumps(attributor.catalog, sort_keys=True)
    return rules, hashlib.sha256(f"{rules}\n{catalog}".encode()).hexdigest()[:16]


# --- the run -----------------------------------------------------------------------------------

_SELECTED = ", ".join(
    [
        "trace_id",
        "span_id",
        "billable",
        "toString(cost)",
        *_OWNER_TEXT,
        *_MAP_TEXT.values(),
        "mapKeys(attributes)",
        "mapValues(attributes)",
        "mapKeys(resource_attributes)",
        "mapValues(resource_attributes)",
    ]
)
_OLD = slice(4, 4 + len(_REWRITTEN))
_DIMENSIONS = len(OWNER_DIMENSIONS)


class _Run:
    def __init__(
        self,
        store: Store,
        config: AttributionConfig,
        attributor: Attributor,
        since: datetime,
        until: datetime,
        dry_run: bool,
        progress: Callable[[int, int], None] | None,
        chunk_rows: int,
    ) -> None:
        self.store = store
        self.config = config
        self.attributor = attributor
        self.target = Target(store, ns(since), ns(until))
        self.dry_run = dry_run
        self.progress = progress
        self.chunk_rows = max(1, chunk_rows)
        started = datetime.now(UTC)
        run_id = f"{started:%Y%m%d%H%M%S}_{uuid.uuid4().hex[:8]}"
        self.result = ReattributeResult(run_id, since, until, dry_run, started)
        self.rules, self.result.rules_digest = _digest(config, attributor)
        self.json_span_keys, self.json_resource_keys = _json_keys(config)

    def execute(self) -> ReattributeResult:
        result = self.result
        if not self.dry_run:
            self._check_views()
            result.recovered = settle_abandoned(self.store, self.target.database)
        changes = self._examine()
        result.rows_changed = len(changes)
        if not self.dry_run:
            if changes:
                self._apply(changes)
            result.finished_at = datetime.now(UTC)
            self._record()
            if changes:
                self._pending().drop()  # after the record: recorded means complete
        result.finished_at = result.finished_at or datetime.now(UTC)
        return result

    def _check_views(self) -> None:
        """New rows flow through every materialized view on `requests`, but only the rollups this module
        knows get their old rows taken off: any other view would be left counting calls twice."""
        views = self.store.query(
            "SELECT dependencies_table FROM system.tables WHERE database = currentDatabase() AND name = 'requests'"
        ).scalar()
        unknown = sorted(set(views or []) - set(ROLLUP_VIEWS))
        if unknown:
            raise OtelCostError(
                f"requests feeds materialized views re-attribution cannot correct ({', '.join(unknown)}): "
                "it would leave them counting changed calls twice"
            )

    # -- reading and attributing ----------------------------------------------------------------

    def _inherited(self, lo_ns: int, hi_ns: int) -> dict[tuple[str, str], dict[str, Any]]:
        """Per billable call of the window that is the kept layer of a nested pair: the attributes of the
        other layer(s), which it inherits where its own are silent (pipeline: `owner_attrs`)."""
        rows = self.store.query(
            "SELECT trace_id, duplicate_of, mapKeys(attributes), mapValues(attributes) FROM requests "
            f"WHERE duplicate_of != '' AND NOT billable "
            f"AND {range_sql(lo_ns - _PAIR_WINDOW_NS, hi_ns + _PAIR_WINDOW_NS)} "
            "AND (trace_id, duplicate_of) IN "
            f"(SELECT trace_id, span_id FROM requests WHERE {range_sql(lo_ns, hi_ns)} AND billable) "
            "ORDER BY timestamp, span_id"
        ).rows
        inherited: dict[tuple[str, str], dict[str, Any]] = {}
        for trace_id, kept, keys, values in rows:
            attrs, _ = _attributes(keys, values)
            inherited.setdefault((trace_id, kept), {}).update(attrs)
        return inherited

    def _examine(self) -> list[tuple[str, ...]]:
        """The pending rows: trace_id, span_id, the new values of the rewritten columns, their old ones."""
        result, attributor = self.result, self.attributor
        windows = self.target.windows(self.chunk_rows)
        total = sum(size for _, _, size in windows)
        shared = self.target.shared_keys()
        resources: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[ResourceOwner, frozenset[str]]] = {}
        groups: dict[tuple[str, str, str], OwnerChange] = {}
        changes: list[tuple[str, ...]] = []
        skipped_shared = skipped_cut = 0
        for lo_ns, hi_ns, _ in windows:
            inherited = self._inherited(lo_ns, hi_ns)
            # In a fixed order: the cardinality guard keeps the first values it sees, so a second run
            # over the same rows must see them in the same order to decide the same.
            rows = self.store.query(
                f"SELECT {_SELECTED} FROM requests WHERE {range_sql(lo_ns, hi_ns)} "
                "ORDER BY timestamp, trace_id, span_id"
            ).rows
            for row in rows:
                trace_id, span_id, billable = row[0], row[1], bool(int(row[2]))
                cost_units = text_units(row[3])
                old = tuple(row[_OLD])
                span_keys, span_values, resource_keys, resource_values = row[_OLD.stop :]
                span_attrs, span_cut = _attributes(span_keys, span_values)
                outer = inherited.get((trace_id, span_id)) if billable else None
                if outer:
                    span_attrs = {**outer, **span_attrs}
                resource_key = (tuple(resource_keys), tuple(resource_values))
                cached = resources.get(resource_key)
                if cached is None:
                    resource_attrs, resource_cut = _attributes(resource_keys, resource_values)
                    if len(resources) >= 10_000:  # the bound keeps a store of many resources cheap
                        resources.clear()
                    cached = resources[resource_key] = (attributor.resource(resource_attrs), resource_cut)
                resource, resource_cut = cached
                owner = attributor.attribute(span_attrs, resource)
                new = (*owner[:6], owner.rule_keys, owner.rule_values, owner.tag_keys, owner.tag_values)
                result.rows_examined += 1
                if billable:
                    result.billable_units += cost_units
                    if old[1] == UNATTRIBUTED:
                        result.unattributed_before_units += cost_units
                keep = new == old
                if not keep and (trace_id, span_id) in shared:
                    # Both rows would get one row's owner, and the rollups lose one row's old key.
                    keep, skipped_shared = True, skipped_shared + 1
                elif not keep and (
                    not span_cut.isdisjoint(self.json_span_keys) or not resource_cut.isdisjoint(self.json_resource_keys)
                ):
                    keep, skipped_cut = True, skipped_cut + 1
                final = old if keep else new
                if billable and final[1] == UNATTRIBUTED:
                    result.unattributed_after_units += cost_units
                if keep:
                    continue
                changes.append((trace_id, span_id, *new, *old))
                if new[:_DIMENSIONS] != old[:_DIMENSIONS]:
                    result.rows_moved += 1
                for dimension, before, after in zip(OWNER_DIMENSIONS, old, new, strict=False):
                    if before != after:
                        group = groups.get((dimension, before, after))
                        if group is None:
                            group = groups[(dimension, before, after)] = OwnerChange(dimension, before, after)
                        group.rows += 1
                        group.cost_units += cost_units if billable else 0
            if self.progress is not None:
                self.progress(result.rows_examined, total)
        notes = []
        if skipped_shared:
            notes.append(
                f"{skipped_shared} row(s) share a trace and span id with another row in the range and keep their owner"
            )
        if skipped_cut:
            notes.append(
                f"{skipped_cut} row(s) keep their owner: a JSON attribute the rules read was cut at "
                f"{MAX_ATTRIBUTE_CHARS} characters when stored"
            )
        result.message = "; ".join(notes)
        result.changes = sorted(
            groups.values(),
            key=lambda change: (OWNER_DIMENSIONS.index(change.dimension), -change.cost_units, -change.rows, change.old),
        )
        return changes

    # -- writing --------------------------------------------------------------------------------

    def _pending(self) -> Pending:
        name = f"{REATTRIBUTE.prefix}{self.result.run_id}"
        return Pending(self.store, self.target.database, name, self.target.since_ns, self.target.until_ns)

    def _apply(self, changes: list[tuple[str, ...]]) -> None:
        result, target = self.result, self.target
        pending = self._pending()
        try:
            pending.create(_PENDING_COLUMNS)
            pending.insert(changes)
        except OtelCostError:
            # Nothing was rewritten yet: the run just did not happen.
            try:
                pending.drop()
            except OtelCostError as exc:
                logger.error("re-attribution run %s: could not drop %s: %s", result.run_id, pending.name, exc.message)
            raise
        try:
            applied, _ = _complete(self.store, pending, result.run_id)
        except OtelCostError as exc:
            kill_mutation(self.store, target.database, pending.name)
            # Not recorded, so the pending table marks the run as unfinished: the next run completes it.
            raise ReattributeIncompleteError(
                f"re-attribution run {result.run_id} could not complete ({exc.message}); run "
                "`otel-cost reattribute` again to complete it"
            ) from exc
        if applied != len(changes):
            result.message = "; ".join(
                filter(None, [result.message, f"{applied} of {len(changes)} changed rows were rewritten"])
            )
        result.rows_changed = applied

    def _record(self) -> None:
        result = self.result
        record_run(
            self.store,
            REATTRIBUTE.runs_table,
            {
                "run_id": quote(result.run_id),
                "started_at": milli_sql(result.started_at),
                "finished_at": milli_sql(result.finished_at or datetime.now(UTC)),
                "since": time_sql(ns(result.since)),
                "until": time_sql(ns(result.until)),
                "rules": quote(self.rules),
                "rules_digest": quote(result.rules_digest),
                "rows_examined": str(result.rows_examined),
                "rows_changed": str(result.rows_changed),
                "rows_moved": str(result.rows_moved),
                "billable_total": decimal_sql(result.billable_units),
                "unattributed_before": decimal_sql(result.unattributed_before_units),
                "unattributed_after": decimal_sql(result.unattributed_after_units),
                "status": quote(result.status),
                "message": quote(result.message),
            },
        )


# --- completing a run (also an interrupted one) ------------------------------------------------


def _map_sql(keys: str, values: str) -> str:
    """A Map from keys and values joined by the unit separator, as the ingest view builds it."""
    empty = f"{keys} = '' AND {values} = ''"
    split = "if({}, [], splitByChar('\\x1f', {}))"
    return f"mapFromArrays({split.format(empty, keys)}, {split.format(empty, values)})"


def _holds(pending: Pending, prefix: str) -> str:
    """SQL: the row at hand holds the pending row's new (prefix "") or old ("old_") owner columns."""
    return " AND ".join(
        [f"{column} = {pending.get(prefix + column)}" for column in _OWNER_TEXT]
        + [f"{text} = {pending.get(prefix + name)}" for name, text in _MAP_TEXT.items()]
    )


def _complete(store: Store, pending: Pending, run_id: str) -> tuple[int, int]:
    """Rewrite the rows `pending` names and correct the rollups; (rows now holding the new owner, 0).

    Each step may be repeated, so an interrupted run is completed by doing them all again: the rollups
    are corrected once (the pending table's mark, and the run's deduplication token for a correction
    cut short), a new row is inserted only for a call that has none, and only rows holding the old
    values are deleted.
    """
    database = pending.database
    pending_here = f"{pending.range} AND {pending.hit}"
    holds_new, holds_old = _holds(pending, ""), _holds(pending, "old_")
    # One row per call, old or (after step 3) new: they differ only in the owner, which comes from
    # `pending` on the side taken off.
    one_each = (
        "(SELECT timestamp, trace_id, span_id, service_name, provider, priced_model, response_model, request_model, "
        "billable, priced, cost, input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, "
        f"reasoning_tokens FROM {database}.requests WHERE {pending_here} AND (({holds_old}) OR ({holds_new})) "
        "ORDER BY trace_id, span_id LIMIT 1 BY trace_id, span_id)"
    )
    if not pending.corrected:
        old_key = {dimension: pending.get(f"old_{dimension}") for dimension in OWNER_DIMENSIONS}
        correct_rollups(store, database, one_each, "1", [rollup_side(-1, old_key)], f"{REATTRIBUTE.name}-{run_id}")
        pending.mark_corrected()

    replaced = [f"{pending.get(column)} AS {column}" for column in _OWNER_TEXT] + [
        f"{_map_sql(pending.get('owner_rule_keys'), pending.get('owner_rule_values'))} AS owner_rules",
        f"{_map_sql(pending.get('tag_keys'), pending.get('tag_values'))} AS tags",
    ]
    # No deduplication by content: the same new row may be due again in a later run (an owner changed
    # back and forth), and a repeated insert of this run is excluded by the NOT IN.
    store.execute(
        f"INSERT INTO {database}.requests SETTINGS insert_deduplicate = 0 "
        f"SELECT * REPLACE ({', '.join(replaced)}) FROM ("
        f"SELECT * FROM {database}.requests WHERE {pending_here} AND {holds_old} AND (trace_id, span_id) NOT IN "
        f"(SELECT trace_id, span_id FROM {database}.requests WHERE {pending_here} AND {holds_new}))"
    )
    store.execute(
        f"ALTER TABLE {database}.requests DELETE WHERE {pending_here} AND {holds_old} SETTINGS mutations_sync = 2"
    )
    applied = store.query(f"SELECT count() FROM {database}.requests WHERE {pending_here} AND {holds_new}").scalar()
    return int(applied), 0


REATTRIBUTE = RewriteKind("reattribute", "re-attribution", "reattribute_runs", _complete)
