"""Generate the Grafana dashboards in grafana/dashboards/ with grafana-foundation-sdk's builders.

    .venv/bin/python grafana/build.py           # rewrite grafana/dashboards/*.json
    .venv/bin/python grafana/build.py --check   # exit 1 if a committed file differs from what this builds

The committed JSON is what Grafana loads (grafana/provisioning/dashboards/otel-cost.yaml);
tests/test_grafana.py checks it equals what this script produces and runs every query on a real store.

Money: spend is `sum(cost)` over rows with `billable = 1`, from `requests` or from the rollups
`spend_minute` / `spend_hour` (they agree with `requests` to the cent). The ledger is exact
(Decimal(38, 24)); chart and stat panels convert the sums with toFloat64 because Grafana plots floats,
and the ClickHouse plugin hands Decimal columns of tables to Grafana as floats too. `otel-cost sql`
and `otel-cost review` give the exact figures.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self

from grafana_foundation_sdk.builders import bargauge, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"

CLICKHOUSE_TYPE = "grafana-clickhouse-datasource"
CLICKHOUSE = models.DataSourceRef(type_val=CLICKHOUSE_TYPE, uid="clickhouse")
PROMETHEUS = models.DataSourceRef(type_val="prometheus", uid="prometheus")
#: Grafana 11.0's dashboard schema; later versions migrate it on load.
SCHEMA_VERSION = 39
#: The ClickHouse plugin's `format`: 0 time series (long rows are turned wide, string columns become
#: labels), 1 table. `queryType` is what its query editor shows.
FORMAT_TIME_SERIES = 0
FORMAT_TABLE = 1
OWNER_VARIABLES = ("team", "feature", "environment")
#: The catalog model that priced a call, else the model the span named (as in the rollups' `model`).
MODEL = "if(priced_model != '', priced_model, if(response_model != '', response_model, request_model))"
PROM_JOB = 'job="otel-cost"'


# --- ClickHouse targets ---------------------------------------------------------------------------


class ClickHouseQuery(cogvariants.Dataquery):
    """A raw-SQL target of the ClickHouse data source plugin (the SDK has no model for it)."""

    KEYS = ("refId", "datasource", "editorType", "queryType", "format", "rawSql")

    def __init__(self, raw_sql: str, fmt: int, ref_id: str = "A") -> None:
        self.raw_sql = raw_sql
        self.format = fmt
        self.ref_id = ref_id

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": CLICKHOUSE.to_json(),
            "editorType": "sql",
            "queryType": "timeSeries" if self.format == FORMAT_TIME_SERIES else "table",
            "format": self.format,
            "rawSql": self.raw_sql,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Strict: a target with a key this module never writes, or another data source, is refused."""
        unknown = set(data) - set(cls.KEYS)
        if unknown:
            raise ValueError(f"unknown ClickHouse target keys: {sorted(unknown)}")
        if data.get("datasource") != CLICKHOUSE.to_json():
            raise ValueError(f"not the provisioned ClickHouse data source: {data.get('datasource')}")
        query = cls(data["rawSql"], data["format"], data["refId"])
        if query.to_json() != data:
            raise ValueError(f"inconsistent ClickHouse target: {data}")
        return query


class ClickHouse(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, raw_sql: str, fmt: int) -> None:
        self._internal = ClickHouseQuery(" ".join(raw_sql.split()), fmt)

    def build(self) -> cogvariants.Dataquery:
        return self._internal


# --- SQL fragments ---------------------------------------------------------------------------------


def conditional(variable: str, condition: str) -> str:
    """The plugin's `$__conditionalAll`: `condition` when values are picked, `1=1` when All is."""
    return f"$__conditionalAll({condition}, ${variable})"


def owned(prefix: str = "", columns: dict[str, str] | None = None) -> str:
    """Every owner variable applied to its column (`columns` renames some)."""
    named = columns or {}
    return " AND ".join(
        conditional(var, f"{prefix}{named.get(var, var)} IN (${{{var}:singlequote}})") for var in OWNER_VARIABLES
    )


def scoped(map_column: str) -> str:
    """Every owner variable against a scope map (budget caps, alert subjects): a cap or alert that does not
    name the dimension (or names it with a `*` pattern) applies to every value, so it stays."""
    return " AND ".join(
        conditional(
            var,
            f"(NOT mapContains({map_column}, '{var}') OR {map_column}['{var}'] IN (${{{var}:singlequote}}) "
            f"OR position({map_column}['{var}'], '*') > 0)",
        )
        for var in OWNER_VARIABLES
    )


def bucket(column: str, floor_seconds: int) -> str:
    """The panel's interval, never finer than the rollup's own bucket."""
    return f"toStartOfInterval({column}, INTERVAL greatest($__interval_s, {floor_seconds}) second)"


def joined(expression: str) -> str:
    return f"arrayStringConcat(arraySort(arrayFilter(x -> x != '', groupUniqArray({expression}))), ', ')"


HOURS = f"$__timeFilter(hour) AND billable = 1 AND {owned()}"
MINUTES = f"$__timeFilter(minute) AND billable = 1 AND {owned()}"
CALLS = f"$__timeFilter(timestamp) AND billable = 1 AND {owned()}"
HOUR_BUCKET = bucket("hour", 3600)
MINUTE_BUCKET = bucket("minute", 60)


# --- panels ----------------------------------------------------------------------------------------

PanelBuilder = Any  # the SDK's panel builders share no base class with these methods


def _common(panel: PanelBuilder, title: str, description: str, unit: str, width: int, height: int) -> PanelBuilder:
    panel = panel.title(title).description(description).span(width).height(height)
    return panel.unit(unit) if unit else panel


def _legend(placement: common.LegendPlacement = common.LegendPlacement.BOTTOM) -> Any:
    return (
        common_builders.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(placement)
        .show_legend(True)
        .calcs([])
    )


def _tooltip() -> Any:
    return common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)


def _series(panel: PanelBuilder, label: str | None, stacked: bool, bars: bool) -> PanelBuilder:
    panel = panel.legend(_legend()).tooltip(_tooltip()).fill_opacity(20 if stacked else 10).span_nulls(False)
    if bars:
        panel = panel.draw_style(common.GraphDrawStyle.BARS).fill_opacity(60)
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    if label:
        panel = panel.display_name(f"${{__field.labels.{label}}}")
    return panel


def ch_timeseries(
    title: str,
    sql: str,
    *,
    description: str,
    unit: str = "",
    label: str | None = None,
    stacked: bool = False,
    bars: bool = False,
    width: int = 12,
    height: int = 8,
) -> PanelBuilder:
    """`label`: the string column that names each series (LongToWide makes it a label)."""
    panel = timeseries.Panel().datasource(CLICKHOUSE).with_target(ClickHouse(sql, FORMAT_TIME_SERIES))
    return _series(_common(panel, title, description, unit, width, height), label, stacked, bars)


def _single(panel: PanelBuilder) -> PanelBuilder:
    reduce = common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)
    return (
        panel.reduce_options(reduce)
        .orientation(common.VizOrientation.AUTO)
        .text_mode(common.BigValueTextMode.AUTO)
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .justify_mode(common.BigValueJustifyMode.AUTO)
    )


def ch_stat(
    title: str, sql: str, *, description: str, unit: str = "", decimals: int | None = None, width: int = 6
) -> PanelBuilder:
    panel = stat.Panel().datasource(CLICKHOUSE).with_target(ClickHouse(sql, FORMAT_TABLE))
    panel = _single(_common(panel, title, description, unit, width, 4))
    return panel if decimals is None else panel.decimals(decimals)


def _overrides(panel: PanelBuilder, units: dict[str, str]) -> PanelBuilder:
    for column, unit in units.items():
        panel = panel.override_by_name(column, [models.DynamicConfigValue(id_val="unit", value=unit)])
    return panel


def ch_table(
    title: str,
    sql: str,
    *,
    description: str,
    units: dict[str, str] | None = None,
    width: int = 24,
    height: int = 9,
) -> PanelBuilder:
    panel = table.Panel().datasource(CLICKHOUSE).with_target(ClickHouse(sql, FORMAT_TABLE))
    panel = (
        _common(panel, title, description, "", width, height).show_header(True).cell_height(common.TableCellHeight.SM)
    )
    return _overrides(panel, units or {})


def ch_bargauge(
    title: str, sql: str, *, description: str, unit: str = "", width: int = 12, height: int = 8
) -> PanelBuilder:
    """One bar per row of a table query: its string column names the bar, its numeric column sizes it."""
    panel = bargauge.Panel().datasource(CLICKHOUSE).with_target(ClickHouse(sql, FORMAT_TABLE))
    reduce = common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(True).limit(50)
    return (
        _common(panel, title, description, unit, width, height)
        .reduce_options(reduce)
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
    )


def prom_timeseries(
    title: str,
    queries: Iterable[tuple[str, str]],
    *,
    description: str,
    unit: str = "",
    stacked: bool = False,
    width: int = 12,
    height: int = 8,
) -> PanelBuilder:
    """`queries`: (PromQL, legend) pairs."""
    panel = timeseries.Panel().datasource(PROMETHEUS)
    for ref, (expr, legend) in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(
            prometheus.Dataquery().ref_id(ref).datasource(PROMETHEUS).expr(expr).legend_format(legend).range()
        )
    return _series(_common(panel, title, description, unit, width, height), None, stacked, False)


def prom_stat(title: str, expr: str, *, description: str, unit: str = "", width: int = 6) -> PanelBuilder:
    target = prometheus.Dataquery().ref_id("A").datasource(PROMETHEUS).expr(expr).legend_format("__auto").instant()
    panel = stat.Panel().datasource(PROMETHEUS).with_target(target)
    return _single(_common(panel, title, description, unit, width, 4))


def row(title: str) -> builders.Row:
    return builders.Row(title)


# --- template variables ----------------------------------------------------------------------------

VARIABLE_SQL = {
    "team": "SELECT DISTINCT team FROM spend_hour WHERE $__timeFilter(hour) AND team != '' ORDER BY team",
    # Features of the teams picked, so the list stays short.
    "feature": (
        "SELECT DISTINCT feature FROM spend_hour WHERE $__timeFilter(hour) AND feature != '' AND "
        + conditional("team", "team IN (${team:singlequote})")
        + " ORDER BY feature"
    ),
    "environment": (
        "SELECT DISTINCT environment FROM spend_hour WHERE $__timeFilter(hour) AND environment != '' "
        "ORDER BY environment"
    ),
}


def owner_variable(name: str) -> builders.QueryVariable:
    return (
        builders.QueryVariable(name)
        .id(name)
        .label(name.capitalize())
        .datasource(CLICKHOUSE)
        .query(VARIABLE_SQL[name])
        .multi(True)
        .include_all(True)
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
        .current(models.VariableOption(text=["All"], value=["$__all"], selected=True))
    )


def new_dashboard(uid: str, title: str, description: str, tags: list[str]) -> builders.Dashboard:
    board = (
        builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["otel-cost", *tags])
        .editable()
        .timezone("utc")
        .time("now-7d", "now")
        .refresh("1m")
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
    )
    board._internal.schema_version = SCHEMA_VERSION  # the builder has no setter for it
    for name in OWNER_VARIABLES:
        board = board.with_variable(owner_variable(name))
    return board


def add(board: builders.Dashboard, items: Iterable[PanelBuilder]) -> builders.Dashboard:
    """Panels and rows in order, with ids stable from one build to the next."""
    for number, item in enumerate(items, start=1):
        numbered = item.id(number)
        board = board.with_row(numbered) if isinstance(numbered, builders.Row) else board.with_panel(numbered)
    return board


# --- spend overview ----------------------------------------------------------------------------------

MONEY = "Billable spend: sum(cost) over rows with billable = 1, from the hourly rollup (whole hours)."


def spend_by(dimension: str, expression: str | None = None) -> str:
    label = f"{expression} AS {dimension}" if expression else dimension
    return (
        f"SELECT {HOUR_BUCKET} AS time, {label}, toFloat64(sum(cost)) AS spend FROM spend_hour WHERE {HOURS} "
        f"GROUP BY time, {dimension} ORDER BY time, {dimension}"
    )


def spend_overview() -> builders.Dashboard:
    board = new_dashboard(
        "otel-cost-spend-overview",
        "otel-cost / Spend overview",
        "Where the money goes: billable LLM spend by team, feature, agent and model, from otel-cost's rollups.",
        ["spend"],
    )
    return add(
        board,
        [
            ch_stat(
                "Spend",
                f"SELECT toFloat64(sum(cost)) AS spend FROM spend_hour WHERE {HOURS}",
                description=MONEY,
                unit="currencyUSD",
                decimals=2,
            ),
            ch_stat(
                "Billable calls",
                f"SELECT sum(calls) AS call_count FROM spend_hour WHERE {HOURS}",
                description="Model calls counted once (nested duplicates and agent summaries are not billable).",
                unit="short",
            ),
            ch_stat(
                "Tokens",
                "SELECT sum(input_tokens + cache_read_tokens + cache_write_tokens + output_tokens) AS token_count "
                f"FROM spend_hour WHERE {HOURS}",
                description="Every token class: uncached input, cache reads, cache writes, output (with reasoning).",
                unit="short",
            ),
            ch_stat(
                "Cost per call",
                f"SELECT toFloat64(sum(cost)) / nullIf(sum(calls), 0) AS cost_per_call FROM spend_hour WHERE {HOURS}",
                description="Billable spend / billable calls.",
                unit="currencyUSD",
                decimals=4,
            ),
            ch_timeseries(
                "Spend by team",
                spend_by("team"),
                description=MONEY,
                unit="currencyUSD",
                label="team",
                stacked=True,
            ),
            ch_timeseries(
                "Spend by feature",
                spend_by("feature"),
                description=MONEY,
                unit="currencyUSD",
                label="feature",
                stacked=True,
            ),
            ch_timeseries(
                "Spend by agent",
                spend_by("agent_name", "if(agent = '', '(no agent)', agent)"),
                description=MONEY + " Calls made outside any agent are '(no agent)'.",
                unit="currencyUSD",
                label="agent_name",
                stacked=True,
            ),
            ch_timeseries(
                "Spend by model",
                spend_by("model"),
                description=MONEY + " The model is the catalog entry that priced the call, else the one named.",
                unit="currencyUSD",
                label="model",
                stacked=True,
            ),
            ch_timeseries(
                "Tokens by class",
                f"SELECT {HOUR_BUCKET} AS time, sum(input_tokens) AS uncached_input, sum(cache_read_tokens) AS "
                "cache_read, sum(cache_write_tokens) AS cache_write, sum(output_tokens) AS output "
                f"FROM spend_hour WHERE {HOURS} GROUP BY time ORDER BY time",
                description="Billable calls' tokens; input is the uncached part only, output includes reasoning.",
                unit="short",
                stacked=True,
            ),
            ch_timeseries(
                "Calls by model",
                f"SELECT {HOUR_BUCKET} AS time, model, sum(calls) AS call_count FROM spend_hour WHERE {HOURS} "
                "GROUP BY time, model ORDER BY time, model",
                description="Billable calls per bucket.",
                unit="short",
                label="model",
                stacked=True,
            ),
            ch_table(
                "Top features",
                f"SELECT feature, {joined('team')} AS teams, sum(calls) AS call_count, sum(cost) AS spend_usd, "
                "toFloat64(sum(cost)) / nullIf(toFloat64(sum(sum(cost)) OVER ()), 0) AS share_of_spend, "
                "toFloat64(sum(cost)) / nullIf(sum(calls), 0) AS cost_per_call_usd, "
                "sum(input_tokens + cache_read_tokens + cache_write_tokens) AS prompt_tokens, "
                "sum(output_tokens) AS completion_tokens "
                f"FROM spend_hour WHERE {HOURS} GROUP BY feature ORDER BY spend_usd DESC LIMIT 25",
                description=MONEY + " Share is of the spend the filters select.",
                units={
                    "spend_usd": "currencyUSD",
                    "share_of_spend": "percentunit",
                    "cost_per_call_usd": "currencyUSD",
                    "call_count": "short",
                    "prompt_tokens": "short",
                    "completion_tokens": "short",
                },
            ),
        ],
    )


# --- budgets -----------------------------------------------------------------------------------------

SNAPSHOTS = f"$__timeFilter(evaluated_at) AND {scoped('scope')}"
CAP = "concat(budget, if(scope_key = '', '', concat(' (', scope_key, ')')))"
LATEST_CAPS = (
    "SELECT budget, scope_key, max(evaluated_at) AS as_of, argMax(action, evaluated_at) AS current_action, "
    "argMax(spent, evaluated_at) AS spent_usd, argMax(limit_amount, evaluated_at) AS limit_usd, "
    "argMax(forecast, evaluated_at) AS forecast_usd, argMax(tuple(limit_at), evaluated_at).1 AS reaches_limit_at, "
    "argMax(period_end, evaluated_at) AS period_ends, argMax(automatic, evaluated_at) AS is_automatic, "
    f"argMax(reason, evaluated_at) AS current_reason FROM budget_snapshots WHERE {SNAPSHOTS} "
    "GROUP BY budget, scope_key"
)
# A cap whose last snapshot is older than the latest evaluation (a budget removed from the config) is gone.
STILL_EVALUATED = (
    "as_of >= (SELECT max(evaluated_at) FROM budget_snapshots WHERE $__timeFilter(evaluated_at)) - INTERVAL 5 MINUTE"
)
SNAPSHOT_NOTE = "From budget_snapshots: the enforcer's own figures for every cap, written once a minute."


def cap_ratio(numerator: str, alias: str) -> str:
    return (
        f"SELECT $__timeInterval(evaluated_at) AS time, {CAP} AS cap, "
        f"argMax(toFloat64({numerator}) / nullIf(toFloat64(limit_amount), 0), evaluated_at) AS {alias} "
        f"FROM budget_snapshots WHERE {SNAPSHOTS} GROUP BY time, cap ORDER BY time, cap"
    )


def budgets() -> builders.Dashboard:
    board = new_dashboard(
        "otel-cost-budgets",
        "otel-cost / Budgets and caps",
        "How close every budget is to its limit, where the pace takes it, and which caps act on gateways.",
        ["budgets", "caps"],
    )
    money = {"spent_usd": "currencyUSD", "limit_usd": "currencyUSD", "forecast_usd": "currencyUSD"}
    return add(
        board,
        [
            ch_stat(
                "Caps by action now",
                "SELECT countIf(current_action = 'block') AS blocking, countIf(current_action = 'downgrade') AS "
                "downgrading, countIf(current_action = 'alert') AS alerting, countIf(current_action = 'allow') AS "
                f"allowing FROM ({LATEST_CAPS}) WHERE {STILL_EVALUATED}",
                description=SNAPSHOT_NOTE + " The latest action of every cap still evaluated.",
                unit="short",
                width=12,
            ),
            ch_bargauge(
                "Utilization now",
                f"SELECT {CAP} AS cap, toFloat64(spent_usd) / nullIf(toFloat64(limit_usd), 0) AS utilization "
                f"FROM ({LATEST_CAPS}) WHERE {STILL_EVALUATED} ORDER BY utilization DESC LIMIT 50",
                description=SNAPSHOT_NOTE + " Spent / limit, latest snapshot per cap.",
                unit="percentunit",
                width=12,
                height=4,
            ),
            ch_timeseries(
                "Utilization per cap",
                cap_ratio("spent", "utilization"),
                description=SNAPSHOT_NOTE + " Spent / limit in the cap's current period or window.",
                unit="percentunit",
                label="cap",
            ),
            ch_timeseries(
                "Forecast / limit per cap",
                cap_ratio("forecast", "forecast_ratio"),
                description=SNAPSHOT_NOTE + " Where the recent pace ends the period, as a share of the limit.",
                unit="percentunit",
                label="cap",
            ),
            ch_table(
                "Caps not at allow",
                "SELECT budget, scope_key AS scope_values, current_action AS action_now, "
                "toFloat64(spent_usd) / nullIf(toFloat64(limit_usd), 0) AS utilization, spent_usd, limit_usd, "
                "forecast_usd, reaches_limit_at, period_ends, is_automatic, current_reason, as_of "
                f"FROM ({LATEST_CAPS}) WHERE current_action != 'allow' AND {STILL_EVALUATED} "
                "ORDER BY indexOf(['block', 'downgrade', 'alert'], current_action), utilization DESC",
                description=SNAPSHOT_NOTE + " What gateways apply now, most severe first (automatic: a runaway "
                "alert's temporary containment).",
                units={**money, "utilization": "percentunit"},
            ),
            ch_timeseries(
                "Cap actions over time",
                "SELECT time, current_action AS action_now, count() AS caps FROM ("
                "SELECT $__timeInterval(evaluated_at) AS time, budget, scope_key, "
                f"argMax(action, evaluated_at) AS current_action FROM budget_snapshots WHERE {SNAPSHOTS} "
                "GROUP BY time, budget, scope_key) GROUP BY time, action_now ORDER BY time, action_now",
                description=SNAPSHOT_NOTE + " Caps per action (each cap's last action in the bucket).",
                unit="short",
                label="action_now",
                stacked=True,
                bars=True,
            ),
            ch_table(
                "Time to limit",
                "SELECT budget, scope_key AS scope_values, current_action AS action_now, reaches_limit_at, "
                "round(dateDiff('second', as_of, reaches_limit_at) / 3600, 1) AS hours_to_limit, period_ends, "
                "reaches_limit_at <= period_ends AS within_period, "
                "toFloat64(forecast_usd) / nullIf(toFloat64(limit_usd), 0) AS forecast_ratio, spent_usd, limit_usd "
                f"FROM ({LATEST_CAPS}) WHERE reaches_limit_at IS NOT NULL AND {STILL_EVALUATED} "
                "ORDER BY reaches_limit_at",
                description=SNAPSHOT_NOTE + " When the recent pace reaches each limit (limit_at), soonest first; "
                "within_period = 0: at this pace the period ends first.",
                units={"spent_usd": "currencyUSD", "limit_usd": "currencyUSD", "forecast_ratio": "percentunit"},
                width=12,
            ),
        ],
    )


# --- unit economics ----------------------------------------------------------------------------------

# A trace's result is its latest outcome within the range (ties: rejected before accepted); it belongs to the
# feature with the most billable cost among the trace's calls (looked up from a week before the range, as
# clickhouse/queries/cost_per_result.sql does), else to the outcome span's own feature, with that feature's
# team and environment. Counting traces, not outcome rows, makes a repeated outcome harmless.
RESULTS = (
    "results AS (SELECT trace_id, argMax(outcome, (timestamp, outcome)) AS result, "
    "argMax(feature, (timestamp, outcome)) AS own_feature, argMax(team, (timestamp, outcome)) AS own_team, "
    "argMax(environment, (timestamp, outcome)) AS own_environment, max(timestamp) AS decided_at "
    "FROM outcomes WHERE $__timeFilter(timestamp) GROUP BY trace_id)"
)
TRACE_OWNERS = (
    "trace_owners AS (SELECT trace_id, argMax(feature, (feature_spend, feature)) AS top_feature, "
    "argMax(lead_team, (feature_spend, feature)) AS top_team, "
    "argMax(lead_environment, (feature_spend, feature)) AS top_environment FROM ("
    "SELECT trace_id, feature, sum(cost) AS feature_spend, argMax(team, cost) AS lead_team, "
    "argMax(environment, cost) AS lead_environment FROM requests "
    "WHERE billable = 1 AND timestamp >= $__fromTime - INTERVAL 7 DAY AND timestamp <= $__toTime "
    "AND trace_id IN (SELECT trace_id FROM results) GROUP BY trace_id, feature) "
    "GROUP BY trace_id)"
)
TRACES = (
    "traces AS (SELECT r.trace_id AS trace_id, r.result AS result, r.decided_at AS decided_at, "
    "if(ifNull(o.trace_id, '') = '', r.own_feature, o.top_feature) AS result_feature, "
    "if(ifNull(o.trace_id, '') = '', r.own_team, o.top_team) AS result_team, "
    "if(ifNull(o.trace_id, '') = '', r.own_environment, o.top_environment) AS result_environment "
    "FROM results AS r LEFT JOIN trace_owners AS o ON o.trace_id = r.trace_id WHERE "
    + owned("", {"team": "result_team", "feature": "result_feature", "environment": "result_environment"})
    + ")"
)
JUDGED = f"WITH {RESULTS}, {TRACE_OWNERS}, {TRACES}"
FEATURE_SPEND = f"spend AS (SELECT feature, sum(cost) AS billable_cost FROM requests WHERE {CALLS} GROUP BY feature)"
FEATURE_RESULTS = (
    "judged AS (SELECT result_feature AS feature, countIf(result = 'accepted') AS accepted, "
    "countIf(result = 'rejected') AS rejected FROM traces GROUP BY feature)"
)
PER_FEATURE = (
    f"{JUDGED}, {FEATURE_SPEND}, {FEATURE_RESULTS} "
    "SELECT feature, sum(billable_cost) AS spend_usd, sum(accepted) AS accepted_results, "
    "sum(rejected) AS rejected_results, "
    "if(accepted_results > 0, spend_usd / greatest(accepted_results, 1), NULL) AS cost_per_accepted_usd, "
    "accepted_results / nullIf(accepted_results + rejected_results, 0) AS acceptance_rate FROM ("
    "SELECT feature, billable_cost, toUInt64(0) AS accepted, toUInt64(0) AS rejected FROM spend UNION ALL "
    "SELECT feature, toDecimal128(0, 24) AS billable_cost, accepted, rejected FROM judged) GROUP BY feature"
)
UNIT_NOTE = (
    "Cost per accepted result = a feature's billable cost in the range / the number of its traces whose latest "
    "outcome in the range is accepted. A trace belongs to the feature that spent most in it, else to the feature "
    "of the span that reported the outcome."
)


def unit_economics() -> builders.Dashboard:
    board = new_dashboard(
        "otel-cost-unit-economics",
        "otel-cost / Unit economics",
        "What an accepted result costs, per feature: billable spend against the outcomes traces report.",
        ["outcomes", "review"],
    )
    return add(
        board,
        [
            ch_stat(
                "Cost per accepted result",
                f"{JUDGED}, spend AS (SELECT sum(cost) AS billable_cost FROM requests WHERE {CALLS}), "
                "judged AS (SELECT countIf(result = 'accepted') AS accepted FROM traces) "
                "SELECT toFloat64(billable_cost) / nullIf(accepted, 0) AS cost_per_accepted "
                "FROM spend CROSS JOIN judged",
                description=UNIT_NOTE + " All the features the filters select.",
                unit="currencyUSD",
                decimals=4,
            ),
            ch_stat(
                "Acceptance rate",
                f"{JUDGED} SELECT countIf(result = 'accepted') / "
                "nullIf(countIf(result IN ('accepted', 'rejected')), 0) AS acceptance_rate FROM traces",
                description="Accepted traces / traces with an accepted or rejected result.",
                unit="percentunit",
                decimals=1,
            ),
            ch_stat(
                "Results",
                f"{JUDGED} SELECT countIf(result = 'accepted') AS accepted_results, "
                "countIf(result = 'rejected') AS rejected_results FROM traces",
                description="Traces by their latest outcome in the range.",
                unit="short",
                width=12,
            ),
            ch_table(
                "Cost per accepted result by feature",
                f"{PER_FEATURE} ORDER BY spend_usd DESC",
                description=UNIT_NOTE,
                units={
                    "spend_usd": "currencyUSD",
                    "cost_per_accepted_usd": "currencyUSD",
                    "acceptance_rate": "percentunit",
                },
            ),
            ch_bargauge(
                "Cost per accepted result",
                f"SELECT feature, toFloat64(cost_per_accepted_usd) AS cost_per_accepted FROM ({PER_FEATURE}) "
                "WHERE accepted_results > 0 ORDER BY cost_per_accepted DESC",
                description=UNIT_NOTE,
                unit="currencyUSD",
            ),
            ch_timeseries(
                "Accepted and rejected results",
                f"{JUDGED} SELECT $__timeInterval(decided_at) AS time, countIf(result = 'accepted') AS accepted, "
                "countIf(result = 'rejected') AS rejected FROM traces GROUP BY time ORDER BY time",
                description="Traces by the time of their latest outcome.",
                unit="short",
                bars=True,
            ),
            ch_timeseries(
                "Acceptance rate by feature",
                f"{JUDGED} SELECT $__timeInterval(decided_at) AS time, result_feature AS feature_name, "
                "countIf(result = 'accepted') / count() AS acceptance_rate FROM traces "
                "GROUP BY time, feature_name ORDER BY time, feature_name",
                description="Accepted share of the traces decided in each bucket.",
                unit="percentunit",
                label="feature_name",
                width=24,
            ),
        ],
    )


# --- hygiene -----------------------------------------------------------------------------------------


def hygiene() -> builders.Dashboard:
    board = new_dashboard(
        "otel-cost-hygiene",
        "otel-cost / Hygiene",
        "Spend nobody owns, calls nobody priced, floating model aliases and how much of the prompt is cached.",
        ["hygiene"],
    )
    unattributed = "toFloat64(sumIf(cost, team = 'unattributed')) / nullIf(toFloat64(sum(cost)), 0)"
    cache_share = "sum(cache_read_tokens) / nullIf(sum(input_tokens) + sum(cache_read_tokens), 0)"
    return add(
        board,
        [
            ch_stat(
                "Unattributed share of spend",
                f"SELECT {unattributed} AS unattributed_share FROM spend_hour WHERE {HOURS}",
                description="Billable spend of the 'unattributed' team (calls no rule gave an owner) / all.",
                unit="percentunit",
                decimals=1,
            ),
            ch_stat(
                "Unattributed spend",
                "SELECT toFloat64(sumIf(cost, team = 'unattributed')) AS unattributed_spend "
                f"FROM spend_hour WHERE {HOURS}",
                description=MONEY,
                unit="currencyUSD",
                decimals=2,
            ),
            ch_stat(
                "Unpriced calls",
                f"SELECT sum(calls) AS unpriced_calls FROM spend_hour WHERE {HOURS} AND priced = 0",
                description="Billable calls to a model no price covers: stored with their tokens, cost is not a "
                "price (see `otel-cost prices unpriced`, then `otel-cost reprice`).",
                unit="short",
            ),
            ch_stat(
                "Cache-read share",
                f"SELECT {cache_share} AS cache_read_share FROM spend_hour WHERE {HOURS}",
                description="cache_read_tokens / (input_tokens + cache_read_tokens): the part of the prompt "
                "read from the provider's cache.",
                unit="percentunit",
                decimals=1,
            ),
            ch_timeseries(
                "Unattributed share over time",
                f"SELECT {HOUR_BUCKET} AS time, {unattributed} AS unattributed_share FROM spend_hour "
                f"WHERE {HOURS} GROUP BY time ORDER BY time",
                description="Billable spend of the 'unattributed' team / all billable spend, per bucket.",
                unit="percentunit",
            ),
            ch_timeseries(
                "Unpriced calls by model",
                f"SELECT {HOUR_BUCKET} AS time, concat(provider, '/', model) AS provider_model, "
                f"sum(calls) AS call_count FROM spend_hour WHERE {HOURS} AND priced = 0 "
                "GROUP BY time, provider_model ORDER BY time, provider_model",
                description="Billable calls with priced = 0.",
                unit="short",
                label="provider_model",
                stacked=True,
                bars=True,
            ),
            ch_table(
                "Unpriced calls by model and provider",
                "SELECT provider, model, sum(calls) AS call_count, sum(input_tokens) AS uncached_input, "
                "sum(cache_read_tokens) AS cache_read, sum(output_tokens) AS output, min(hour) AS first_hour, "
                f"max(hour) AS last_hour, {joined('service_name')} AS services FROM spend_hour WHERE {HOURS} "
                "AND priced = 0 GROUP BY provider, model ORDER BY call_count DESC",
                description="Billable calls no price covers, with the tokens a price will be applied to.",
                units={"call_count": "short", "uncached_input": "short", "cache_read": "short", "output": "short"},
                width=12,
            ),
            ch_table(
                "Floating aliases",
                "SELECT provider, request_model, response_model, count() AS call_count, sum(cost) AS spend_usd, "
                f"min(timestamp) AS first_seen, max(timestamp) AS last_seen, {joined('service_name')} AS services "
                f"FROM requests WHERE {CALLS} AND has(flags, 'floating_alias') "
                "GROUP BY provider, request_model, response_model ORDER BY call_count DESC",
                description="Calls that asked for a floating alias (gpt-4o, *-latest) and were served by a dated "
                "snapshot: request_model -> response_model. Pin the snapshot to keep prices and behaviour stable.",
                units={"call_count": "short", "spend_usd": "currencyUSD"},
                width=12,
            ),
            ch_timeseries(
                "Cache-read share by model",
                f"SELECT {HOUR_BUCKET} AS time, model, {cache_share} AS cache_read_share FROM spend_hour "
                f"WHERE {HOURS} GROUP BY time, model HAVING sum(input_tokens) + sum(cache_read_tokens) > 0 "
                "ORDER BY time, model",
                description="cache_read_tokens / (input_tokens + cache_read_tokens) per model.",
                unit="percentunit",
                label="model",
            ),
            ch_table(
                "Cache use by model",
                f"SELECT provider, model, sum(calls) AS call_count, {cache_share} AS cache_read_share, "
                "sum(input_tokens) AS uncached_input, sum(cache_read_tokens) AS cache_read, "
                "sum(cache_write_tokens) AS cache_write, sum(cost) AS spend_usd "
                f"FROM spend_hour WHERE {HOURS} GROUP BY provider, model ORDER BY spend_usd DESC",
                description="Prompt tokens by class per model; a low cache-read share on a long, repeated prompt "
                "is money left on the table.",
                units={
                    "cache_read_share": "percentunit",
                    "spend_usd": "currencyUSD",
                    "call_count": "short",
                    "uncached_input": "short",
                    "cache_read": "short",
                    "cache_write": "short",
                },
                width=12,
            ),
        ],
    )


# --- runaway watch -----------------------------------------------------------------------------------

RUNAWAY_KINDS = "('agent_loop', 'retry_storm', 'spend_spike')"
RUNAWAY = f"$__timeFilter(fired_at) AND kind IN {RUNAWAY_KINDS} AND {scoped('subject')}"
ALERT_NOTE = (
    "From `alerts` (one row per alert; read with GROUP BY alert_id). An alert whose subject does not name a "
    "team, feature or environment (a retry storm names service, agent and model) shows under every filter."
)


def top_traces(order: str) -> str:
    return (
        "SELECT trace_id, sum(cost) AS spend_usd, count() AS call_count, countIf(status = 'error') AS error_count, "
        f"min(timestamp) AS first_call, max(timestamp) AS last_call, {joined('agent')} AS agents, "
        f"{joined(MODEL)} AS models, {joined('team')} AS teams FROM requests WHERE {CALLS} "
        f"GROUP BY trace_id ORDER BY {order} DESC LIMIT 20"
    )


def runaway_watch() -> builders.Dashboard:
    board = new_dashboard(
        "otel-cost-runaway-watch",
        "otel-cost / Runaway watch",
        "Agents in a loop, retry storms and spend spikes: the alerts, and the traces and rates behind them.",
        ["alerts", "runaway"],
    )
    trace_units = {"spend_usd": "currencyUSD", "call_count": "short", "error_count": "short"}
    return add(
        board,
        [
            ch_stat(
                "Runaway alerts",
                "SELECT uniqExactIf(alert_id, kind = 'agent_loop') AS agent_loops, "
                "uniqExactIf(alert_id, kind = 'retry_storm') AS retry_storms, "
                f"uniqExactIf(alert_id, kind = 'spend_spike') AS spend_spikes FROM alerts WHERE {RUNAWAY}",
                description=ALERT_NOTE,
                unit="short",
                width=12,
            ),
            ch_timeseries(
                "Runaway alerts over time",
                "SELECT $__timeInterval(fired_at) AS time, kind, uniqExact(alert_id) AS alert_count FROM alerts "
                f"WHERE {RUNAWAY} GROUP BY time, kind ORDER BY time, kind",
                description=ALERT_NOTE,
                unit="short",
                label="kind",
                stacked=True,
                bars=True,
                height=4,
            ),
            ch_table(
                "Recent runaway alerts",
                "SELECT alert_id, max(fired_at) AS fired, any(kind) AS alert_kind, any(severity) AS alert_severity, "
                "any(title) AS alert_title, any(subject['trace_id']) AS trace, any(subject['agent']) AS agent_name, "
                "any(subject['service']) AS service, any(subject['model']) AS model_name, "
                "any(subject['team']) AS owner_team, any(containment != '') AS contained, "
                f"any(message) AS alert_message FROM alerts WHERE {RUNAWAY} "
                "GROUP BY alert_id ORDER BY fired DESC LIMIT 100",
                description=ALERT_NOTE + " `otel-cost alerts --format json` prints the evidence.",
            ),
            ch_table(
                "Top traces by cost",
                top_traces("spend_usd"),
                description="Billable calls grouped by trace over the range.",
                units=trace_units,
                width=12,
            ),
            ch_table(
                "Top traces by calls",
                top_traces("call_count"),
                description="Billable calls grouped by trace over the range.",
                units=trace_units,
                width=12,
            ),
            ch_timeseries(
                "Calls per minute by agent",
                f"SELECT {MINUTE_BUCKET} AS time, if(agent = '', '(no agent)', agent) AS agent_name, "
                "sum(calls) * 60 / greatest($__interval_s, 60) AS calls_per_minute FROM spend_minute "
                f"WHERE {MINUTES} GROUP BY time, agent_name ORDER BY time, agent_name",
                description="Billable calls per minute, from the minute rollup (kept 14 days).",
                unit="short",
                label="agent_name",
            ),
            ch_timeseries(
                "Error rate by model",
                f"SELECT $__timeInterval(timestamp) AS time, {MODEL} AS model_name, "
                "countIf(status = 'error') / count() AS error_rate "
                f"FROM requests WHERE {CALLS} GROUP BY time, model_name ORDER BY time, model_name",
                description="Failed billable calls / billable calls, per model.",
                unit="percentunit",
                label="model_name",
            ),
        ],
    )


# --- otel-cost's own health (Prometheus) -------------------------------------------------------------


def rate(metric: str, by: str = "", window: str = "$__rate_interval") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}{{{PROM_JOB}}}[{window}]))"


def quantile(q: float, histogram: str) -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket{{{PROM_JOB}}}[$__rate_interval])))"


def health() -> builders.Dashboard:
    board = new_dashboard(
        "otel-cost-health",
        "otel-cost / Health",
        "otel-cost's own /metrics (Prometheus job otel-cost): ingest, store, enforcer, alert delivery.",
        ["health"],
    )
    return add(
        board,
        [
            row("Ingest"),
            prom_stat(
                "Instances up",
                f"sum(up{{{PROM_JOB}}})",
                description="Scrape targets of the otel-cost job answering /metrics on :8318.",
            ),
            prom_stat(
                "Spans accepted (1h)",
                f"sum(increase(otel_cost_spans_accepted_total{{{PROM_JOB}}}[1h]))",
                description="Spans in acknowledged exports over the last hour.",
                unit="short",
            ),
            prom_stat(
                "Spans rejected (1h)",
                f"sum(increase(otel_cost_spans_rejected_total{{{PROM_JOB}}}[1h]))",
                description="Spans refused over the last hour, every reason.",
                unit="short",
            ),
            prom_stat(
                "Store pending rows",
                f"sum(otel_cost_store_pending_rows{{{PROM_JOB}}})",
                description="Rows waiting for the store; past store.queue_size exports are refused (retryable).",
                unit="short",
            ),
            prom_timeseries(
                "Spans per second",
                [
                    (rate("otel_cost_spans_received_total"), "received"),
                    (rate("otel_cost_spans_accepted_total"), "accepted"),
                    (rate("otel_cost_duplicate_spans_total"), "duplicates"),
                ],
                description="Received: in exports that reached the pipeline; accepted: acknowledged; duplicates: "
                "already stored (exporter retries).",
                unit="short",
            ),
            prom_timeseries(
                "Rejected spans by reason",
                [(rate("otel_cost_spans_rejected_total", "reason"), "{{reason}}")],
                description="invalid: named in partial_success; whole exports: decode, too_large, media_type, "
                "unauthenticated, overloaded, store_unavailable, internal.",
                unit="short",
                stacked=True,
            ),
            prom_timeseries(
                "Calls stored per second",
                [
                    (rate("otel_cost_calls_stored_total", "billable"), "billable={{billable}}"),
                    (rate("otel_cost_unpriced_calls_total"), "unpriced"),
                    (rate("otel_cost_unattributed_calls_total"), "unattributed"),
                ],
                description="Rows stored by billable, and billable calls stored with no price or no owner.",
                unit="short",
            ),
            prom_timeseries(
                "Spend rate by team (approximate)",
                [
                    (
                        "sum by (team) (rate(otel_cost_spend_usd_total{"
                        + PROM_JOB
                        + ', team=~"${team:regex}"}[$__rate_interval])) * 3600',
                        "{{team}}",
                    )
                ],
                description="USD per hour from the process's float counter (at most 500 team/model pairs); the "
                "exact ledger is the store (Spend overview dashboard).",
                unit="currencyUSD",
                stacked=True,
            ),
            row("Store"),
            prom_timeseries(
                "Store pending rows",
                [(f"sum by (instance) (otel_cost_store_pending_rows{{{PROM_JOB}}})", "{{instance}}")],
                description="The queue in front of the store: rows not yet acknowledged to anyone.",
                unit="short",
            ),
            prom_timeseries(
                "Store flush latency",
                [
                    (quantile(0.5, "otel_cost_store_flush_seconds"), "p50"),
                    (quantile(0.99, "otel_cost_store_flush_seconds"), "p99"),
                ],
                description="One insert into the store.",
                unit="s",
            ),
            prom_timeseries(
                "Rows inserted per second",
                [(rate("otel_cost_store_rows_inserted_total"), "rows")],
                description="Rows written to the store.",
                unit="short",
                width=24,
            ),
            row("Forwarding (processor mode)"),
            prom_timeseries(
                "Forwarded spans per second",
                [(rate("otel_cost_forward_spans_total", "endpoint, outcome"), "{{endpoint}} {{outcome}}")],
                description="forwarded; rejected (refused by the downstream); dropped (its queue was full, the server "
                "stopped); skipped_retry (a client's retry of an export forwarded before). Empty without forward.",
                unit="short",
            ),
            prom_timeseries(
                "Forward queue",
                [(f"sum by (endpoint) (otel_cost_forward_queue_bytes{{{PROM_JOB}}})", "{{endpoint}}")],
                description="Bytes of acknowledged exports waiting for each downstream (forward.endpoints[]."
                "queue_max_bytes: past it the oldest are dropped). The store already has them.",
                unit="bytes",
            ),
            prom_timeseries(
                "Forward retries and dropped exports",
                [
                    (rate("otel_cost_forward_retries_total", "endpoint"), "{{endpoint}} retries"),
                    (rate("otel_cost_forward_dropped_exports_total", "endpoint, reason"), "{{endpoint}} {{reason}}"),
                ],
                description="Failed attempts that will be retried (the downstream is down or throttling), and "
                "exports given up by reason.",
                unit="short",
                width=24,
            ),
            row("Enforcer"),
            prom_timeseries(
                "Enforcer poll latency",
                [
                    (quantile(0.5, "otel_cost_enforcer_poll_seconds"), "p50"),
                    (quantile(0.99, "otel_cost_enforcer_poll_seconds"), "p99"),
                ],
                description="Evaluating every budget once, rollup queries included.",
                unit="s",
            ),
            prom_timeseries(
                "Budget evaluations by outcome",
                [(rate("otel_cost_enforcer_evaluations_total", "outcome"), "{{outcome}}")],
                description="failed: the last cap state is kept and gateways see it age.",
                unit="short",
            ),
            prom_stat(
                "Cap state version",
                f"max(otel_cost_cap_state_version{{{PROM_JOB}}})",
                description="The published cap state's version; it changes only when a decision does.",
                unit="none",
            ),
            prom_stat(
                "Cap state changes (1h)",
                f"sum(changes(otel_cost_cap_state_version{{{PROM_JOB}}}[1h]))",
                description="How often the decisions changed over the last hour.",
                unit="short",
            ),
            prom_stat(
                "Automatic caps",
                f"sum(otel_cost_automatic_caps{{{PROM_JOB}}})",
                description="Runaway containment caps in force.",
                unit="short",
            ),
            prom_stat(
                "Budget evaluations failing (5m)",
                f'sum(increase(otel_cost_enforcer_evaluations_total{{{PROM_JOB}, outcome="failed"}}[5m]))',
                description="Failed evaluations over the last five minutes.",
                unit="short",
            ),
            prom_timeseries(
                "Caps by action",
                [(f"sum by (action) (otel_cost_caps{{{PROM_JOB}}})", "{{action}}")],
                description="Caps in the published state, by action.",
                unit="short",
                stacked=True,
            ),
            prom_timeseries(
                "Budget utilization",
                [
                    (
                        f"max by (budget, group) (otel_cost_budget_utilization_ratio{{{PROM_JOB}}})",
                        "{{budget}} {{group}}",
                    )
                ],
                description="Spent / limit per cap, as the enforcer last computed it.",
                unit="percentunit",
            ),
            row("Alerts"),
            prom_timeseries(
                "Alert queue depth",
                [(f"sum by (sink) (otel_cost_alert_queue_alerts{{{PROM_JOB}}})", "{{sink}}")],
                description="Alerts waiting for each sink.",
                unit="short",
            ),
            prom_timeseries(
                "Alert deliveries",
                [(rate("otel_cost_alert_deliveries_total", "sink, outcome"), "{{sink}} {{outcome}}")],
                description="delivered; retried (a failed attempt); failed (given up); dropped (queue full, re-sent "
                "after a restart).",
                unit="short",
            ),
            prom_timeseries(
                "Alerts fired",
                [
                    (
                        f"sum by (kind) (increase(otel_cost_alerts_fired_total{{{PROM_JOB}}}[$__rate_interval]))",
                        "{{kind}}",
                    )
                ],
                description="Alerts fired, by kind.",
                unit="short",
                stacked=True,
            ),
            prom_timeseries(
                "Detector run time",
                [
                    (quantile(0.5, "otel_cost_alert_detectors_seconds"), "p50"),
                    (quantile(0.99, "otel_cost_alert_detectors_seconds"), "p99"),
                ],
                description="One run of every runaway and hygiene detector.",
                unit="s",
            ),
            prom_timeseries(
                "Peak resident memory",
                [
                    (f"max by (instance) (otel_cost_process_peak_resident_memory_bytes{{{PROM_JOB}}})", "server"),
                    (f"max by (instance) (otel_cost_workers_peak_resident_memory_bytes{{{PROM_JOB}}})", "workers"),
                ],
                description="Peak RSS of the server process and of its pipeline workers (summed).",
                unit="bytes",
                width=24,
            ),
        ],
    )


DASHBOARDS: dict[str, Callable[[], builders.Dashboard]] = {
    "spend-overview.json": spend_overview,
    "budgets.json": budgets,
    "unit-economics.json": unit_economics,
    "hygiene.json": hygiene,
    "runaway-watch.json": runaway_watch,
    "health.json": health,
}


def render() -> dict[str, str]:
    """File name -> the JSON text Grafana loads."""
    return {
        name: json.dumps(make().build(), cls=JSONEncoder, indent=2, ensure_ascii=False) + "\n"
        for name, make in DASHBOARDS.items()
    }


def main(argv: list[str]) -> int:
    rendered = render()
    if "--check" in argv:
        stale = [
            name
            for name, text in rendered.items()
            if not (DASHBOARDS_DIR / name).is_file() or (DASHBOARDS_DIR / name).read_text() != text
        ]
        for name in stale:
            print(f"grafana/dashboards/{name} differs from grafana/build.py's output", file=sys.stderr)
        return 1 if stale else 0
    DASHBOARDS_DIR.mkdir(exist_ok=True)
    for name, text in rendered.items():
        (DASHBOARDS_DIR / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
