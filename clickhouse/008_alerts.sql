-- Alerts (`alerts:` in the config): every alert fired, once, and every delivery a sink acknowledged
-- (or refused for good: a 4xx, or retried past a day).
-- The engine records an alert before any sink sees it, so a restart neither repeats it (its key is
-- reloaded) nor loses it (alerts with no delivery row for a sink are sent again). Inserts carry the
-- alert id as their deduplication token: a retried insert, or two replicas firing the same once-only
-- alert, keep one row. Read with GROUP BY alert_id (or FINAL): the tables are small.
CREATE TABLE IF NOT EXISTS alerts
(
    alert_id String,                                               -- stable per key (per firing for cooldown keys)
    key String,                                                    -- what fires once: kind, subject, period
    kind LowCardinality(String),                                   -- budget_threshold, agent_loop, ... (README "Alerts")
    severity LowCardinality(String),                               -- info | warning | critical
    fired_at DateTime64(3, 'UTC'),
    title String,
    message String,
    subject Map(LowCardinality(String), String),                   -- budget, scope, trace_id, agent, model...
    evidence String,                                               -- JSON: figures, top traces, sample span ids
    containment String,                                            -- JSON of the automatic cap, '' for none
    expires_at Nullable(DateTime64(3, 'UTC'))                      -- when that cap ends
)
ENGINE = ReplacingMergeTree
ORDER BY (alert_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS alert_deliveries
(
    alert_id String,
    sink LowCardinality(String),                                   -- the sink's name (alerts.sinks[].name, or its kind)
    delivered_at DateTime64(3, 'UTC'),                             -- when the sink answered (or was given up)
    attempts UInt32,
    outcome LowCardinality(String),                                -- delivered | failed
    reason String                                                  -- why it failed, '' when delivered
)
ENGINE = ReplacingMergeTree
ORDER BY (alert_id, sink)
SETTINGS non_replicated_deduplication_window = 10000;
