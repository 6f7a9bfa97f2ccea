"""The Grafana dashboards and provisioning in grafana/: they load into Grafana's own SDK model, their JSON is
what grafana/build.py generates, and every ClickHouse query (panels and template variables), with the
plugin's macros expanded as the plugin expands them, runs on a real store filled through the receiver and
returns the columns its panel type needs. The health dashboard names only metrics otel-cost exposes."""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog import plugins as cogplugins
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as sdk_dashboard
from grafana_foundation_sdk.models import prometheus as sdk_prometheus
from prometheus_client.parser import text_string_to_metric_families

from otel_cost.store import QueryResult, Store

from .helpers import RunningServer, chat_attributes, export, load_script, make_request, make_span, wait_for
from .test_dedup import ANTHROPIC as SONNET  # a cached Claude call, billed once

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
EXPECTED_FILES = {
    "spend-overview.json",
    "budgets.json",
    "unit-economics.json",
    "hygiene.json",
    "runaway-watch.json",
    "health.json",
}
CLICKHOUSE_TYPE = "grafana-clickhouse-datasource"
OWNER_VARIABLES = ("team", "feature", "environment")
#: Panel type -> the ClickHouse plugin's (format, queryType) for it: 0 time series, 1 table.
TARGET_SHAPE = {"timeseries": (0, "timeSeries"), "stat": (1, "table"), "table": (1, "table"), "bargauge": (1, "table")}
NUMERIC = re.compile(r"^(Nullable\()?(U?Int\d+|Float\d+|Decimal)")
STRING = re.compile(r"^(LowCardinality\()?(Nullable\()?String")


BUILD = load_script(GRAFANA / "build.py", "otel_cost_grafana_build")


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in DASHBOARD_FILES}


def panels(board: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # a collapsed row's panels


def clickhouse_panels(board: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in panels(board):
        if any(target.get("datasource", {}).get("type") == CLICKHOUSE_TYPE for target in panel.get("targets", [])):
            yield panel


# --- the plugin's macros, expanded as grafana-clickhouse-datasource does ---------------------------------

ALL = "$__all"


@dataclass
class Selection:
    """What the dashboard's variables hold: the picked values, or ALL; `options` are every value a variable
    offers (what Grafana substitutes for All outside `$__conditionalAll`)."""

    picked: dict[str, list[str] | str]
    options: dict[str, list[str]] = field(default_factory=dict)

    def values(self, name: str) -> list[str]:
        if name not in self.picked:
            raise KeyError(f"${name} is not a variable of the dashboard")
        picked = self.picked[name]
        return self.options.get(name, []) if picked == ALL else list(picked)

    def is_all(self, name: str) -> bool:
        if name not in self.picked:
            raise KeyError(f"${name} is not a variable of the dashboard")
        return self.picked[name] == ALL or self.picked[name] == []


def macro_args(sql: str, open_paren: int) -> list[str]:
    """The plugin's getMacroArgs: arguments split at commas outside nested parentheses."""
    depth, start, args = 0, open_paren + 1, []
    for index in range(open_paren, len(sql)):
        char = sql[index]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 1:
            args.append(sql[start:index])
            start = index + 1
        if depth == 0:
            args.append(sql[start:index])
            return args
    return []


def closing(sql: str, open_paren: int) -> int:
    """The index of the parenthesis that closes the one at `open_paren`."""
    depth = 0
    for index in range(open_paren, len(sql)):
        depth += {"(": 1, ")": -1}.get(sql[index], 0)
        if depth == 0:
            return index
    raise ValueError(f"unbalanced parentheses in {sql}")


def conditionals(sql: str) -> list[tuple[str, str]]:
    """Every `$__conditionalAll(condition, $var)` in `sql`, as (condition, $var)."""
    macro = "$__conditionalAll("
    found = []
    for match in re.finditer(re.escape(macro), sql):
        args = macro_args(sql, match.end() - 1)
        assert len(args) == 2, f"$__conditionalAll takes 2 arguments: {sql[match.start() :]}"
        found.append((args[0], args[1].strip()))
    return found


def apply_conditional_all(sql: str, selection: Selection) -> str:
    """Frontend, first: `$__conditionalAll(condition, $var)` -> `1=1` when All (or nothing) is picked, else the
    condition (CHDatasource.applyConditionalAll)."""
    macro = "$__conditionalAll("
    index = sql.rfind(macro)
    while index != -1:
        args = macro_args(sql, index + len(macro) - 1)
        if len(args) != 2:
            raise ValueError(f"$__conditionalAll takes 2 arguments, got {args!r} in {sql}")
        variable = re.search(r"(?<=\$\{)\w+(?=\})|(?<=\$)\w+", args[1].strip())
        phrase = args[0]
        if variable and selection.is_all(variable.group()):
            phrase = "1=1"
        sql = sql.replace(f"{macro}{args[0]},{args[1]})", phrase, 1)
        index = sql.rfind(macro)
    return sql


TEMPLATE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


def replace_variables(sql: str, selection: Selection) -> str:
    """Frontend, second: Grafana's template service with the plugin's formatter (a multi value becomes
    'a','b'); `${var:singlequote}` escapes quotes. Names starting with __ are left for the backend."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        if name.startswith("__"):
            return match.group(0)
        values = selection.values(name)
        fmt = match.group(2)
        if fmt == "singlequote":
            return ",".join("'" + value.replace("'", "\\'") + "'" for value in values)
        if fmt is not None:
            raise ValueError(f"format {fmt!r} is not expanded by this test")
        return "'" + "','".join(values) + "'" if len(values) != 1 else values[0]

    return TEMPLATE.sub(substitute, sql)


@dataclass
class TimeRange:
    start: datetime
    end: datetime
    interval_seconds: int


MACRO = re.compile(r"\$__(\w+)")


def expand_macros(sql: str, when: TimeRange) -> str:
    """Backend: the plugin's macros (pkg/macros) over sqlds; an unknown one is an error here."""
    start, end = int(when.start.timestamp()), int(when.end.timestamp())
    seconds = max(when.interval_seconds, 1)
    out, position = [], 0
    for match in MACRO.finditer(sql):
        if match.start() < position:
            continue
        name = match.group(1)
        args: list[str] = []
        end_of_macro = match.end()
        if end_of_macro < len(sql) and sql[end_of_macro] == "(":
            args = [arg.strip() for arg in macro_args(sql, end_of_macro)]
            end_of_macro = closing(sql, end_of_macro) + 1
        if name == "timeFilter":
            (column,) = args
            text = f"{column} >= toDateTime({start}) AND {column} <= toDateTime({end})"
        elif name == "timeInterval":
            (column,) = args
            text = f"toStartOfInterval(toDateTime({column}), INTERVAL {seconds} second)"
        elif name == "interval_s":
            text = str(seconds)
        elif name == "fromTime":
            text = f"toDateTime({start})"
        elif name == "toTime":
            text = f"toDateTime({end})"
        else:
            raise ValueError(f"macro $__{name} is not one this test expands (or the plugin knows)")
        out.append(sql[position : match.start()] + text)
        position = end_of_macro
    out.append(sql[position:])
    return "".join(out)


def expand(sql: str, selection: Selection, when: TimeRange) -> str:
    expanded = expand_macros(replace_variables(apply_conditional_all(sql, selection), selection), when)
    assert "$" not in expanded, f"unexpanded: {expanded}"
    return expanded


def test_the_expander_does_what_the_plugin_does() -> None:
    when = TimeRange(datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC), 600)
    sql = (
        "SELECT $__timeInterval(timestamp) AS time, $__interval_s AS s FROM t WHERE $__timeFilter(timestamp) "
        "AND $__conditionalAll(team IN (${team:singlequote}), $team) AND "
        "$__conditionalAll((NOT mapContains(m, 'x') OR m['x'] IN (${feature:singlequote})), $feature)"
    )
    everything = Selection({"team": ALL, "feature": ALL}, {"team": ["a", "b"], "feature": ["f"]})
    assert expand(sql, everything, when) == (
        "SELECT toStartOfInterval(toDateTime(timestamp), INTERVAL 600 second) AS time, 600 AS s FROM t WHERE "
        "timestamp >= toDateTime(1795996800) AND timestamp <= toDateTime(1796083200) AND 1=1 AND 1=1"
    )
    picked = Selection({"team": ["a", "o'neil"], "feature": ["f"]})
    assert expand(sql, picked, when).endswith(
        "AND team IN ('a','o\\'neil') AND (NOT mapContains(m, 'x') OR m['x'] IN ('f'))"
    )
    assert expand("SELECT $__fromTime, $__toTime", everything, when) == (
        "SELECT toDateTime(1795996800), toDateTime(1796083200)"
    )
    with pytest.raises(ValueError, match=r"\$__timeFrom"):
        expand("SELECT $__timeFrom", everything, when)
    with pytest.raises(KeyError):
        expand("SELECT $__conditionalAll(x IN (${teams:singlequote}), $teams)", everything, when)


# --- the JSON: Grafana's SDK model, the generator, the plugin's target shape -----------------------------


@pytest.fixture(scope="module")
def sdk() -> None:
    cogplugins.register_default_plugins()
    # The SDK has no ClickHouse model: register the strict one the generator writes, so a target with an
    # unexpected key (or another data source) fails to load.
    cogruntime.register_dataquery_variant(cogruntime.DataqueryConfig(CLICKHOUSE_TYPE, BUILD.ClickHouseQuery.from_json))


def test_the_committed_dashboards_are_what_build_py_generates() -> None:
    assert {path.name for path in DASHBOARD_FILES} == EXPECTED_FILES
    rendered = BUILD.render()
    assert set(rendered) == EXPECTED_FILES
    for name, text in rendered.items():
        assert (GRAFANA / "dashboards" / name).read_text() == text, (
            f"grafana/dashboards/{name} is stale: run .venv/bin/python grafana/build.py"
        )


def test_every_dashboard_loads_into_the_grafana_sdk_model(sdk: None) -> None:
    known_panels = set(cogruntime.Runtime().panelcfg_variants) | {"row"}
    for name, board in dashboards().items():
        model = sdk_dashboard.Dashboard.from_json(board)
        # Nothing the model does not know is lost: encoding it again gives the same document.
        again = json.loads(json.dumps(model, cls=JSONEncoder))
        assert again == board, f"{name}: the SDK model drops or changes something"
        assert model.uid and model.title and model.panels, name
        for panel in model.panels:
            kind = panel.type_val
            assert kind in known_panels, f"{name}: unknown panel type {kind}"
            for target in getattr(panel, "targets", None) or []:
                assert isinstance(target, BUILD.ClickHouseQuery | sdk_prometheus.Dataquery), (name, panel.title)


def test_dashboard_settings_and_variables() -> None:
    boards = dashboards()
    uids = [board["uid"] for board in boards.values()]
    assert len(set(uids)) == len(uids) == len(EXPECTED_FILES)
    titles = [board["title"] for board in boards.values()]
    assert len(set(titles)) == len(titles)
    for name, board in boards.items():
        assert re.fullmatch(r"otel-cost-[a-z-]+", board["uid"]) and len(board["uid"]) <= 40, name
        assert board["schemaVersion"] >= 39 and board["editable"] is True, name
        assert board["time"] == {"from": "now-7d", "to": "now"} and board["refresh"] == "1m", name
        ids = [panel["id"] for panel in panels(board)]
        assert len(set(ids)) == len(ids), f"{name}: panel ids repeat"
        variables = {variable["name"]: variable for variable in board["templating"]["list"]}
        assert set(OWNER_VARIABLES) <= set(variables), name
        for variable in (variables[owner] for owner in OWNER_VARIABLES):
            assert variable["type"] == "query" and variable["datasource"]["uid"] == "clickhouse", name
            assert variable["multi"] is True and variable["includeAll"] is True, name
            assert variable["current"]["value"] == [ALL], name
            assert "$__timeFilter(hour)" in variable["query"] and "spend_hour" in variable["query"], name
            assert "allValue" not in variable, f"{name}: $__conditionalAll needs All to stay $__all"


def test_every_clickhouse_target_has_the_plugin_shape_and_every_filter() -> None:
    count = 0
    for name, board in dashboards().items():
        for panel in clickhouse_panels(board):
            where = f"{name} / {panel['title']}"
            assert panel["type"] in TARGET_SHAPE, where
            assert panel["datasource"] == {"type": CLICKHOUSE_TYPE, "uid": "clickhouse"}, where
            fmt, query_type = TARGET_SHAPE[panel["type"]]
            for target in panel["targets"]:
                count += 1
                assert target["datasource"] == {"type": CLICKHOUSE_TYPE, "uid": "clickhouse"}, where
                assert target["editorType"] == "sql" and target["rawSql"].strip(), where
                assert (target["format"], target["queryType"]) == (fmt, query_type), where
                sql = target["rawSql"]
                if panel["type"] == "timeseries":
                    assert re.search(r"\bAS time\b", sql) and re.search(r"ORDER BY time\b", sql), where
                conditions = conditionals(sql)
                for variable in OWNER_VARIABLES:
                    assert any(
                        guard == f"${variable}" and f"${{{variable}:singlequote}}" in condition
                        for condition, guard in conditions
                    ), f"{where}: ${variable} is not applied"
                assert "FINAL" not in sql.upper().split(), where
    assert count >= 40


# --- provisioning -----------------------------------------------------------------------------------------


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "otel-cost.yaml").read_text())
    assert document["apiVersion"] == 1
    return {source["uid"]: source for source in document["datasources"]}


def test_the_datasources_are_provisioned_and_every_panel_uses_one() -> None:
    sources = provisioned_datasources()
    clickhouse, prom = sources["clickhouse"], sources["prometheus"]
    assert clickhouse["type"] == CLICKHOUSE_TYPE and prom["type"] == "prometheus"
    settings = clickhouse["jsonData"]
    assert settings["defaultDatabase"] == "otel_cost" and settings["protocol"] in ("native", "http")
    assert settings["host"] and settings["port"] and settings["username"] == "grafana_ro"
    assert re.fullmatch(r"\$\{[A-Z_]+\}", clickhouse["secureJsonData"]["password"]), "the password comes from env"
    assert prom["url"].startswith("http") and prom["access"] == clickhouse.get("access", "proxy") == "proxy"
    used: set[tuple[str, str]] = set()
    for board in dashboards().values():
        for variable in board["templating"]["list"]:
            used.add((variable["datasource"]["type"], variable["datasource"]["uid"]))
        for panel in panels(board):
            for ref in [panel.get("datasource")] + [target.get("datasource") for target in panel.get("targets", [])]:
                if ref:
                    used.add((ref["type"], ref["uid"]))
    assert used == {(source["type"], uid) for uid, source in sources.items()}


def test_the_dashboard_provider_loads_the_dashboards_folder() -> None:
    document = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "otel-cost.yaml").read_text())
    assert document["apiVersion"] == 1
    (provider,) = document["providers"]
    assert provider["type"] == "file" and provider["folder"] == "otel-cost"
    path = provider["options"]["path"]
    readme = (GRAFANA / "README.md").read_text()
    # The README mounts grafana/dashboards at the provider's path, and the provisioning at Grafana's.
    assert re.search(rf"grafana/dashboards:{re.escape(path)}(:ro)?[\"\s]", readme), path
    assert "grafana/provisioning:/etc/grafana/provisioning" in readme
    assert "GF_INSTALL_PLUGINS=grafana-clickhouse-datasource" in readme
    assert "grafana-cli plugins install grafana-clickhouse-datasource" in readme
    for name, board in dashboards().items():
        assert name in readme and board["uid"] in readme, f"grafana/README.md does not describe {name}"


def test_prometheus_scrapes_otel_cost_as_the_health_dashboard_expects() -> None:
    config = yaml.safe_load((GRAFANA / "prometheus" / "prometheus.yml").read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "otel-cost"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [target for group in job["static_configs"] for target in group["targets"]]
    assert targets and all(target.endswith(":8318") for target in targets)
    assert any("alerts/otel-cost.rules.yaml" in rule for rule in config.get("rule_files", []))
    for panel in panels(dashboards()["health.json"]):
        for target in panel.get("targets", []):
            assert 'job="otel-cost"' in target["expr"], panel["title"]


# --- a real store, filled through the receiver ------------------------------------------------------------

PAYMENTS = {"service.name": "checkout-assistant", "team": "payments", "deployment.environment.name": "prod"}
SEARCH = {"service.name": "search-api", "team": "search", "deployment.environment.name": "prod"}
DOCS = {"service.name": "doc-pipeline", "team": "data-platform", "deployment.environment.name": "prod"}
LABS = {"service.name": "labs-prototype", "deployment.environment.name": "staging"}  # no owner: unattributed
RESEARCH = {"service.name": "notebook", "team": "research", "deployment.environment.name": "dev"}
QUOTED = {"service.name": "lab-notebook", "team": "o'neil-lab", "deployment.environment.name": "dev"}
MINI = {"gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini"}
OPUS = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "anthropic",
    "gen_ai.request.model": "claude-opus-4-1",
    "gen_ai.usage.input_tokens": 30_000,
    "gen_ai.usage.output_tokens": 1_000,
}
UNPRICED = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "vllm",
    "gen_ai.request.model": "acme-llm-7b-instruct",
    "gen_ai.usage.input_tokens": 2_000,
    "gen_ai.usage.output_tokens": 500,
}


def ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def stored(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class Filled:
    server: RunningServer
    store: Store
    now: datetime
    when: TimeRange
    traces: dict[str, str]  # name -> trace id (hex)


def fill(server: RunningServer, now: datetime) -> dict[str, str]:
    traces = {name: uuid.uuid4().hex for name in ("checkout", "mixed", "refund", "loop", "storm", "judged_only")}
    tid = {name: bytes.fromhex(value) for name, value in traces.items()}

    def at(minutes: float) -> int:
        return ns(now - timedelta(minutes=minutes)) - 1_000_000_000

    cached = {"gen_ai.usage.cache_read.input_tokens": 800, "gen_ai.usage.input_tokens": 1200}
    checkout = {"app.feature": "checkout-help", "gen_ai.agent.name": "cart-agent", **cached}
    payments = [  # gpt-4o answered by its dated snapshot: a floating alias, with cache reads
        make_span(chat_attributes(**checkout), trace_id=tid["checkout"], start_ns=at(240)),
        make_span(chat_attributes(**checkout), trace_id=tid["checkout"], start_ns=at(180)),
        make_span(chat_attributes(**checkout), trace_id=tid["mixed"], start_ns=at(120)),
        make_span(
            chat_attributes(**{**MINI, "app.feature": "refunds", "gen_ai.agent.name": "refund-agent"}),
            trace_id=tid["mixed"],
            start_ns=at(119),
        ),
        make_span(
            chat_attributes(**{**MINI, "app.feature": "refunds", "gen_ai.agent.name": "refund-agent"}),
            trace_id=tid["refund"],
            start_ns=at(90),
        ),
    ]
    export(server, make_request(payments, resource=PAYMENTS))
    ranking_owner = {"app.feature": "ranking", "gen_ai.agent.name": "ranker"}
    ranking = {**MINI, **ranking_owner}
    failed = {
        **ranking,
        "error.type": "rate_limit_error",
        "gen_ai.usage.input_tokens": 0,
        "gen_ai.usage.output_tokens": 0,
    }
    search = [
        make_span(chat_attributes(**ranking), start_ns=at(200)),
        # A retry storm: two failures, then the retry that worked, in one trace.
        make_span(chat_attributes(**failed), trace_id=tid["storm"], start_ns=at(6), error=True),
        make_span(chat_attributes(**failed), trace_id=tid["storm"], start_ns=at(5), error=True),
        make_span(chat_attributes(**ranking), trace_id=tid["storm"], start_ns=at(4)),
    ]
    export(server, make_request(search, resource=SEARCH))
    # One call instrumented twice (the library's span and, inside it, the provider SDK's): billed once, the
    # other row stored with billable = 0 and a cost, which no panel may count.
    outer = make_span({**SONNET, **ranking_owner}, name="anthropic.chat", start_ns=at(150))
    inner = make_span(
        {**SONNET, **ranking_owner},
        trace_id=outer.trace_id,
        parent_span_id=outer.span_id,
        name="chat claude-sonnet-4-5",
        start_ns=at(150),
    )
    export(server, make_request([inner, outer], resource=SEARCH, scope="opentelemetry.instrumentation.anthropic"))
    triage = {**OPUS, "app.feature": "contract-intake", "gen_ai.agent.name": "doc-triage"}
    baseline = {**triage, "gen_ai.usage.input_tokens": 1_000, "gen_ai.usage.output_tokens": 10}
    docs = [make_span(baseline, start_ns=at(200))]  # the agent's quiet history, then a loop: a spend spike
    docs += [make_span(triage, trace_id=tid["loop"], start_ns=at(12 - step)) for step in range(6)]
    export(
        server, make_request(docs, resource=DOCS, scope="opentelemetry.instrumentation.anthropic", scope_version="0.40")
    )
    export(server, make_request([make_span(chat_attributes(), start_ns=at(60))], resource=LABS))
    unpriced = [make_span(UNPRICED, start_ns=at(30 + step)) for step in range(3)]
    export(server, make_request(unpriced, resource=RESEARCH))
    export(server, make_request([make_span(chat_attributes(**MINI), start_ns=at(45))], resource=QUOTED))
    return traces


def send_outcomes(server: RunningServer, now: datetime, traces: Mapping[str, str]) -> None:
    """Outcomes through the receiver, as a feedback service reports them: `otel_cost.outcome` on its
    spans, in the traces whose calls they judge."""
    spans = []

    def outcome(trace: str, minutes: float, result: str, feature: str, team: str) -> Any:
        end_ns = int((now - timedelta(minutes=minutes)).timestamp()) * 1_000_000_000
        attributes = {"otel_cost.outcome": result, "app.feature": feature, "app.team": team}
        return make_span(attributes, trace_id=bytes.fromhex(traces[trace]), name="feedback", start_ns=end_ns - 10**9)

    repeated = outcome("checkout", 50, "accepted", "feedback-widget", "web")
    spans = [
        outcome("checkout", 55, "rejected", "feedback-widget", "web"),  # superseded by the later outcome
        repeated,
        repeated,  # the same outcome twice (as a retried export would send it)
        outcome("mixed", 100, "rejected", "feedback-widget", "web"),  # mostly checkout-help's spend
        outcome("refund", 80, "accepted", "feedback-widget", "web"),
        outcome("judged_only", 70, "accepted", "ranking", "search"),  # no calls: the outcome's own feature
    ]
    export(server, make_request(spans, resource={"service.name": "feedback", "deployment.environment.name": "prod"}))
    # The repeat has the same key (trace, span, source, name): it collapses into one row in the insert.
    assert server.scalar("SELECT count() FROM outcomes") == len(spans) - 1


def snapshot_rows(now: datetime) -> list[dict[str, Any]]:
    """`budget_snapshots` rows as the enforcer writes them, inserted directly for states a test cannot reach
    in seconds (three hours of history, a limit ahead, a block, a budget since removed). Rows the enforcer
    writes for the configured budget may sit beside them; the assertions pick these budgets by name."""
    rows = []
    start = now.replace(second=0, microsecond=0) - timedelta(hours=3)
    period = now.replace(second=0, microsecond=0) - timedelta(days=3)  # the synthetic periods hold the test
    for step in range(19):  # every 10 minutes for three hours
        moment = start + timedelta(minutes=10 * step)
        spent = Decimal("1") + Decimal("0.2") * step
        action = "allow" if spent < Decimal("2.5") else "alert" if spent < Decimal("4.5") else "downgrade"
        common = {"evaluated_at": stored(moment), "period_start": stored(period), "automatic": 0}
        rows.append(
            {
                **common,
                "budget": "payments-weekly",
                "scope": {"team": "payments"},
                "scope_key": "team=payments",
                "action": action,
                "spent": str(spent),
                "limit_amount": "5",
                "forecast": "6.5",
                "period_end": stored(period + timedelta(days=7)),
                "limit_at": stored(now + timedelta(hours=1)),
                "reason": f"{spent / 5:.0%} of 5 USD spent",
            }
        )
        rows.append(
            {
                **common,
                "budget": "agent-hourly-guard",
                "scope": {"environment": "prod", "agent": "doc-triage"},
                "scope_key": "agent=doc-triage,environment=prod",
                "action": "block" if step == 18 else "allow",
                "spent": "51" if step == 18 else "3",
                "limit_amount": "50",
                "forecast": "0",
                "period_end": stored(moment),
                "limit_at": None if step == 18 else stored(now + timedelta(hours=5)),  # reached: no longer ahead
                "reason": "102% of 50 USD spent" if step == 18 else "6% of 50 USD spent",
            }
        )
        rows.append(
            {
                **common,
                "budget": "company-monthly",
                "scope": {},
                "scope_key": "",
                "action": "allow",
                "spent": str(Decimal("10") + step),
                "limit_amount": "1000",
                "forecast": "300",
                "period_end": stored(period + timedelta(days=30)),
                "limit_at": None,
                "reason": "",
            }
        )
        if step <= 6:  # a budget since removed from the config: its caps are gone
            rows.append(
                {
                    **rows[-1],
                    "budget": "retired",
                    "scope": {"team": "search"},
                    "scope_key": "team=search",
                    "action": "alert",
                    "reason": "retired",
                }
            )
    return rows


@pytest.fixture(scope="module")
def filled(chdb_path: Path, janitor: Store) -> Iterator[Filled]:
    database = f"t_grafana_{uuid.uuid4().hex[:10]}"
    now = datetime.now(UTC).replace(microsecond=0)
    overrides: dict[str, Any] = {
        "alerts": {
            "interval_seconds": 0.2,
            "runaway": {
                "agent_loop": {"max_calls": 5},
                "retry_storm": {"min_failures": 2, "min_retries": 1},
                "spend_spike": {"dimensions": ["agent"]},
            },
        },
        "budgets": [
            {
                "name": "payments-daily",
                "scope": {"team": "payments"},
                "period": "day",
                "limit": "5",
                "alert_at": [0.5],
            }
        ],
    }
    server = RunningServer(f"chdb:{chdb_path}?database={database}", overrides)
    try:
        traces = fill(server, now)
        store = server.server.store
        assert store is not None
        send_outcomes(server, now, traces)
        store.insert_rows("budget_snapshots", snapshot_rows(now), f"grafana-snapshots-{database}")
        wait_for(
            lambda: (
                {row[0] for row in store.query("SELECT DISTINCT kind FROM alerts").rows}
                >= {"agent_loop", "retry_storm", "spend_spike"}
            ),
            timeout=20,
            what="the runaway alerts",
        )
        when = TimeRange(now - timedelta(hours=12), now + timedelta(minutes=10), 600)
        yield Filled(server, store, now, when, traces)
    finally:
        server.close()
        janitor.execute(f"DROP DATABASE IF EXISTS {database} SYNC")


def variable_options(filled: Filled, board: Mapping[str, Any], selection: Selection) -> dict[str, list[str]]:
    options = {}
    for variable in board["templating"]["list"]:
        result = filled.store.query(expand(variable["query"], selection, filled.when))
        assert len(result.columns) == 1 and STRING.match(result.columns[0][1]), (variable["name"], result.columns)
        options[variable["name"]] = [row[0] for row in result.rows]
    return options


def check_shape(kind: str, result: QueryResult, where: str) -> None:
    types = [column_type for _, column_type in result.columns]
    assert types, f"{where}: no columns"
    numeric = [index for index, column_type in enumerate(types) if NUMERIC.match(column_type)]
    if kind == "timeseries":
        assert result.columns[0][0] == "time" and types[0].startswith("DateTime"), f"{where}: {result.columns}"
        assert numeric, f"{where}: no numeric column"
        labels = [index for index in range(1, len(types)) if index not in numeric]
        assert all(STRING.match(types[index]) for index in labels), f"{where}: a label column is not a string"
        times = [row[0] for row in result.rows]
        assert times == sorted(times), f"{where}: rows are not in time order (LongToWide needs them so)"
        keys = [(row[0], *(row[index] for index in labels)) for row in result.rows]
        assert len(set(keys)) == len(keys), f"{where}: a series has two rows at one time"
    elif kind == "stat":
        assert numeric and len(result.rows) == 1, f"{where}: {result.columns} {len(result.rows)} rows"
    elif kind == "bargauge":
        assert numeric and any(STRING.match(column_type) for column_type in types), f"{where}: {result.columns}"


def selections(options: Mapping[str, list[str]]) -> dict[str, Selection]:
    everything: dict[str, list[str] | str] = {name: ALL for name in OWNER_VARIABLES}
    return {
        "All": Selection(everything, dict(options)),
        "one value each": Selection({"team": ["payments"], "feature": ["checkout-help"], "environment": ["prod"]}),
        "several, one quoted": Selection(
            {"team": ["payments", "search", "o'neil-lab"], "feature": ALL, "environment": ["prod", "dev"]},
            dict(options),
        ),
    }


def run_panel(filled: Filled, panel: Mapping[str, Any], selection: Selection) -> QueryResult:
    (target,) = panel["targets"]
    return filled.store.query(expand(target["rawSql"], selection, filled.when))


def test_every_clickhouse_query_runs_on_a_filled_store(filled: Filled) -> None:
    ran = 0
    for name, board in dashboards().items():
        everything = Selection({variable: ALL for variable in OWNER_VARIABLES})
        options = variable_options(filled, board, everything)
        assert {"payments", "search", "unattributed", "o'neil-lab"} <= set(options["team"]), options
        assert {"checkout-help", "refunds", "ranking"} <= set(options["feature"])
        assert {"prod", "staging", "dev"} <= set(options["environment"])
        only_payments = variable_options(filled, board, Selection({"team": ["payments"], "feature": ALL}))
        assert set(only_payments["feature"]) == {"checkout-help", "refunds"}
        for label, selection in selections(options).items():
            for panel in clickhouse_panels(board):
                where = f"{name} / {panel['title']} ({label})"
                try:
                    result = run_panel(filled, panel, selection)
                except Exception as error:
                    raise AssertionError(f"{where}: {error}") from error
                check_shape(panel["type"], result, where)
                if label == "All":
                    assert result.rows, f"{where}: no rows on a store with data for it"
                ran += 1
    assert ran >= 120


def panel_named(board: str, title: str) -> dict[str, Any]:
    return next(panel for panel in panels(dashboards()[board]) if panel["title"] == title)


def query(filled: Filled, board: str, title: str, **picked: list[str]) -> list[dict[str, Any]]:
    selection = Selection({name: picked.get(name, ALL) for name in OWNER_VARIABLES})
    return run_panel(filled, panel_named(board, title), selection).dicts()


def ledger(filled: Filled, where: str = "1") -> Decimal:
    """The exact billable spend in the test's range: what every panel must agree with."""
    start, end = int(filled.when.start.timestamp()), int(filled.when.end.timestamp())
    sql = (
        "SELECT toString(sum(cost)) FROM requests WHERE billable = 1 "
        f"AND timestamp >= toDateTime({start}) AND timestamp <= toDateTime({end}) AND {where}"
    )
    return Decimal(filled.store.query(sql).scalar())


def test_the_spend_figures_agree_with_the_ledger(filled: Filled) -> None:
    total = ledger(filled)
    assert total > 0
    duplicate = filled.store.query("SELECT toString(sum(cost)) FROM requests WHERE billable = 0").scalar()
    assert Decimal(duplicate) > 0  # a panel that forgot `billable = 1` would count it
    (spend,) = query(filled, "spend-overview.json", "Spend")
    assert Decimal(str(spend["spend"])) == pytest.approx(total, abs=Decimal("1e-9"))
    series = query(filled, "spend-overview.json", "Spend by team")
    assert sum(Decimal(str(row["spend"])) for row in series) == pytest.approx(total, abs=Decimal("1e-9"))
    (payments,) = query(filled, "spend-overview.json", "Spend", team=["payments"])
    assert Decimal(str(payments["spend"])) == pytest.approx(ledger(filled, "team = 'payments'"), abs=Decimal("1e-9"))
    features = {
        row["feature"]: Decimal(row["spend_usd"]) for row in query(filled, "spend-overview.json", "Top features")
    }
    assert sum(features.values()) == total  # Decimal in the table: exact
    (share,) = query(filled, "hygiene.json", "Unattributed share of spend")
    assert float(share["unattributed_share"]) == pytest.approx(float(ledger(filled, "team = 'unattributed'") / total))


def test_unit_economics_follows_the_definition(filled: Filled) -> None:
    rows = {row["feature"]: row for row in query(filled, "unit-economics.json", "Cost per accepted result by feature")}
    checkout, refunds = ledger(filled, "feature = 'checkout-help'"), ledger(filled, "feature = 'refunds'")
    # checkout: latest outcome accepted (stored twice, counted once); mixed: rejected, owned by checkout-help
    # (it spent most there); refund: accepted; judged_only: no calls, so its outcome's own feature, ranking.
    assert (rows["checkout-help"]["accepted_results"], rows["checkout-help"]["rejected_results"]) == (1, 1)
    assert Decimal(rows["checkout-help"]["cost_per_accepted_usd"]) == checkout
    assert (rows["refunds"]["accepted_results"], rows["refunds"]["rejected_results"]) == (1, 0)
    assert Decimal(rows["refunds"]["cost_per_accepted_usd"]) == refunds
    assert rows["ranking"]["accepted_results"] == 1
    assert Decimal(rows["ranking"]["cost_per_accepted_usd"]) == ledger(filled, "feature = 'ranking'")
    assert rows["contract-intake"]["accepted_results"] == 0 and rows["contract-intake"]["cost_per_accepted_usd"] is None
    assert "feedback-widget" not in rows  # an outcome span's own feature only counts for traces without calls
    (overall,) = query(filled, "unit-economics.json", "Cost per accepted result")
    assert float(overall["cost_per_accepted"]) == pytest.approx(float(ledger(filled) / 3))
    (rate,) = query(filled, "unit-economics.json", "Acceptance rate")
    assert float(rate["acceptance_rate"]) == pytest.approx(3 / 4)
    (only,) = query(filled, "unit-economics.json", "Results", feature=["checkout-help"])
    assert (only["accepted_results"], only["rejected_results"]) == (1, 1)


def test_budgets_hygiene_and_runaway_panels_show_what_happened(filled: Filled) -> None:
    synthetic = {"payments-weekly", "agent-hourly-guard", "company-monthly", "retired"}  # the enforcer's own too
    acting = [row for row in query(filled, "budgets.json", "Caps not at allow") if row["budget"] in synthetic]
    assert [(row["budget"], row["action_now"]) for row in acting] == [
        ("agent-hourly-guard", "block"),
        ("payments-weekly", "downgrade"),
    ]  # most severe first; the retired budget's caps are gone, the configured one is at allow
    ahead = [row for row in query(filled, "budgets.json", "Time to limit") if row["budget"] in synthetic]
    assert [(row["budget"], row["within_period"]) for row in ahead] == [("payments-weekly", 1)]  # the guard's: reached
    searching = query(filled, "budgets.json", "Caps not at allow", team=["search"])
    assert [row["budget"] for row in searching if row["budget"] in synthetic] == [
        "agent-hourly-guard"  # a cap that names no team applies to every team
    ]
    aliases = query(filled, "hygiene.json", "Floating aliases")
    assert {(row["request_model"], row["response_model"], row["call_count"]) for row in aliases} == {
        ("gpt-4o", "gpt-4o-2024-08-06", 4),
        ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929", 1),  # the nested duplicate is not a call
    }
    unpriced = query(filled, "hygiene.json", "Unpriced calls by model and provider")
    assert [(row["provider"], row["model"], row["call_count"]) for row in unpriced] == [
        ("vllm", "acme-llm-7b-instruct", 3)
    ]
    (cache,) = query(filled, "hygiene.json", "Cache-read share", feature=["checkout-help"])
    assert float(cache["cache_read_share"]) == pytest.approx(800 / 1200)
    alerts = query(filled, "runaway-watch.json", "Recent runaway alerts")
    assert {"agent_loop", "retry_storm", "spend_spike"} <= {row["alert_kind"] for row in alerts}
    loop = next(row for row in alerts if row["alert_kind"] == "agent_loop")
    assert loop["trace"] == filled.traces["loop"]
    (top, *_) = query(filled, "runaway-watch.json", "Top traces by cost")
    assert (top["trace_id"], top["call_count"]) == (filled.traces["loop"], 6)
    errors = query(filled, "runaway-watch.json", "Error rate by model", team=["search"])
    assert max(row["error_rate"] for row in errors) > 0


# --- the health dashboard's PromQL --------------------------------------------------------------------


def exposed_metrics(server: RunningServer) -> set[str]:
    with urllib.request.urlopen(f"{server.api_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in suffixes.get(family.type, ("",))
    }


def test_the_health_dashboard_names_only_metrics_otel_cost_exposes(filled: Filled) -> None:
    exposed = exposed_metrics(filled.server)
    board = dashboards()["health.json"]
    exprs = [target["expr"] for panel in panels(board) for target in panel.get("targets", [])]
    assert exprs and not list(clickhouse_panels(board))
    named = {name for expr in exprs for name in re.findall(r"\botel_cost_[a-z_]+", expr)}
    assert named <= exposed, sorted(named - exposed)
    for wanted in (
        "otel_cost_spans_received_total",
        "otel_cost_spans_accepted_total",
        "otel_cost_spans_rejected_total",
        "otel_cost_store_pending_rows",
        "otel_cost_store_flush_seconds_bucket",
        "otel_cost_enforcer_poll_seconds_bucket",
        "otel_cost_cap_state_version",
        "otel_cost_alert_queue_alerts",
        "otel_cost_alert_deliveries_total",
    ):
        assert wanted in named, wanted
    for expr in exprs:  # balanced, and every selector carries the job
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
