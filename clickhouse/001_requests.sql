-- One row per model call seen in telemetry (billable or not). True spend for any slice is
-- sum(cost) over rows with billable = 1.
CREATE TABLE IF NOT EXISTS requests
(
    timestamp DateTime64(9, 'UTC') CODEC(Delta(8), ZSTD(1)),      -- span end: when the spend happened
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    trace_id String,                                               -- hex
    span_id String,                                                -- hex
    parent_span_id String,                                         -- hex, '' for a root span
    service_name LowCardinality(String),
    environment LowCardinality(String),
    cost_center LowCardinality(String),
    team LowCardinality(String),
    feature LowCardinality(String),
    agent LowCardinality(String),
    owner_source LowCardinality(String),                           -- which rule named the team
    provider LowCardinality(String),                               -- canonical gen_ai.provider.name
    operation LowCardinality(String),                              -- canonical gen_ai.operation.name
    request_model LowCardinality(String),
    response_model LowCardinality(String),
    priced_model LowCardinality(String),                           -- catalog model id ('' if unpriced)
    service_tier LowCardinality(String),
    input_tokens UInt64,                                           -- uncached input only
    cache_read_tokens UInt64,
    cache_write_tokens UInt64,
    cache_write_1h_tokens UInt64,                                  -- part of cache_write_tokens
    output_tokens UInt64,                                          -- including reasoning
    reasoning_tokens UInt64,
    cost Decimal(38, 24),                                          -- USD, exact
    currency LowCardinality(String) DEFAULT 'USD',
    price_version LowCardinality(String),                          -- catalog version (+ override)
    priced UInt8,                                                  -- 0: no price known, cost is not a price
    unpriced_reason LowCardinality(String),
    billable UInt8,                                                -- 0: counted elsewhere (aggregate, duplicate)
    duplicate_of String,                                           -- span id this call duplicates, if any
    status LowCardinality(String),                                 -- ok | error
    error_type LowCardinality(String),
    duration_ns UInt64,
    emitter LowCardinality(String),                                -- instrumentation scope name@version
    emitter_cost String,                                           -- the emitter's own cost claim, for comparison
    flags Array(LowCardinality(String)),                           -- normalization notes
    conversation_id String,
    response_id String,
    attributes Map(LowCardinality(String), String),                -- span attributes, content dropped, secrets redacted
    resource_attributes Map(LowCardinality(String), String),
    INDEX idx_trace_id trace_id TYPE bloom_filter GRANULARITY 4,
    INDEX idx_span_id span_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (cost_center, team, timestamp)
SETTINGS non_replicated_deduplication_window = 10000;
