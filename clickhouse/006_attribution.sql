-- Attribution rules: user-defined tag dimensions (`attribution.tags`) land in `tags`; `owner_rules` says,
-- per dimension, which rule produced the owner (`otel-cost attribution explain`). The ingest wire format
-- gains the four columns (before `flags`), so the Null table and its view are replaced again.
ALTER TABLE requests ADD COLUMN IF NOT EXISTS tags Map(LowCardinality(String), String) AFTER resource_attributes;

ALTER TABLE requests ADD COLUMN IF NOT EXISTS owner_rules Map(LowCardinality(String), String) AFTER owner_source;

DROP TABLE IF EXISTS requests_ingest_mv;

DROP TABLE IF EXISTS requests_ingest;

CREATE TABLE IF NOT EXISTS requests_ingest
(
    timestamp_ns Int64,
    trace_id String,
    span_id String,
    parent_span_id String,
    service_name String,
    environment String,
    cost_center String,
    team String,
    feature String,
    agent String,
    owner_source String,
    provider String,
    operation String,
    request_model String,
    response_model String,
    priced_model String,
    service_tier String,
    processing String,
    input_tokens UInt64,
    cache_read_tokens UInt64,
    cache_write_tokens UInt64,
    cache_write_1h_tokens UInt64,
    output_tokens UInt64,
    reasoning_tokens UInt64,
    input_audio_tokens UInt64,
    output_audio_tokens UInt64,
    cost_units String,
    price_version String,
    priced UInt8,
    unpriced_reason String,
    status String,
    error_type String,
    duration_ns UInt64,
    emitter String,
    emitter_cost String,
    conversation_id String,
    response_id String,
    attribute_keys String,
    attribute_values String,
    resource_keys String,
    resource_values String,
    tag_keys String,
    tag_values String,
    owner_rule_keys String,
    owner_rule_values String,
    flags String,
    billable UInt8,
    duplicate_of String
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS requests_ingest_mv TO requests AS
SELECT
    fromUnixTimestamp64Nano(timestamp_ns) AS timestamp,
    trace_id, span_id, parent_span_id, service_name, environment, cost_center, team, feature, agent, owner_source,
    provider, operation, request_model, response_model, priced_model, service_tier, processing,
    input_tokens, cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, output_tokens, reasoning_tokens,
    input_audio_tokens, output_audio_tokens,
    toDecimal128(concat(cost_units, 'e-24'), 24) AS cost,
    price_version, priced, unpriced_reason, billable, duplicate_of, status, error_type, duration_ns,
    emitter, emitter_cost,
    arrayFilter(x -> x != '', splitByChar('\x1f', flags)) AS flags,
    conversation_id, response_id,
    mapFromArrays(
        if(attribute_keys = '' AND attribute_values = '', [], splitByChar('\x1f', attribute_keys)),
        if(
            attribute_keys = '' AND attribute_values = '',
            [],
            arrayMap(v -> if(length(v) > 256, concat(substringUTF8(v, 1, 256), '…'), v), splitByChar('\x1f', attribute_values))
        )
    ) AS attributes,
    mapFromArrays(
        if(resource_keys = '' AND resource_values = '', [], splitByChar('\x1f', resource_keys)),
        if(
            resource_keys = '' AND resource_values = '',
            [],
            arrayMap(v -> if(length(v) > 256, concat(substringUTF8(v, 1, 256), '…'), v), splitByChar('\x1f', resource_values))
        )
    ) AS resource_attributes,
    mapFromArrays(
        if(tag_keys = '' AND tag_values = '', [], splitByChar('\x1f', tag_keys)),
        if(tag_keys = '' AND tag_values = '', [], splitByChar('\x1f', tag_values))
    ) AS tags,
    mapFromArrays(
        if(owner_rule_keys = '' AND owner_rule_values = '', [], splitByChar('\x1f', owner_rule_keys)),
        if(owner_rule_keys = '' AND owner_rule_values = '', [], splitByChar('\x1f', owner_rule_values))
    ) AS owner_rules
FROM requests_ingest;
