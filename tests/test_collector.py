"""The OpenTelemetry Collector configs in `collector/`: a valid component graph, a GenAI filter that keeps
every call otel-cost bills, durable delivery to otel-cost, trace ID routing for the scale-out, and for the
inline placement an unfiltered path to otel-cost and a return path (otel-cost's processor mode) that
matches otel-cost's own config fragment and cannot loop.

No collector binary runs here: `check_config` does the structural checks the collector does at start-up
(and a few of our own), and `dropped` evaluates the filter's OTTL conditions, a small subset of OTTL,
against real spans: the recorded fixtures and `otel-cost demo` traffic.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otel_cost.config import Config, load_config, parse_endpoint
from otel_cost.demo import run_demo
from otel_cost.errors import ConfigError
from otel_cost.semconv import emitter_for_scope, extract, to_dict

from .conftest import FIXTURES
from .helpers import make_span

COLLECTOR = Path(__file__).resolve().parent.parent / "collector"
#: otel-cost's own config for the inline placement: loaded by otel-cost, not by a collector.
PROCESSOR_MODE = COLLECTOR / "otel-cost-processor-mode.yaml"
INLINE = COLLECTOR / "otel-cost-inline.yaml"
#: Every collector config; each goes through the component-graph and exporter checks.
CONFIGS = sorted(path for path in COLLECTOR.glob("*.yaml") if path != PROCESSOR_MODE)
#: The collector configs that filter GenAI spans off to otel-cost (the rest go straight to the backend).
FANOUT_CONFIGS = [COLLECTOR / "otel-cost-fanout.yaml", COLLECTOR / "otel-cost-loadbalancing.yaml"]

COMPONENT_SECTIONS = ("receivers", "processors", "exporters", "extensions", "connectors")
TOP_LEVEL_KEYS = frozenset({*COMPONENT_SECTIONS, "service"})
SIGNALS = frozenset({"traces", "metrics", "logs"})

#: Real otelcol-contrib component types, per section: the ones these configs use, and the names they
#: were renamed to (otlp -> otlp_grpc in v0.144, loadbalancing -> load_balancing), so a typo fails.
KNOWN_TYPES: dict[str, frozenset[str]] = {
    "receivers": frozenset({"otlp"}),
    "processors": frozenset(
        {"memory_limiter", "filter", "batch", "transform", "attributes", "resource", "tail_sampling"}
    ),
    "exporters": frozenset(
        {
            "otlp",
            "otlp_grpc",
            "otlphttp",
            "otlp_http",
            "loadbalancing",
            "load_balancing",
            "debug",
            "prometheusremotewrite",
        }
    ),
    "extensions": frozenset({"health_check", "file_storage"}),
    "connectors": frozenset({"forward"}),
}

#: What makes a span a GenAI span (collector/README.md lists where each comes from).
GENAI_MARKERS = (
    "gen_ai.operation.name",
    "gen_ai.system",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "llm.request.type",
    "openinference.span.kind",
    "ai.model.id",
)
OPENINFERENCE_MODEL_KINDS = ("LLM", "EMBEDDING")

_ID = re.compile(r"^[a-zA-Z][0-9a-zA-Z_]{0,62}(?:/\S+)?$")
_ENV_REF = re.compile(r"^\$\{env:[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}$")
_ENV_VAR = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)")


# --- the checker ------------------------------------------------------------------------------------


def component_type(component_id: str) -> str:
    """`type` of a component id `type` or `type/name`."""
    return component_id.split("/", 1)[0]


def duplicate_keys(text: str) -> list[str]:
    """Mapping keys given twice (yaml.safe_load keeps the last silently; the collector refuses them)."""
    found: list[str] = []

    def walk(node: yaml.Node, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                if key in seen:
                    found.append(f"{path}{key}: given twice (line {key_node.start_mark.line + 1})")
                seen.add(key)
                walk(value_node, f"{path}{key}.")
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, f"{path}{index}.")

    root = yaml.compose(text)
    if root is not None:
        walk(root, "")
    return found


def env_problems(text: str) -> list[str]:
    """Every `${...}` must be `${env:NAME}` or `${env:NAME:-default}`; `$env:` and `{env:` without `$` are
    typos the collector would pass through as literal text."""
    problems = []
    for match in re.finditer(r"\$\{[^}\n]*\}?", text):
        if not _ENV_REF.match(match.group()):
            problems.append(f"malformed environment reference {match.group()!r}")
    for match in re.finditer(r"\$env:\w*|(?<!\$)\{env:[^}\n]*\}?", text):
        problems.append(f"malformed environment reference {match.group()!r}")
    return problems


def check_config(config: Any) -> list[str]:
    """What the collector would refuse at start-up, and what we refuse besides: unknown top-level keys and
    component types, references to undefined components, defined components no pipeline uses, and pipelines
    whose first processor is not memory_limiter."""
    if not isinstance(config, dict):
        return ["the file is not a mapping"]
    problems = [f"unknown top-level key {key!r}" for key in config if key not in TOP_LEVEL_KEYS]

    defined: dict[str, set[str]] = {}
    for section in COMPONENT_SECTIONS:
        components = config.get(section) or {}
        if not isinstance(components, dict):
            problems.append(f"{section} must be a mapping of component id to settings")
            components = {}
        defined[section] = set(components)
        for component_id in components:
            if not isinstance(component_id, str) or not _ID.match(component_id):
                problems.append(f"{section}.{component_id}: a component id is `type` or `type/name`")
                continue
            kind = component_type(component_id)
            if kind not in KNOWN_TYPES[section]:
                problems.append(f"{section}.{component_id}: unknown {section[:-1]} type {kind!r}")

    service = config.get("service")
    if not isinstance(service, dict):
        return [*problems, "service: missing"]
    problems += [f"unknown key service.{key}" for key in service if key not in {"extensions", "pipelines", "telemetry"}]

    enabled_extensions = service.get("extensions") or []
    for extension in enabled_extensions:
        if extension not in defined["extensions"]:
            problems.append(f"service.extensions: extension {extension!r} is not defined")
    for extension in sorted(defined["extensions"] - set(enabled_extensions)):
        problems.append(f"extensions.{extension} is defined but not enabled in service.extensions")

    pipelines = service.get("pipelines") or {}
    if not pipelines:
        problems.append("service.pipelines: no pipeline")
    used: dict[str, set[str]] = {section: set() for section in COMPONENT_SECTIONS}
    for pipeline_id, settings in pipelines.items():
        where = f"service.pipelines.{pipeline_id}"
        if component_type(str(pipeline_id)) not in SIGNALS or not _ID.match(str(pipeline_id)):
            problems.append(f"{where}: a pipeline id is traces, metrics or logs, optionally with /name")
        pipeline = settings or {}
        problems += [
            f"unknown key {where}.{key}" for key in pipeline if key not in {"receivers", "processors", "exporters"}
        ]
        for role, sections in (
            ("receivers", ("receivers", "connectors")),
            ("processors", ("processors",)),
            ("exporters", ("exporters", "connectors")),
        ):
            for component_id in pipeline.get(role) or []:
                home = next((section for section in sections if component_id in defined[section]), None)
                if home is None:
                    problems.append(f"{where}: {role[:-1]} {component_id!r} is not defined")
                else:
                    used[home].add(component_id)
        for role in ("receivers", "exporters"):
            if not pipeline.get(role):
                problems.append(f"{where}: needs at least one {role[:-1]}")
        processors = pipeline.get("processors") or []
        if processors and component_type(processors[0]) != "memory_limiter":
            problems.append(f"{where}: the first processor must be memory_limiter, not {processors[0]!r}")
    for section in ("receivers", "processors", "exporters", "connectors"):
        for component_id in sorted(defined[section] - used[section]):
            problems.append(f"{section}.{component_id} is defined but no pipeline uses it")
    return problems


# --- the filter's OTTL, evaluated -----------------------------------------------------------------------

_CLAUSE = re.compile(r'^(?:span\.)?attributes\["([^"]+)"\]\s*(==|!=)\s*(?:(nil)|"([^"]*)")$')


def span_conditions(settings: Any) -> list[str]:
    """The OTTL span conditions of one filter processor (`traces.span`, or v0.146's `trace_conditions`)."""
    settings = settings or {}
    unsupported = set(settings) - {"error_mode", "traces", "trace_conditions"}
    unsupported |= {f"traces.{key}" for key in (settings.get("traces") or {}) if key != "span"}
    assert not unsupported, f"the evaluator here reads span conditions only, not {sorted(unsupported)}"
    conditions = [*(settings.get("traces") or {}).get("span", []), *settings.get("trace_conditions", [])]
    assert all(isinstance(condition, str) for condition in conditions), conditions
    return conditions


def matches(condition: str, attributes: dict[str, Any]) -> bool:
    """One OTTL condition of the form `attributes["k"] == nil and attributes["k"] != "V" and ...`."""
    if re.search(r"\bor\b|\bnot\b|[()]", condition):
        raise ValueError(f"not in the OTTL subset this test evaluates: {condition!r}")
    for clause in re.split(r"\s+and\s+", condition.strip()):
        parsed = _CLAUSE.match(clause.strip())
        if parsed is None:
            raise ValueError(f"not in the OTTL subset this test evaluates: {clause!r}")
        key, operator, nil, text = parsed.groups()
        value = attributes.get(key)
        equal = value is None if nil else value == text
        if equal != (operator == "=="):
            return False
    return True


def dropped(conditions: list[str], attributes: dict[str, Any]) -> bool:
    """The filter processor drops a span when any condition matches."""
    return any(matches(condition, attributes) for condition in conditions)


# --- loading ------------------------------------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    config = yaml.safe_load(path.read_text())
    assert isinstance(config, dict), path
    return config


def otel_cost_pipelines(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pipelines that export to otel-cost (an exporter whose id names otel-cost)."""
    return {
        pipeline_id: pipeline
        for pipeline_id, pipeline in config["service"]["pipelines"].items()
        if any("otel-cost" in exporter for exporter in pipeline["exporters"])
    }


def genai_filter(config: dict[str, Any]) -> list[str]:
    """The span conditions of the otel-cost pipeline's filter processor(s)."""
    (pipeline,) = otel_cost_pipelines(config).values()
    filters = [p for p in pipeline["processors"] if component_type(p) == "filter"]
    assert filters, "the otel-cost pipeline has no filter processor"
    return [condition for p in filters for condition in span_conditions(config["processors"][p])]


def seconds(value: Any) -> float:
    """A collector duration: "90s", "1h30m", "0"; a bare integer is nanoseconds."""
    if isinstance(value, int | float):
        return value / 1e9
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    text = str(value).strip()
    if text == "0":
        return 0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {value!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


@pytest.fixture(params=CONFIGS, ids=[path.name for path in CONFIGS])
def config_path(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


@pytest.fixture(params=FANOUT_CONFIGS, ids=[path.name for path in FANOUT_CONFIGS])
def fanout_path(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


# --- every config ---------------------------------------------------------------------------------------


def test_every_file_is_checked_as_what_it_is() -> None:
    """A new file in collector/ must be placed in one of the lists above, so it gets the right checks."""
    assert sorted(path.name for path in COLLECTOR.glob("*.yaml")) == sorted(
        path.name for path in [*FANOUT_CONFIGS, INLINE, PROCESSOR_MODE]
    )
    assert sorted(CONFIGS) == sorted([*FANOUT_CONFIGS, INLINE])


def test_component_graph_is_valid(config_path: Path) -> None:
    text = config_path.read_text()
    assert duplicate_keys(text) == []
    assert check_config(yaml.safe_load(text)) == []


def test_environment_references_are_well_formed_and_documented(config_path: Path) -> None:
    text = config_path.read_text()
    assert env_problems(text) == []
    readme = (COLLECTOR / "README.md").read_text()
    names = set(_ENV_VAR.findall(text))
    assert {"OTEL_COST_INGEST_TOKEN", "TRACING_BACKEND_ENDPOINT"} <= names
    assert [name for name in sorted(names) if name not in readme] == []


def test_every_pipeline_starts_with_memory_limiter(config_path: Path) -> None:
    for pipeline_id, pipeline in load(config_path)["service"]["pipelines"].items():
        assert pipeline["processors"][:1] == ["memory_limiter"], pipeline_id


def test_one_receiver_fans_out_to_full_traces_and_to_otel_cost(fanout_path: Path) -> None:
    config = load(fanout_path)
    pipelines = config["service"]["pipelines"]
    to_otel_cost = otel_cost_pipelines(config)
    assert len(to_otel_cost) == 1
    to_tracing = [p for p in pipelines.values() if "otlp/tracing" in p["exporters"]]
    assert len(to_tracing) == 1
    assert "otlp" in to_tracing[0]["receivers"]
    assert "otlp" in next(iter(to_otel_cost.values()))["receivers"]
    # the tracing backend gets every span: nothing in its pipeline filters
    assert not [p for p in to_tracing[0]["processors"] if component_type(p) == "filter"]
    assert config["exporters"]["otlp/tracing"]["endpoint"] == "${env:TRACING_BACKEND_ENDPOINT}"
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")


def test_filter_names_every_genai_marker(fanout_path: Path) -> None:
    text = " ".join(genai_filter(load(fanout_path)))
    assert [marker for marker in GENAI_MARKERS if f'attributes["{marker}"]' not in text] == []
    assert [kind for kind in OPENINFERENCE_MODEL_KINDS if f'"{kind}"' not in text] == []


def test_filter_keeps_each_marker_and_drops_the_rest(fanout_path: Path) -> None:
    conditions = genai_filter(load(fanout_path))
    assert dropped(conditions, {"http.route": "/checkout", "http.request.method": "POST"})
    assert dropped(conditions, {})
    assert dropped(conditions, {"db.system.name": "postgresql", "db.query.text": "SELECT 1"})
    # OpenInference's agent and chain spans are not model calls
    assert dropped(conditions, {"openinference.span.kind": "CHAIN", "llm.token_count.prompt": 10})
    assert dropped(conditions, {"openinference.span.kind": "AGENT"})
    for marker in GENAI_MARKERS:
        value = "LLM" if marker == "openinference.span.kind" else "x"
        assert not dropped(conditions, {marker: value, "http.route": "/"}), marker
    for kind in OPENINFERENCE_MODEL_KINDS:
        assert not dropped(conditions, {"openinference.span.kind": kind}), kind


def test_otel_cost_exporter_endpoint_is_4317_or_from_the_environment(config_path: Path) -> None:
    config = load(config_path)
    (pipeline,) = otel_cost_pipelines(config).values()
    endpoints: list[str] = []
    for exporter_id in pipeline["exporters"]:
        settings = config["exporters"][exporter_id]
        if component_type(exporter_id) in {"loadbalancing", "load_balancing"}:
            resolver = settings["resolver"]
            assert len(resolver) == 1, "configure one resolver"
            if "dns" in resolver:
                endpoints.append(f"{resolver['dns']['hostname']}:{resolver['dns'].get('port', 4317)}")
            if "static" in resolver:
                endpoints += resolver["static"]["hostnames"]
            if "k8s" in resolver:
                endpoints += [f"{resolver['k8s']['service']}:{port}" for port in resolver["k8s"]["ports"]]
        else:
            endpoints.append(settings["endpoint"])
    assert endpoints
    assert [e for e in endpoints if not (e.endswith(":4317") or _ENV_REF.match(e))] == []


def test_otel_cost_exporter_is_durable_and_authenticated(config_path: Path) -> None:
    config = load(config_path)
    (pipeline,) = otel_cost_pipelines(config).values()
    for exporter_id in pipeline["exporters"]:
        settings = config["exporters"][exporter_id]
        protocol = settings.get("protocol", {}).get("otlp", settings)  # a load balancer's per-receiver template
        assert protocol["headers"] == {"authorization": "Bearer ${env:OTEL_COST_INGEST_TOKEN}"}
        assert protocol["tls"] == {"insecure": True}
        assert seconds(protocol["timeout"]) >= 10, "otel-cost acknowledges only stored rows: give it time"
        # the queue that holds spans until otel-cost acknowledges them is on disk ...
        queue = settings["sending_queue"]
        assert queue.get("enabled", True)
        storage = queue["storage"]
        assert component_type(storage) == "file_storage"
        assert storage in config["extensions"]
        assert storage in config["service"]["extensions"]
        # ... and an export is retried until otel-cost takes it
        retry = settings["retry_on_failure"]
        assert retry.get("enabled", True)
        elapsed = seconds(retry["max_elapsed_time"])
        assert elapsed == 0 or elapsed >= 3600
        if protocol is not settings:
            # no in-memory queue per receiver between the persistent queue and otel-cost's acknowledgement
            assert protocol["sending_queue"] == {"enabled": False}


def test_batches_stay_under_otel_cost_request_limit(config_path: Path) -> None:
    config = load(config_path)
    (pipeline,) = otel_cost_pipelines(config).values()
    batches = [p for p in pipeline["processors"] if component_type(p) == "batch"]
    assert batches
    for batch in batches:
        settings = config["processors"][batch] or {}
        # at ~10 KB a GenAI span, 4096 spans stay well under receiver.max_request_bytes (64 MiB)
        assert 0 < settings["send_batch_max_size"] <= 4096
        assert settings["send_batch_size"] <= settings["send_batch_max_size"]


def test_loadbalancing_routes_by_trace_id() -> None:
    config = load(COLLECTOR / "otel-cost-loadbalancing.yaml")
    balancers = {
        k: v for k, v in config["exporters"].items() if component_type(k) in {"loadbalancing", "load_balancing"}
    }
    assert list(balancers) == ["loadbalancing/otel-cost"]
    settings = balancers["loadbalancing/otel-cost"]
    assert settings["routing_key"] == "traceID"
    assert settings["resolver"]["dns"] == {"hostname": "otel-cost-headless.otel-cost.svc.cluster.local", "port": 4317}
    assert "endpoint" not in settings["protocol"]["otlp"], "the resolver sets each receiver's endpoint"
    assert "loadbalancing/otel-cost" in otel_cost_pipelines(config)["traces/otel-cost"]["exporters"]
    # the static and k8s resolvers are shown, commented out
    text = (COLLECTOR / "otel-cost-loadbalancing.yaml").read_text()
    assert re.search(r"^\s*# static:\n(\s*#.*\n){4}", text, re.MULTILINE)
    assert re.search(r"^\s*# k8s:$", text, re.MULTILINE)


def test_fanout_exports_straight_to_otel_cost() -> None:
    config = load(COLLECTOR / "otel-cost-fanout.yaml")
    assert otel_cost_pipelines(config)["traces/otel-cost"]["exporters"] == ["otlp/otel-cost"]
    assert config["exporters"]["otlp/otel-cost"]["endpoint"] == "${env:OTEL_COST_ENDPOINT}"


# --- the inline placement -------------------------------------------------------------------------------

#: Processors that drop spans: none may stand between the services and otel-cost in the inline placement.
SPAN_DROPPING = frozenset({"filter", "tail_sampling", "probabilistic_sampler"})
TEST_ENVIRON = {"OTEL_COST_INGEST_TOKEN": "s3cret-ingest-token"}


def receiver_ports(settings: Mapping[str, Any]) -> dict[str, int]:
    """protocol (grpc, http) -> the port an `otlp` receiver listens on."""
    return {protocol: parse_endpoint(server["endpoint"])[1] for protocol, server in settings["protocols"].items()}


def substitute(text: str, environ: Mapping[str, str]) -> str:
    """`${env:NAME}` replaced as the collector does (the inline config's references have no defaults)."""
    return re.sub(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}", lambda match: environ[match.group(1)], text)


def with_tail_sampling(text: str) -> str:
    """The inline config with its commented-out tail sampling switched on, as its comments say: the
    `# tail_sampling:` block uncommented, and the commented `# processors:` line that names tail_sampling
    in place of the active line just above it."""
    out: list[str] = []
    block: str | None = None  # the indentation of the tail_sampling block being uncommented
    for line in text.splitlines():
        if block is not None and line.startswith(f"{block}#   "):
            out.append(block + line[len(block) + 2 :])
            continue
        block = None
        start = re.match(r"^(\s*)# (tail_sampling:)$", line)
        alternative = re.match(r"^(\s*)# (processors: \[.*\btail_sampling\b.*\])", line)
        if start:
            block = start.group(1)
            out.append(block + start.group(2))
        elif alternative and out and out[-1].startswith(f"{alternative.group(1)}processors:"):
            out[-1] = alternative.group(1) + alternative.group(2)
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def otel_cost_targets(config: Config) -> dict[str, tuple[str, str, str]]:
    """What otel-cost sends to the collector, per section of its config: (URL, protocol, signal)."""
    (forward,) = config.forward.endpoints
    metrics = config.metrics_export
    return {
        "forward": (forward.endpoint, forward.protocol, "traces"),
        "metrics_export": (metrics.endpoint or "", metrics.protocol, "metrics"),
    }


@pytest.fixture(scope="module")
def processor_mode() -> Config:
    return load_config(PROCESSOR_MODE, environ=TEST_ENVIRON)


def test_inline_sends_every_span_to_otel_cost_unfiltered() -> None:
    config = load(INLINE)
    pipeline = config["service"]["pipelines"]["traces/to-otel-cost"]
    assert otel_cost_pipelines(config) == {"traces/to-otel-cost": pipeline}
    assert pipeline["receivers"] == ["otlp"]
    kinds = [component_type(p) for p in pipeline["processors"]]
    assert [kind for kind in kinds if kind in SPAN_DROPPING] == [], "otel-cost must see every span to bill it"
    assert kinds == ["memory_limiter", "batch"]
    # otel-cost is the only way on: a second exporter would send the backend every span twice, once bare
    assert pipeline["exporters"] == ["otlp/otel-cost"]
    assert config["exporters"]["otlp/otel-cost"]["endpoint"] == "${env:OTEL_COST_ENDPOINT}"
    protocols = config["receivers"]["otlp"]["protocols"]
    assert receiver_ports(config["receivers"]["otlp"]) == {"grpc": 4317, "http": 4318}
    assert set(protocols) == {"grpc", "http"}


def test_inline_backend_gets_only_what_otel_cost_forwards_and_nothing_loops() -> None:
    config = load(INLINE)
    pipelines = config["service"]["pipelines"]
    into_backend = {pid: p for pid, p in pipelines.items() if "otlp/tracing" in p["exporters"]}
    assert list(into_backend) == ["traces/enriched"]
    assert into_backend["traces/enriched"]["receivers"] == ["otlp/enriched"]
    assert config["exporters"]["otlp/tracing"]["endpoint"] == "${env:TRACING_BACKEND_ENDPOINT}"
    # what otel-cost sends back never goes to otel-cost again
    for pipeline_id, pipeline in pipelines.items():
        if "otlp/enriched" in pipeline["receivers"]:
            assert not [e for e in pipeline["exporters"] if "otel-cost" in e], pipeline_id
    ports = receiver_ports(config["receivers"]["otlp"])
    enriched = receiver_ports(config["receivers"]["otlp/enriched"])
    assert set(ports.values()).isdisjoint(enriched.values())


def test_inline_passes_otel_cost_metrics_on() -> None:
    config = load(INLINE)
    metrics = {pid: p for pid, p in config["service"]["pipelines"].items() if component_type(pid) == "metrics"}
    assert list(metrics.values()) == [
        {
            "receivers": ["otlp/enriched"],
            "processors": ["memory_limiter", "batch"],
            "exporters": ["prometheusremotewrite"],
        }
    ]
    assert config["exporters"]["prometheusremotewrite"] == {"endpoint": "${env:PROMETHEUS_REMOTE_WRITE_ENDPOINT}"}


def test_processor_mode_loads_with_otel_cost_config_loader(processor_mode: Config) -> None:
    text = PROCESSOR_MODE.read_text()
    assert duplicate_keys(text) == []
    assert env_problems(text) == []
    assert "service" not in yaml.safe_load(text), "an otel-cost config, not a collector config"
    assert processor_mode.receiver.bearer_tokens == [TEST_ENVIRON["OTEL_COST_INGEST_TOKEN"]]
    assert parse_endpoint(processor_mode.receiver.grpc_endpoint)[1] == 4317
    (endpoint,) = processor_mode.forward.endpoints
    assert (endpoint.name, endpoint.protocol, endpoint.compression) == ("collector", "grpc", "gzip")
    assert processor_mode.forward.drop_content is False
    assert processor_mode.metrics_export.endpoint is not None


def test_processor_mode_needs_the_ingest_token() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(PROCESSOR_MODE, environ={})
    assert str(caught.value) == (
        "receiver.bearer_tokens[0]: environment variable OTEL_COST_INGEST_TOKEN is not set "
        "(write ${env:OTEL_COST_INGEST_TOKEN:-default} to make it optional)"
    )


def test_collector_sends_the_token_otel_cost_expects(processor_mode: Config) -> None:
    header = load(INLINE)["exporters"]["otlp/otel-cost"]["headers"]["authorization"]
    assert substitute(header, TEST_ENVIRON) == f"Bearer {processor_mode.receiver.bearer_tokens[0]}"


@pytest.mark.parametrize("what", ["forward", "metrics_export"])
def test_otel_cost_sends_to_the_enriched_receiver(processor_mode: Config, what: str) -> None:
    config = load(INLINE)
    url, protocol, signal = otel_cost_targets(processor_mode)[what]
    parsed = urlsplit(url)
    # the port of otlp/enriched, for the protocol otel-cost speaks ...
    server = config["receivers"]["otlp/enriched"]["protocols"][{"grpc": "grpc", "http/protobuf": "http"}[protocol]]
    assert parsed.port == parse_endpoint(server["endpoint"])[1]
    # ... never a port of the receiver that feeds otel-cost (that would loop)
    assert parsed.port not in receiver_ports(config["receivers"]["otlp"]).values()
    # plaintext at both ends, or TLS at both ends
    assert (parsed.scheme == "https") == ("tls" in server)
    # and a pipeline of that signal takes what arrives there
    assert [
        pid
        for pid, p in config["service"]["pipelines"].items()
        if component_type(pid) == signal and "otlp/enriched" in p["receivers"]
    ]


def test_enriched_receiver_takes_the_largest_export_otel_cost_forwards(processor_mode: Config) -> None:
    """otel-cost forwards every export it accepted (up to receiver.max_request_bytes, plus the attributes
    it adds), merged up to max_batch_bytes; the collector's gRPC server refuses a message over
    max_recv_msg_size_mib (default 4) with RESOURCE_EXHAUSTED, which otel-cost does not retry."""
    server = load(INLINE)["receivers"]["otlp/enriched"]["protocols"]["grpc"]
    limit = server.get("max_recv_msg_size_mib", 4) * 1024 * 1024
    (target,) = processor_mode.forward.endpoints
    assert limit > processor_mode.receiver.max_request_bytes, "room for the otel_cost.* attributes"
    assert limit >= target.max_batch_bytes


def test_inline_tail_sampling_comes_after_otel_cost() -> None:
    """The commented-out tail sampling is a valid config once switched on, and samples only what otel-cost
    has already priced (sampling before it would hide spend)."""
    text = INLINE.read_text()
    sampled = with_tail_sampling(text)
    assert sampled != text
    config = yaml.safe_load(sampled)
    assert check_config(config) == []
    pipelines = config["service"]["pipelines"]
    assert pipelines["traces/enriched"]["processors"] == ["memory_limiter", "tail_sampling", "batch"]
    assert "tail_sampling" not in pipelines["traces/to-otel-cost"]["processors"]
    policies = config["processors"]["tail_sampling"]["policies"]
    conditions = [c for p in policies if p["type"] == "ottl_condition" for c in p["ottl_condition"]["span"]]
    assert [c for c in conditions if 'attributes["otel_cost.cost.amount"]' in c], "samples by cost"
    assert {p["type"] for p in policies} >= {"status_code", "probabilistic"}
    # switched off, as shipped
    assert "tail_sampling" not in (load(INLINE)["processors"] or {})


# --- the filter against real spans ------------------------------------------------------------------------


class _Capture(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC endpoint that keeps what it is sent: the demo's exports, as a collector sees them."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []

    def Export(  # noqa: N802 (the gRPC method name)
        self, request: ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> ExportTraceServiceResponse:
        self.requests.append(request)
        return ExportTraceServiceResponse()


@pytest.fixture(scope="module")
def real_exports() -> Iterator[list[ExportTraceServiceRequest]]:
    """The recorded third-party payloads and one run of `otel-cost demo` (six instrumentation dialects)."""
    capture = _Capture()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(capture, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        run_demo(f"http://127.0.0.1:{port}", calls=60, seed=3)
    finally:
        server.stop(None)
    recorded = [ExportTraceServiceRequest.FromString(path.read_bytes()) for path in sorted(FIXTURES.glob("*.pb"))]
    yield recorded + capture.requests


def raw_attributes(span: Any) -> dict[str, Any]:
    """Span attributes as the collector's OTTL sees them (scalars; anything else as a placeholder)."""
    out: dict[str, Any] = {}
    for kv in span.attributes:
        which = kv.value.WhichOneof("value")
        scalar = which in {"string_value", "bool_value", "int_value", "double_value"}
        out[kv.key] = getattr(kv.value, which) if scalar else "<complex>"
    return out


def spans(exports: list[ExportTraceServiceRequest]) -> Iterator[tuple[str, str, Any]]:
    for request in exports:
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    yield scope_spans.scope.name, scope_spans.scope.version, span


def test_filter_keeps_every_call_otel_cost_bills(
    fanout_path: Path, real_exports: list[ExportTraceServiceRequest]
) -> None:
    conditions = genai_filter(load(fanout_path))
    now_ns = time.time_ns()
    billed: dict[str, int] = {}
    lost: list[str] = []
    for scope, version, span in spans(real_exports):
        attributes = raw_attributes(span)
        call = extract(span, to_dict(span.attributes), emitter_for_scope(scope, version), now_ns)
        if call is not None and call.billable:
            billed[scope] = billed.get(scope, 0) + 1
            if dropped(conditions, attributes):
                lost.append(f"{scope}: {span.name}")
    assert lost == []
    # every dialect the demo and the fixtures speak was there to be checked
    assert set(billed) >= {
        "opentelemetry.instrumentation.openai.v1",  # OpenLLMetry
        "opentelemetry.instrumentation.anthropic",
        "opentelemetry.instrumentation.openai_v2",  # OTel GenAI semconv (contrib)
        "anthropic",  # the provider SDK's own spans
        "openinference.instrumentation.langchain",  # OpenInference
        "openinference.instrumentation.openai",
        "ai",  # Vercel AI SDK: only ai.* attributes
    }, billed


def test_filter_lets_no_span_otel_cost_stores_slip_away_unnoticed(
    fanout_path: Path, real_exports: list[ExportTraceServiceRequest]
) -> None:
    """On this traffic, every span otel-cost turns into a row reaches it, the non-billable wrapper and
    agent spans included: behind the filter it stores the same rows as when it is sent everything."""
    conditions = genai_filter(load(fanout_path))
    now_ns = time.time_ns()
    rows = [
        f"{scope}: {span.name}"
        for scope, version, span in spans(real_exports)
        if extract(span, to_dict(span.attributes), emitter_for_scope(scope, version), now_ns) is not None
        and dropped(conditions, raw_attributes(span))
    ]
    assert rows == []


def test_filter_drops_openinference_aggregates_otel_cost_would_not_bill(fanout_path: Path) -> None:
    """The one known difference from sending everything (collector/README.md): an OpenInference chain or
    agent span with its children's summed usage is a billable = 0 row that the filter drops."""
    conditions = genai_filter(load(fanout_path))
    emitter = emitter_for_scope("openinference.instrumentation.langchain", "0.1.50")
    for kind in ("CHAIN", "AGENT", "TOOL"):
        attributes = {"openinference.span.kind": kind, "llm.token_count.prompt": 900, "llm.token_count.completion": 90}
        span = make_span(attributes, name=kind)
        call = extract(span, to_dict(span.attributes), emitter, time.time_ns())
        assert call is not None and not call.billable, kind
        assert dropped(conditions, raw_attributes(span)), kind


# --- the checker itself ----------------------------------------------------------------------------------

VALID: dict[str, Any] = {
    "extensions": {"health_check": {}, "file_storage": {"directory": "/tmp/q"}},
    "receivers": {"otlp": {"protocols": {"grpc": {}}}},
    "processors": {"memory_limiter": {"limit_percentage": 80}, "batch": None},
    "exporters": {"loadbalancing": {"routing_key": "traceID"}},
    "service": {
        "extensions": ["health_check", "file_storage"],
        "pipelines": {
            "traces": {"receivers": ["otlp"], "processors": ["memory_limiter", "batch"], "exporters": ["loadbalancing"]}
        },
    },
}


def _pipeline(config: dict[str, Any]) -> dict[str, Any]:
    pipeline: dict[str, Any] = config["service"]["pipelines"]["traces"]
    return pipeline


def _misspell_exporter(config: dict[str, Any]) -> None:
    config["exporters"]["loadbalance"] = config["exporters"].pop("loadbalancing")
    _pipeline(config)["exporters"] = ["loadbalance"]


def _rename_pipeline(config: dict[str, Any]) -> None:
    config["service"]["pipelines"] = {"spans": _pipeline(config)}


BROKEN: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "undefined processor",
        lambda c: _pipeline(c)["processors"].append("filter/genai"),
        "service.pipelines.traces: processor 'filter/genai' is not defined",
    ),
    (
        "unused exporter",
        lambda c: c["exporters"].update({"otlp/otel-cost": {"endpoint": "otel-cost:4317"}}),
        "exporters.otlp/otel-cost is defined but no pipeline uses it",
    ),
    ("misspelled type", _misspell_exporter, "exporters.loadbalance: unknown exporter type 'loadbalance'"),
    (
        "misspelled extension type",
        lambda c: c["extensions"].update({"filestorage": {}}) or c["service"]["extensions"].append("filestorage"),
        "extensions.filestorage: unknown extension type 'filestorage'",
    ),
    (
        "memory_limiter not first",
        lambda c: _pipeline(c)["processors"].reverse(),
        "service.pipelines.traces: the first processor must be memory_limiter, not 'batch'",
    ),
    (
        "pipeline without exporter",
        lambda c: _pipeline(c).update({"exporters": []}),
        "service.pipelines.traces: needs at least one exporter",
    ),
    (
        "unused receiver",
        lambda c: c["receivers"].update({"otlp/second": {}}),
        "receivers.otlp/second is defined but no pipeline uses it",
    ),
    ("bad pipeline id", _rename_pipeline, "service.pipelines.spans: a pipeline id is traces, metrics or logs"),
    (
        "undefined extension",
        lambda c: c["service"]["extensions"].append("bearertokenauth"),
        "service.extensions: extension 'bearertokenauth' is not defined",
    ),
    (
        "extension not enabled",
        lambda c: c["service"]["extensions"].remove("file_storage"),
        "extensions.file_storage is defined but not enabled in service.extensions",
    ),
    ("top-level typo", lambda c: c.update({"exporter": {}}), "unknown top-level key 'exporter'"),
    ("bad component id", lambda c: c["processors"].update({"batch /x": {}}), "a component id is `type` or `type/name`"),
]


def test_the_valid_example_passes() -> None:
    assert check_config(copy.deepcopy(VALID)) == []


@pytest.mark.parametrize(("case", "breaks", "message"), BROKEN, ids=[case for case, _, _ in BROKEN])
def test_checker_reports(case: str, breaks: Callable[[dict[str, Any]], None], message: str) -> None:
    config = copy.deepcopy(VALID)
    breaks(config)
    problems = check_config(config)
    assert [p for p in problems if message in p], (case, problems)


@pytest.mark.parametrize(
    "reference",
    [
        "${env:OTEL COST}",
        "${OTEL_COST_ENDPOINT}",
        "${env:}",
        "${env:1TOKEN}",
        "${ENV:TOKEN}",
        "${env:TOKEN",
        "$env:TOKEN",
    ],
)
def test_checker_reports_malformed_environment_references(reference: str) -> None:
    assert env_problems(f"exporters:\n  otlp:\n    endpoint: {reference}\n") != []


def test_checker_accepts_environment_defaults() -> None:
    assert env_problems('directory: ${env:DIR:-/var/lib/otelcol}\nh: "Bearer ${env:TOKEN}"\n') == []


def test_checker_reports_duplicate_keys() -> None:
    text = "exporters:\n  otlp/otel-cost:\n    endpoint: a:4317\n  otlp/otel-cost:\n    endpoint: b:4317\n"
    assert duplicate_keys(text) == ["exporters.otlp/otel-cost: given twice (line 4)"]


def test_evaluator_refuses_ottl_it_does_not_understand() -> None:
    with pytest.raises(ValueError, match="not in the OTTL subset"):
        dropped(['attributes["a"] == nil or attributes["b"] == nil'], {})
    with pytest.raises(ValueError, match="not in the OTTL subset"):
        dropped(['IsMatch(name, "chat.*")'], {})
    assert dropped(['span.attributes["a"] != "x" and attributes["b"] == nil'], {"a": "y"})
    assert not dropped(['attributes["a"] != "x"'], {"a": "x"})
