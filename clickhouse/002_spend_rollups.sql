-- Burn-rate rollups, filled by materialized views on every insert into `requests`.
-- Read them with sum(...) GROUP BY, never FINAL. Minute buckets serve short rolling windows
-- (kept 14 days); hour buckets serve periods (month-to-date in milliseconds).
-- `model` is the catalog model that priced the call, else the model the span named.

CREATE TABLE IF NOT EXISTS spend_minute
(
    minute DateTime('UTC'),
    cost_center LowCardinality(String),
    team LowCardinality(String),
    feature LowCardinality(String),
    agent LowCardinality(String),
    service_name LowCardinality(String),
    environment LowCardinality(String),
    provider LowCardinality(String),
    model LowCardinality(String),
    billable UInt8,
    priced UInt8,
    calls UInt64,
    cost Decimal(38, 24),
    input_tokens UInt64,
    cache_read_tokens UInt64,
    cache_write_tokens UInt64,
    output_tokens UInt64,
    reasoning_tokens UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, cost_center, team, feature, agent, service_name, environment, provider, model, billable, priced)
TTL minute + INTERVAL 14 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS spend_minute_mv TO spend_minute AS
SELECT
    toStartOfMinute(timestamp) AS minute,
    cost_center, team, feature, agent, service_name, environment, provider,
    if(priced_model != '', priced_model, if(response_model != '', response_model, request_model)) AS model,
    billable, priced,
    count() AS calls,
    sum(cost) AS cost,
    sum(input_tokens) AS input_tokens,
    sum(cache_read_tokens) AS cache_read_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(output_tokens) AS output_tokens,
    sum(reasoning_tokens) AS reasoning_tokens
FROM requests
GROUP BY minute, cost_center, team, feature, agent, service_name, environment, provider, model, billable, priced;

CREATE TABLE IF NOT EXISTS spend_hour
(
    hour DateTime('UTC'),
    cost_center LowCardinality(String),
    team LowCardinality(String),
    feature LowCardinality(String),
    agent LowCardinality(String),
    service_name LowCardinality(String),
    environment LowCardinality(String),
    provider LowCardinality(String),
    model LowCardinality(String),
    billable UInt8,
    priced UInt8,
    calls UInt64,
    cost Decimal(38, 24),
    input_tokens UInt64,
    cache_read_tokens UInt64,
    cache_write_tokens UInt64,
    output_tokens UInt64,
    reasoning_tokens UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, cost_center, team, feature, agent, service_name, environment, provider, model, billable, priced)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS spend_hour_mv TO spend_hour AS
SELECT
    toStartOfHour(timestamp) AS hour,
    cost_center, team, feature, agent, service_name, environment, provider,
    if(priced_model != '', priced_model, if(response_model != '', response_model, request_model)) AS model,
    billable, priced,
    count() AS calls,
    sum(cost) AS cost,
    sum(input_tokens) AS input_tokens,
    sum(cache_read_tokens) AS cache_read_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(output_tokens) AS output_tokens,
    sum(reasoning_tokens) AS reasoning_tokens
FROM requests
GROUP BY hour, cost_center, team, feature, agent, service_name, environment, provider, model, billable, priced;
