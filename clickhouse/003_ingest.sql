-- The wire format of bulk inserts: one TabSeparated line per call, in this column order, turned into a
-- `requests` row by the view below (rows are not kept here: Null engine). Attribute maps travel as keys
-- and values joined with the unit separator (\x1f), and so do flags; values are cut at 256
-- characters here; `cost_units` is an integer of 10^-24 USD, so no cost ever passes through a float. `flags`, `billable` and `duplicate_of` come last: the
-- receiver may still mark a call as a nested duplicate after its line was written.
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
    input_tokens UInt64,
    cache_read_tokens UInt64,
    cache_write_tokens UInt64,
    cache_write_1h_tokens UInt64,
    output_tokens UInt64,
    reasoning_tokens UInt64,
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
    flags String,
    billable UInt8,
    duplicate_of String
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS requests_ingest_mv TO requests AS
SELECT
    fromUnixTimestamp64Nano(timestamp_ns) AS timestamp,
    trace_id, span_id, parent_span_id, service_name, environment, cost_center, team, feature, agent, owner_source,
    provider, operation, request_model, response_model, priced_model, service_tier,
    input_tokens, cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, output_tokens, reasoning_tokens,
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
    ) AS resource_attributes
FROM requests_ingest;
