"""Configuration: YAML with `${env:VAR}` substitution, validated at startup, every error located.

Precedence: command-line flag > environment variable > config file > default. Every key has one
snake_case name everywhere: YAML `store.batch_size`, env `OTEL_COST_STORE_BATCH_SIZE`, flag
`--store-batch-size` where a flag exists. Unknown keys are errors; so is an unset `${env:VAR}`
(write `${env:VAR:-default}` for an optional one).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError, StoreURLError
from .store.url import DEFAULT_DATABASE, DEFAULT_STORE_URL, parse_store_url

__all__ = [
    "APIConfig",
    "AlertSinkConfig",
    "AlertsConfig",
    "AttributionConfig",
    "BudgetConfig",
    "ClientTLSConfig",
    "Config",
    "ContainConfig",
    "EnforcerConfig",
    "ForwardConfig",
    "ForwardEndpointConfig",
    "GatewayConfig",
    "MetricsExportConfig",
    "ModelMixConfig",
    "OutcomesConfig",
    "PriceOverride",
    "PricingConfig",
    "ReceiverConfig",
    "RegexSource",
    "ReviewConfig",
    "StoreConfig",
    "TLSConfig",
    "load_config",
    "parse_endpoint",
]

_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def default_workers() -> int:
    """Pipeline worker processes: one per core on a multi-core machine, none on a single core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores if cores > 1 else 0


def parse_endpoint(value: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:4317`) -> (host, port)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"must be host:port, e.g. 0.0.0.0:4317 (got {value!r})")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0-65535 (got {port})")
    return host.strip("[]") or "0.0.0.0", port


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _repeated(labels: list[str]) -> list[str]:
    """The labels that occur more than once, sorted."""
    return sorted({label for label in labels if labels.count(label) > 1})


class TLSConfig(_Section):
    cert_file: Path
    key_file: Path

    @field_validator("cert_file", "key_file")
    @classmethod
    def _exists(cls, path: Path) -> Path:
        if not path.is_file():
            raise ValueError(f"file {str(path)!r} does not exist")
        return path


class ReceiverConfig(_Section):
    grpc_endpoint: str = "0.0.0.0:4317"
    http_endpoint: str = "0.0.0.0:4318"
    bearer_tokens: list[str] = Field(default_factory=list, description="empty: no authentication")
    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    workers: int = Field(
        default_factory=default_workers, ge=0, le=64, description="pipeline processes; 0 runs it in the receiver"
    )
    tls: TLSConfig | None = None
    max_inflight_bytes: int = Field(
        128 * 1024 * 1024,
        ge=1024,
        description="request bytes being processed at once; more is refused retryably (bounds memory)",
    )
    max_concurrent_exports: int = Field(64, ge=1, le=10_000, description="gRPC exports handled at once")

    @field_validator("grpc_endpoint", "http_endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        parse_endpoint(value)
        return value

    @field_validator("bearer_tokens")
    @classmethod
    def _tokens(cls, value: list[str]) -> list[str]:
        if any(not token.strip() for token in value):
            raise ValueError("tokens must not be empty (an empty list disables authentication)")
        return value


class APIConfig(_Section):
    endpoint: str = "0.0.0.0:8318"
    read_tokens: list[str] = Field(default_factory=list, description="GET /v1/caps, /v1/alerts, POST /v1/sql")
    admin_tokens: list[str] = Field(
        default_factory=list,
        description="POST /v1/reprice, /v1/reattribute (and the reads); empty: those answer loopback clients only",
    )
    tls: TLSConfig | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        parse_endpoint(value)
        return value

    @field_validator("read_tokens", "admin_tokens")
    @classmethod
    def _tokens(cls, value: list[str]) -> list[str]:
        if any(not token.strip() for token in value):
            raise ValueError("tokens must not be empty (an empty list disables authentication)")
        return value


class StoreConfig(_Section):
    url: str = DEFAULT_STORE_URL
    batch_size: int = Field(20_000, ge=1, description="rows that trigger an insert without waiting")
    queue_size: int = Field(200_000, ge=1, description="rows waiting for the store before exports are refused")
    flush_interval_millis: int = Field(
        1000, ge=0, le=10_000, description="longest an export waits for others to share its insert"
    )
    dedup_keys: int = Field(1_000_000, ge=1000, description="span keys remembered to drop retried spans")
    dedup_window_seconds: int = Field(3600, ge=0, description="span keys reloaded from the store at start")
    spool_dir: Path | None = Field(
        None, description="the write-ahead spool; default: PATH/spool for chdb:PATH, ./otel-cost-spool otherwise"
    )
    spool_max_bytes: int = Field(
        1024**3, ge=0, description="acknowledged batches kept on disk while the store is away (0: refuse instead)"
    )
    spool_retry_max_seconds: float = Field(
        10, gt=0, le=600, description="longest pause between attempts to insert the spool's oldest batch"
    )
    insert_timeout_seconds: float = Field(
        30, gt=0, le=3600, description="an insert slower than this counts as a stalled store: spool and go on"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            parse_store_url(value)
        except StoreURLError as exc:
            raise ValueError(exc.message) from None
        return value

    @property
    def spool_path(self) -> Path:
        if self.spool_dir is not None:
            return self.spool_dir
        url = parse_store_url(self.url)
        if url.kind == "chdb" and url.path is not None:
            return url.path / ("spool" if url.database == DEFAULT_DATABASE else f"spool-{url.database}")
        return Path("otel-cost-spool")

    @model_validator(mode="after")
    def _sizes(self) -> StoreConfig:
        if self.batch_size > self.queue_size:
            raise ValueError(
                f"store.batch_size must be <= store.queue_size (got {self.batch_size} > {self.queue_size})"
            )
        return self


#: Absolute prices an override may set, in genai-prices' units: USD per million tokens, per thousand requests.
PRICE_KEYS = (
    "input_mtok",
    "cache_read_mtok",
    "cache_write_mtok",
    "cache_write_1h_mtok",
    "output_mtok",
    "output_reasoning_mtok",
    "requests_kcount",
    "input_audio_mtok",
    "output_audio_mtok",
)


class PriceOverride(_Section):
    """One dated price rule. Its kind follows from its keys: `deployment` (an alias: a private deployment
    or inference-profile name priced as `provider`/`model`, or at `prices`), `model` (negotiated prices or
    a multiplier for one model), or only `provider` (a provider-wide multiplier)."""

    name: str = Field(min_length=1, description="identity recorded in price_version; never reuse one")
    deployment: str | None = Field(None, min_length=1)
    provider: str | None = Field(None, min_length=1)
    model: str | None = Field(None, min_length=1)
    multiplier: Decimal | None = Field(None, gt=0, le=100)
    prices: dict[str, Decimal] | None = None
    service_tier: str | None = Field(None, min_length=1, description="variant: only calls on this tier")
    processing: Literal["batch"] | None = Field(None, description="variant: only batch calls")
    effective_from: date | None = None
    effective_until: date | None = Field(None, description="first day it no longer applies")

    @field_validator("prices")
    @classmethod
    def _prices(cls, value: dict[str, Decimal] | None) -> dict[str, Decimal] | None:
        if value is None:
            return None
        unknown = sorted(set(value) - set(PRICE_KEYS))
        if unknown:
            raise ValueError(f"unknown price key(s) {', '.join(unknown)}; known: {', '.join(PRICE_KEYS)}")
        if not value:
            raise ValueError("must name at least one price")
        for key, amount in value.items():
            if not amount.is_finite() or amount < 0:
                raise ValueError(f"{key} must be a non-negative amount (got {amount})")
        return value

    @model_validator(mode="after")
    def _kind(self) -> PriceOverride:
        if self.multiplier is not None and self.prices is not None:
            raise ValueError("set multiplier or prices, not both")
        if self.deployment is not None:
            if self.model is None and self.prices is None:
                raise ValueError("a deployment alias needs the model it serves, or prices")
            if self.multiplier is not None:
                raise ValueError("a deployment alias takes prices, not a multiplier (add a model override)")
        elif self.model is not None:
            if self.multiplier is None and self.prices is None:
                raise ValueError("a model override needs a multiplier or prices")
        elif self.provider is not None:
            if self.multiplier is None:
                raise ValueError("a provider-wide override needs a multiplier")
            if self.prices is not None:
                raise ValueError("prices belong to a model: add model")
        else:
            raise ValueError("an override needs deployment, model or provider")
        if self.effective_from and self.effective_until and self.effective_until <= self.effective_from:
            raise ValueError("effective_until must be after effective_from")
        return self

    @property
    def kind(self) -> str:
        return "deployment" if self.deployment else "model" if self.model else "provider"


class PricingConfig(_Section):
    overrides: list[PriceOverride] = Field(default_factory=list)

    @field_validator("overrides")
    @classmethod
    def _unique(cls, value: list[PriceOverride]) -> list[PriceOverride]:
        seen: set[str] = set()
        for override in value:
            if override.name in seen:
                raise ValueError(f"override name {override.name!r} is used twice (it identifies prices in rows)")
            seen.add(override.name)
        return value


#: The owner dimensions every row has (and the rollups group by); tags are user-defined on top.
OWNER_DIMENSIONS = ("cost_center", "team", "feature", "agent", "environment")
_SOURCE_KINDS = ("span", "resource", "baggage", "attribute")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def check_source(text: str) -> str:
    """A source written as text: `span:KEY`, `resource:KEY`, `baggage:KEY`, `attribute:KEY` (span, then
    resource), `catalog` (the service catalog), `preset:NAME` (a preset's sources for this dimension)."""
    if text == "catalog":
        return text
    kind, sep, rest = text.partition(":")
    if kind == "preset":
        _check_preset(rest)
        return text
    if not sep or kind not in _SOURCE_KINDS or not rest.strip():
        raise ValueError(
            f"unknown source {text!r}: write span:KEY, resource:KEY, baggage:KEY, attribute:KEY, catalog, "
            "preset:NAME, or {regex: ..., from: ...}"
        )
    return text


class RegexSource(_Section):
    """A value derived from another source by a regular expression: its first capture group (or the whole
    match), or `value` with `\\1`-style references to the groups."""

    regex: str
    from_: str = Field(alias="from")
    value: str | None = None

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"bad regular expression {value!r}: {exc}") from None
        return value

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        if value in ("catalog",) or value.startswith("preset:"):
            raise ValueError("a regex reads an attribute: span:KEY, resource:KEY, baggage:KEY or attribute:KEY")
        return check_source(value)


class JSONSource(_Section):
    """A field of an attribute that holds a JSON object (OpenInference `metadata`)."""

    json_field: str = Field(alias="json", min_length=1)
    from_: str = Field(alias="from")

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        if value in ("catalog",) or value.startswith("preset:"):
            raise ValueError("json reads an attribute: span:KEY, resource:KEY, baggage:KEY or attribute:KEY")
        return check_source(value)


def _source_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "source-json" if "json" in value else "source-regex"
    if isinstance(value, JSONSource):
        return "source-json"
    return "source-regex" if isinstance(value, RegexSource) else "source-text"


def _check_preset(name: str) -> str:
    from .attribution.presets import PRESETS  # the presets live with attribution

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return name


def _check_dimension(name: str) -> str:
    if name not in OWNER_DIMENSIONS:
        raise ValueError(
            f"unknown dimension {name!r}; owner dimensions are {', '.join(OWNER_DIMENSIONS)} "
            "(put your own under attribution.tags)"
        )
    return name


def _check_tag(name: str) -> str:
    if not _NAME.match(name) or name in OWNER_DIMENSIONS:
        raise ValueError(f"tag name {name!r} must be snake_case and not an owner dimension")
    return name


# One source: text (`span:KEY`, ...) or a {regex|json, from} mapping; errors point at the item itself.
Source = Annotated[
    Annotated[str, AfterValidator(check_source), Tag("source-text")]
    | Annotated[RegexSource, Tag("source-regex")]
    | Annotated[JSONSource, Tag("source-json")],
    Discriminator(_source_kind),
]


class AttributionConfig(_Section):
    presets: list[Annotated[str, AfterValidator(_check_preset)]] = Field(
        default_factory=list, description="emitter presets, in order"
    )
    dimensions: dict[Annotated[str, AfterValidator(_check_dimension)], list[Source]] = Field(
        default_factory=dict, description="per owner dimension: ordered sources, first match wins"
    )
    tags: dict[Annotated[str, AfterValidator(_check_tag)], list[Source]] = Field(
        default_factory=dict, description="user-defined dimensions (tags map)"
    )
    service_catalog: Path | None = Field(None, description="YAML: service.name -> team, cost_center, feature")
    cost_centers: dict[str, str] = Field(default_factory=dict, description="team -> cost center")
    max_values: int = Field(
        1000, ge=10, le=1_000_000, description="distinct values per dimension before new ones become 'other'"
    )

    @field_validator("tags")
    @classmethod
    def _tag_sources(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for sources in value.values():
            if any(isinstance(source, str) and source.startswith("preset:") for source in sources):
                raise ValueError("presets name owner dimensions; list a tag's sources explicitly")
        return value

    @field_validator("service_catalog")
    @classmethod
    def _catalog(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {str(value)!r} does not exist")
        return value


#: What a budget's scope may name (`service` is `service.name`; `model` the model that priced the call).
SCOPE_DIMENSIONS = ("cost_center", "team", "feature", "agent", "service", "environment", "provider", "model")


def _check_scope_dimension(name: str) -> str:
    if name not in SCOPE_DIMENSIONS:
        raise ValueError(f"unknown scope dimension {name!r}; known: {', '.join(SCOPE_DIMENSIONS)}")
    return name


ScopeDimension = Annotated[str, AfterValidator(_check_scope_dimension)]
_WINDOW = re.compile(r"^([1-9][0-9]*)([mhd])$")
_WINDOW_SECONDS = {"m": 60, "h": 3600, "d": 86400}
_MINUTE_ROLLUP_DAYS = 14


def window_seconds(text: str) -> int:
    """`60m`, `24h`, `7d` -> seconds."""
    match = _WINDOW.match(text)
    if match is None:
        raise ValueError(f"window must be minutes, hours or days, e.g. 60m, 24h, 7d (got {text!r})")
    return int(match.group(1)) * _WINDOW_SECONDS[match.group(2)]


class BudgetConfig(_Section):
    """A spend limit over a calendar period or a rolling window, with a ladder of actions."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    scope: dict[ScopeDimension, str] = Field(default_factory=dict, description="which calls count; * wildcards")
    per: list[ScopeDimension] = Field(default_factory=list, description="a separate limit per value of these")
    period: Literal["day", "week", "month", "quarter"] | None = None
    window: str | None = Field(None, description="rolling window instead of a period, e.g. 60m")
    limit: Decimal = Field(gt=0, description="USD")
    alert_at: list[Decimal] = Field(default_factory=list, description="fractions of the limit: alert")
    downgrade_at: Decimal | None = Field(None, gt=0)
    downgrade: dict[str, str] = Field(default_factory=dict, description="model -> cheaper model")
    block_at: Decimal | None = Field(None, gt=0, description="the hard point")
    hard_action: Literal["block", "downgrade"] = "block"
    forecast_alert: bool = Field(True, description="alert when the forecast for the period end passes the limit")

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None:
            seconds = window_seconds(value)
            if seconds > _MINUTE_ROLLUP_DAYS * 86400:
                raise ValueError(f"a rolling window is at most {_MINUTE_ROLLUP_DAYS}d (use a period for longer)")
        return value

    @field_validator("alert_at")
    @classmethod
    def _alerts(cls, value: list[Decimal]) -> list[Decimal]:
        if any(point <= 0 for point in value):
            raise ValueError("alert points are fractions of the limit above 0, e.g. [0.5, 0.8]")
        return sorted(value)

    @model_validator(mode="after")
    def _shape(self) -> BudgetConfig:
        if (self.period is None) == (self.window is None):
            raise ValueError("set exactly one of period (day, week, month, quarter) or window (e.g. 60m)")
        if self.downgrade_at is not None and not self.downgrade:
            raise ValueError("downgrade_at needs a downgrade map (model -> cheaper model)")
        if self.hard_action == "downgrade" and not self.downgrade:
            raise ValueError("hard_action downgrade needs a downgrade map")
        overlap = set(self.per) & set(self.scope)
        if overlap:
            raise ValueError(f"{', '.join(sorted(overlap))} cannot be both in scope and in per")
        return self


class EnforcerConfig(_Section):
    interval_seconds: float = Field(1.0, ge=0.05, le=3600, description="how often budgets are evaluated")
    timezone: str = Field("UTC", description="where calendar periods start (IANA name)")
    stale_after_seconds: int = Field(30, ge=1, description="gateways treat an older document as stale")
    recent_minutes: int = Field(60, ge=5, le=1440, description="the recent spend rate forecasts use")
    snapshot_seconds: float = Field(
        60.0, ge=0, le=86400, description="how often every cap is recorded in budget_snapshots (0: never)"
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Berlin)") from None
        return value


class GatewayConfig(_Section):
    name: str = Field(min_length=1)
    webhook: str = Field(pattern=r"^https?://", description="POSTed the cap state document on every change")
    secret: str = Field(min_length=16, description="HMAC-SHA256 key for the X-Otel-Cost-Signature header")
    timeout_seconds: float = Field(5.0, gt=0, le=60)


SEVERITIES = ("info", "warning", "critical")


def _check_duration(value: str) -> str:
    window_seconds(value)
    return value


#: A duration: minutes, hours or days (`15m`, `24h`, `7d`).
Duration = Annotated[str, AfterValidator(_check_duration)]


class AlertSinkConfig(_Section):
    """Where alerts go: a signed JSON webhook, a Slack incoming webhook, or the log."""

    kind: Literal["webhook", "slack", "log"]
    name: str | None = Field(None, min_length=1, description="in metrics and the delivery log; default: the kind")
    url: str | None = Field(None, pattern=r"^https?://")
    secret: str | None = Field(None, min_length=16, description="webhook: HMAC-SHA256 key (X-Otel-Cost-Signature)")
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    min_severity: Literal["info", "warning", "critical"] = "info"
    kinds: list[str] = Field(default_factory=list, description="only these alert kinds (default: all)")

    @model_validator(mode="after")
    def _shape(self) -> AlertSinkConfig:
        if self.kind in ("webhook", "slack") and not self.url:
            raise ValueError(f"a {self.kind} sink needs a url")
        if self.kind == "webhook" and not self.secret:
            raise ValueError("a webhook sink needs a secret (at least 16 characters): its requests are signed")
        if self.kind == "log" and (self.url or self.secret):
            raise ValueError("a log sink takes no url or secret")
        unknown = sorted(set(self.kinds) - set(ALERT_KINDS))
        if unknown:
            raise ValueError(f"unknown alert kind(s) {', '.join(unknown)} (known: {', '.join(ALERT_KINDS)})")
        return self

    @property
    def label(self) -> str:
        return self.name or self.kind


#: Every kind of alert, as sinks filter them and the `alerts` table stores them.
ALERT_KINDS = (
    "budget_threshold",
    "budget_forecast",
    "agent_loop",
    "retry_storm",
    "spend_spike",
    "unpriced_model",
    "unattributed_share",
    "floating_alias",
    "new_owner",
)


class ContainConfig(_Section):
    """Automatic containment: a temporary cap (published with the budgets' caps, `automatic: true`)."""

    action: Literal["block", "downgrade"] = "block"
    minutes: int = Field(30, ge=1, le=1440)
    downgrade: dict[str, str] = Field(default_factory=dict, description="model -> cheaper model")

    @model_validator(mode="after")
    def _shape(self) -> ContainConfig:
        if self.action == "downgrade" and not self.downgrade:
            raise ValueError("a downgrade containment needs a downgrade map (model -> cheaper model)")
        return self


class AgentLoopConfig(_Section):
    """One trace (or one conversation across traces) with too many calls or too much cost."""

    enabled: bool = True
    window: Duration = "60m"
    max_calls: int = Field(25, ge=2, description="billable calls in one trace within the window")
    max_cost_usd: Decimal = Field(Decimal("10"), gt=0, description="cost of one trace within the window")
    contain: ContainConfig | None = None


class RetryStormConfig(_Section):
    """Repeated failing calls followed by retries, per service, agent and model."""

    enabled: bool = True
    window: Duration = "10m"
    min_failures: int = Field(5, ge=1)
    min_retries: int = Field(3, ge=1, description="calls made after a failure in the same trace and model")
    min_failure_ratio: Decimal = Field(Decimal("0.2"), gt=0, le=1)
    critical_cost_usd: Decimal = Field(Decimal("1"), ge=0, description="a storm costing this much is critical")
    cooldown: Duration = "60m"
    contain: ContainConfig | None = None


SpikeDimension = Literal["agent", "feature", "service", "team"]
_SPIKE_DIMENSIONS: tuple[SpikeDimension, ...] = ("agent", "feature", "service")
OwnerDimension = Literal["cost_center", "team", "feature", "agent", "service"]
_NEW_OWNER_DIMENSIONS: tuple[OwnerDimension, ...] = ("team", "feature", "agent")


class SpendSpikeConfig(_Section):
    """The spend rate of an agent, feature, service or team far above its own baseline."""

    enabled: bool = True
    dimensions: list[SpikeDimension] = Field(default_factory=lambda: list(_SPIKE_DIMENSIONS))
    window: Duration = "15m"
    baseline: Duration = "24h"
    min_history: Duration = "1h"
    factor: Decimal = Field(Decimal("5"), gt=1, description="recent rate / baseline rate")
    min_usd_per_hour: Decimal = Field(Decimal("1"), ge=0, description="ignore rates below this")
    cooldown: Duration = "60m"
    contain: ContainConfig | None = None

    @model_validator(mode="after")
    def _shape(self) -> SpendSpikeConfig:
        if window_seconds(self.baseline) > _MINUTE_ROLLUP_DAYS * 86400:
            raise ValueError(f"baseline is at most {_MINUTE_ROLLUP_DAYS}d")
        if window_seconds(self.window) >= window_seconds(self.baseline):
            raise ValueError("window must be shorter than baseline")
        return self


class RunawayConfig(_Section):
    agent_loop: AgentLoopConfig = Field(default_factory=AgentLoopConfig)
    retry_storm: RetryStormConfig = Field(default_factory=RetryStormConfig)
    spend_spike: SpendSpikeConfig = Field(default_factory=SpendSpikeConfig)


class HygieneConfig(_Section):
    lookback: Duration = Field("60m", description="how far back each check looks for new findings")
    unpriced_models: bool = True
    floating_aliases: bool = True
    unattributed_share: Decimal | None = Field(Decimal("0.1"), gt=0, le=1, description="today's share; null: off")
    unattributed_min_usd: Decimal = Field(Decimal("1"), ge=0, description="today's billable spend before it counts")
    new_owners: list[OwnerDimension] = Field(default_factory=lambda: list(_NEW_OWNER_DIMENSIONS))
    new_owner_warmup: Duration = Field("24h", description="owners seen this soon after the first data are not new")


class AlertsConfig(_Section):
    enabled: bool = True
    interval_seconds: float = Field(5.0, ge=0.05, le=3600, description="how often the detectors run")
    sinks: list[AlertSinkConfig] = Field(default_factory=lambda: [AlertSinkConfig(kind="log")])
    budgets: bool = Field(True, description="alert at each budget point and on the forecast")
    runaway: RunawayConfig = Field(default_factory=RunawayConfig)
    hygiene: HygieneConfig = Field(default_factory=HygieneConfig)
    redeliver_hours: int = Field(24, ge=0, le=720, description="alerts this recent are re-sent after a restart")

    @field_validator("sinks")
    @classmethod
    def _sink_names(cls, value: list[AlertSinkConfig]) -> list[AlertSinkConfig]:
        repeated = _repeated([sink.label for sink in value])
        if repeated:
            raise ValueError(f"sink names must be unique (set `name`): {', '.join(repeated)}")
        return value


_ACCEPTED = ["accepted", "accept", "pass", "passed", "correct", "relevant", "good", "yes", "true", "thumbs_up"]
_REJECTED = ["rejected", "reject", "fail", "failed", "incorrect", "irrelevant", "bad", "no", "false", "thumbs_down"]


class OutcomesConfig(_Section):
    """Accepted and rejected results, read from telemetry for cost per accepted result."""

    attribute: str = Field("otel_cost.outcome", min_length=1, description="span attribute naming a trace's result")
    evaluation_names: list[str] = Field(
        default_factory=list, description="gen_ai.evaluation.result events that count (empty: all)"
    )
    accepted: list[str] = Field(default_factory=lambda: list(_ACCEPTED), description="values meaning accepted")
    rejected: list[str] = Field(default_factory=lambda: list(_REJECTED), description="values meaning rejected")
    accept_score_at: Decimal | None = Field(
        None, description="an evaluation with a score and no known label: accepted at or above this"
    )

    @field_validator("accepted", "rejected")
    @classmethod
    def _lowered(cls, value: list[str]) -> list[str]:
        return [item.strip().lower() for item in value if item.strip()]

    @model_validator(mode="after")
    def _disjoint(self) -> OutcomesConfig:
        both = sorted(set(self.accepted) & set(self.rejected))
        if both:
            raise ValueError(f"values cannot mean both accepted and rejected: {', '.join(both)}")
        return self


_ALTERNATIVES: dict[str, str] = {
    "claude-opus-4-1": "claude-haiku-4-5",
    "claude-opus-4-5": "claude-haiku-4-5",
    "claude-sonnet-4-5": "claude-haiku-4-5",
    "gpt-5": "gpt-5-mini",
    "gpt-4.1": "gpt-4.1-mini",
    "gpt-4o": "gpt-4o-mini",
    "o3": "o4-mini",
    "claude-opus-4-8": "claude-haiku-4-5",
    "gemini-2.5-pro": "gemini-2.5-flash",
}


class ModelMixConfig(_Section):
    """Which calls on expensive models the review suggests moving, and to what."""

    alternatives: dict[str, str] = Field(
        default_factory=lambda: dict(_ALTERNATIVES), description="catalog model -> cheaper model for the what-if"
    )
    light_operations: list[str] = Field(
        default_factory=lambda: ["embeddings"], description="operations that rarely need an expensive model"
    )
    short_output_tokens: int = Field(
        300, ge=1, description="features averaging at most this many output tokens per call count as light"
    )


class ReviewConfig(_Section):
    model_mix: ModelMixConfig = Field(default_factory=ModelMixConfig)
    top: int = Field(10, ge=1, le=100, description="rows per section of the weekly review")


class ClientTLSConfig(_Section):
    """TLS towards a downstream (an `https://` endpoint): whom to trust, and our certificate for mutual TLS."""

    ca_file: Path | None = Field(
        None, description="PEM CA bundle to verify the server (default: the public roots gRPC and certifi ship)"
    )
    cert_file: Path | None = Field(None, description="client certificate (mutual TLS), with key_file")
    key_file: Path | None = None

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _exists(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"file {str(path)!r} does not exist")
        return path

    @model_validator(mode="after")
    def _pair(self) -> ClientTLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS needs both)")
        return self


_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def _check_otlp_endpoint(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("must be a URL: http://host:port (plaintext) or https://host:port (TLS)")
    return value


def _check_headers(value: dict[str, str]) -> dict[str, str]:
    for name in value:
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid header name")
    # gRPC metadata keys are lowercase; HTTP header names are case-insensitive.
    return {name.lower(): header for name, header in value.items()}


class _OTLPClientConfig(_Section):
    """How to reach an OTLP receiver: the settings forward endpoints and the metrics export share."""

    protocol: Literal["grpc", "http/protobuf"] = "grpc"
    headers: Annotated[dict[str, str], AfterValidator(_check_headers)] = Field(
        default_factory=dict, description="sent with every export (e.g. an API key)"
    )
    compression: Literal["gzip", "none"] = "gzip"
    tls: ClientTLSConfig | None = None
    timeout_seconds: float = Field(10.0, gt=0, le=300, description="per attempt")

    @model_validator(mode="after")
    def _tls_needs_https(self) -> _OTLPClientConfig:
        endpoint = getattr(self, "endpoint", None) or ""
        if self.tls is not None and not endpoint.startswith("https://"):
            raise ValueError("tls is set but the endpoint is not https:// (TLS): use https://")
        return self


class ForwardEndpointConfig(_OTLPClientConfig):
    """One downstream that receives every acknowledged export, enriched (see README "Processor mode")."""

    endpoint: Annotated[str, AfterValidator(_check_otlp_endpoint)] = Field(
        description="http://host:port or https://host:port; OTLP/HTTP appends /v1/traces to a URL without a path"
    )
    name: str | None = Field(None, min_length=1, description="in /metrics; default: the endpoint")
    queue_max_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="exports waiting for this downstream; past it the oldest are dropped"
    )
    max_batch_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="queued exports are merged into one request up to this size"
    )
    retry_initial_seconds: float = Field(0.5, gt=0, le=60, description="first pause after a retryable failure")
    retry_max_seconds: float = Field(30.0, gt=0, le=600, description="longest pause (unless the server asks)")

    @property
    def label(self) -> str:
        return self.name or self.endpoint


class ForwardConfig(_Section):
    """Processor mode: pass every acknowledged export on, with cost attributes on priced model calls."""

    endpoints: list[ForwardEndpointConfig] = Field(default_factory=list, description="empty: forwarding is off")
    drop_content: bool = Field(False, description="also drop prompt/completion content on the way out")
    gen_ai_usage_cost: bool = Field(
        False, description="also write the proposed gen_ai.usage.cost.* attributes where a span has none"
    )

    @field_validator("endpoints")
    @classmethod
    def _unique(cls, value: list[ForwardEndpointConfig]) -> list[ForwardEndpointConfig]:
        repeated = _repeated([endpoint.label for endpoint in value])
        if repeated:
            raise ValueError(f"endpoints must be unique (give each a name): {', '.join(repeated)}")
        return value


class MetricsExportConfig(_OTLPClientConfig):
    """Cost metrics pushed over OTLP through the OpenTelemetry SDK (README "Cost metrics over OTLP")."""

    endpoint: Annotated[str, AfterValidator(_check_otlp_endpoint)] | None = Field(
        None, description="http(s)://host:port of an OTLP metrics receiver; unset: off"
    )
    interval_seconds: float = Field(60.0, ge=0.05, le=3600, description="how often metrics are exported")
    max_series: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="(provider, model, team, feature, agent) combinations per metric; later ones are 'other'",
    )


class Config(_Section):
    receiver: ReceiverConfig = Field(default_factory=ReceiverConfig)
    api: APIConfig = Field(default_factory=APIConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    pricing: PricingConfig = Field(default_factory=PricingConfig)
    attribution: AttributionConfig = Field(default_factory=AttributionConfig)
    budgets: list[BudgetConfig] = Field(default_factory=list)
    enforcer: EnforcerConfig = Field(default_factory=EnforcerConfig)
    gateways: list[GatewayConfig] = Field(default_factory=list)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    outcomes: OutcomesConfig = Field(default_factory=OutcomesConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    forward: ForwardConfig = Field(default_factory=ForwardConfig)
    metrics_export: MetricsExportConfig = Field(default_factory=MetricsExportConfig)

    @field_validator("budgets")
    @classmethod
    def _budget_names(cls, value: list[BudgetConfig]) -> list[BudgetConfig]:
        names = [budget.name for budget in value]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"budget names must be unique: {', '.join(repeated)}")
        return value


def _substitute(node: Any, path: str, environ: Mapping[str, str]) -> Any:
    if isinstance(node, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = environ.get(name)
            if value is None:
                if default is None:
                    raise ConfigError(
                        f"{path}: environment variable {name} is not set (write ${{env:{name}:-default}} "
                        "to make it optional)"
                    )
                return default
            return value

        return _ENV_REF.sub(replace, node)
    if isinstance(node, dict):
        return {key: _substitute(value, f"{path}.{key}" if path else str(key), environ) for key, value in node.items()}
    if isinstance(node, list):
        return [_substitute(value, f"{path}[{index}]", environ) for index, value in enumerate(node)]
    return node


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {}
    for section_name, field in Config.model_fields.items():
        section = field.annotation
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            continue  # a list section (budgets, gateways) has no single keys to override
        for key, info in section.model_fields.items():
            env_name = f"OTEL_COST_{section_name}_{key}".upper()
            if env_name not in environ:
                continue
            raw = environ[env_name]
            value: Any = (
                [item.strip() for item in raw.split(",") if item.strip()] if "list" in str(info.annotation) else raw
            )
            overrides.setdefault(section_name, {})[key] = value
    return overrides


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
    for section, values in extra.items():
        current = merged.get(section)
        if isinstance(values, Mapping):
            merged[section] = {**(current if isinstance(current, dict) else {}), **values}
        else:
            merged[section] = values  # a list section (budgets, gateways) is replaced whole
    return merged


def _line_of(root: yaml.Node | None, location: tuple[Any, ...]) -> int | None:
    """The 1-based line of the key (or list item) at `location` in the YAML document."""
    node, line = root, None
    for part in location:
        if isinstance(node, yaml.MappingNode):
            pair = next(((key, value) for key, value in node.value if key.value == part), None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _describe(error: ValidationError, source: str, root: yaml.Node | None) -> str:
    lines = []
    for item in error.errors():
        location = tuple(
            part
            for part in item["loc"]
            if not isinstance(part, str) or (not part.startswith(("function-", "source-")) and part != "[key]")
        )
        dotted = ".".join(str(part) for part in location) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            parent = ".".join(str(part) for part in location[:-1])
            message = f"unknown key {location[-1]!r}" + (f" in {parent!r}" if parent else "")
        elif "input" in item and item["type"] not in ("missing",) and not isinstance(item["input"], dict | list):
            message += f" (got {item['input']!r})"
        line = _line_of(root, location)
        where = f"{source}:{line}: " if line else f"{source}: " if source else ""
        lines.append(f"{where}{dotted}: {message}")
    return "\n".join(lines)


def load_config(
    path: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read, substitute, merge and validate. Raises ConfigError with one located line per problem."""
    environ = os.environ if environ is None else environ
    document: dict[str, Any] = {}
    root: yaml.Node | None = None
    source = ""
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read config file: {exc.strerror}") from exc
        try:
            root = yaml.compose(text)
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of sections (receiver, api, store)")
        document = _substitute(loaded, "", environ)
        section = document.get("attribution")
        catalog = section.get("service_catalog") if isinstance(section, dict) else None
        if isinstance(section, dict) and isinstance(catalog, str) and catalog and not Path(catalog).is_absolute():
            section["service_catalog"] = str(Path(path).parent / catalog)  # relative to the config file
    document = _merge(document, _env_overrides(environ))
    document = _merge(document, overrides or {})
    try:
        config = Config.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, root)) from None
    if config.attribution.service_catalog is not None:
        from .attribution.catalog import check_service_catalog

        catalog_problems = check_service_catalog(config.attribution.service_catalog, config.attribution.cost_centers)
        if catalog_problems:
            raise ConfigError("\n".join(catalog_problems))
    if config.pricing.overrides:
        from .pricing.overrides import check_overrides  # the catalog loads only when overrides need it

        problems = check_overrides(config.pricing.overrides)
        if problems:
            lines = []
            for index, key, message in problems:
                location = ("pricing", "overrides", index, key) if key else ("pricing", "overrides", index)
                line = _line_of(root, location)
                where = f"{source}:{line}: " if line else f"{source}: " if source else ""
                lines.append(f"{where}pricing.overrides.{index}{'.' + key if key else ''}: {message}")
            raise ConfigError("\n".join(lines))
    return config
