-- The weekly review's inputs beside `requests` (README "Weekly review").
--
-- `outcomes`: accepted or rejected results seen in telemetry: a `gen_ai.evaluation.result` span
-- event, or the outcome attribute (`outcomes.attribute`, default otel_cost.outcome) on any span.
-- A trace's result is its latest outcome; it belongs to the feature that spent most in that trace,
-- else to the feature its own span is attributed to. A retried export may store an outcome twice:
-- every reader counts distinct traces, so a repeat changes nothing.
CREATE TABLE IF NOT EXISTS outcomes
(
    timestamp DateTime64(9, 'UTC'),                                -- span end, or the event's time
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    trace_id String,                                               -- hex
    span_id String,                                                -- hex: the span carrying the outcome
    service_name LowCardinality(String),
    environment LowCardinality(String),
    team LowCardinality(String),                                   -- the outcome span's own attribution
    feature LowCardinality(String),
    agent LowCardinality(String),
    outcome LowCardinality(String),                                -- accepted | rejected
    source LowCardinality(String),                                 -- attribute | event
    name LowCardinality(String),                                   -- gen_ai.evaluation.name, or the attribute key
    label String,                                                  -- the value as sent (score label, attribute value)
    score String,                                                  -- gen_ai.evaluation.score.value as sent, '' if none
    response_id String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (trace_id, span_id, source, name)
SETTINGS non_replicated_deduplication_window = 10000;

-- `budget_snapshots`: what the enforcer computed for every cap, written once a minute
-- (`enforcer.snapshot_seconds`). "Trending toward cap" and the Grafana budgets dashboard read it:
-- the numbers are the cap state's own, not a second forecast.
CREATE TABLE IF NOT EXISTS budget_snapshots
(
    evaluated_at DateTime('UTC'),
    budget LowCardinality(String),
    scope Map(LowCardinality(String), String),                     -- the budget's scope plus its `per` values
    scope_key String,                                              -- the scope as k=v,k=v (sorted): one cap
    action LowCardinality(String),                                 -- allow | alert | downgrade | block
    spent Decimal(38, 24),                                         -- USD in the period (or window) so far
    limit_amount Decimal(38, 24),
    forecast Decimal(38, 24),                                      -- at the period end, at the recent pace
    period_start DateTime('UTC'),
    period_end DateTime('UTC'),
    limit_at Nullable(DateTime('UTC')),                            -- when the recent pace reaches the limit
    automatic UInt8,                                               -- a runaway alert's temporary containment
    reason String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(evaluated_at)
ORDER BY (budget, scope_key, evaluated_at)
TTL evaluated_at + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

-- `model_rates`: list prices per token (the bundled catalog, base tier, today's version) of every
-- model priced in `requests` and every model named in `review.model_mix.alternatives`. otel-cost
-- rewrites it on start and every few minutes; the review's cache-savings and what-if queries join
-- it, so they run unchanged in clickhouse-client.
CREATE TABLE IF NOT EXISTS model_rates
(
    provider LowCardinality(String),
    model LowCardinality(String),                                  -- catalog model id, as in requests.priced_model
    price_version LowCardinality(String),
    input Decimal(38, 24),                                         -- USD per token
    cache_read Decimal(38, 24),
    cache_write Decimal(38, 24),
    output Decimal(38, 24),
    updated_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (provider, model);

-- `model_alternatives`: `review.model_mix` from the config: calls to `model` for operations in
-- `light_operations`, or in features averaging at most `short_output_tokens` output tokens per call,
-- could run on `alternative`. Rewritten with `model_rates`.
CREATE TABLE IF NOT EXISTS model_alternatives
(
    model LowCardinality(String),
    alternative LowCardinality(String),
    light_operations Array(String),
    short_output_tokens UInt32,
    updated_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY model;
