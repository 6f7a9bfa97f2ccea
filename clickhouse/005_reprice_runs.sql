-- Re-pricing (`otel-cost reprice`): stored rows are re-priced with the current price book by one
-- mutation of `requests`. Mutations do not flow through materialized views, so the run inserts
-- correction rows into the rollups itself: for a call whose rollup key moves (unpriced -> priced, or
-- another catalog model) that is -1 call and minus its tokens and old cost at the old key, +1 and plus
-- at the new key. Counts must therefore be signed: calls and tokens become Int64 (UInt64 would wrap).
-- Every value already stored fits; readers keep using sum(...) GROUP BY, which now sees the corrections.
ALTER TABLE spend_minute
    MODIFY COLUMN calls Int64,
    MODIFY COLUMN input_tokens Int64,
    MODIFY COLUMN cache_read_tokens Int64,
    MODIFY COLUMN cache_write_tokens Int64,
    MODIFY COLUMN output_tokens Int64,
    MODIFY COLUMN reasoning_tokens Int64;

ALTER TABLE spend_hour
    MODIFY COLUMN calls Int64,
    MODIFY COLUMN input_tokens Int64,
    MODIFY COLUMN cache_read_tokens Int64,
    MODIFY COLUMN cache_write_tokens Int64,
    MODIFY COLUMN output_tokens Int64,
    MODIFY COLUMN reasoning_tokens Int64;

-- One row per re-pricing run (dry runs are not recorded). `old_total` and `new_total` are the billable
-- spend of the range (sum(cost) WHERE billable) before and after; `price_versions` are the versions the
-- run priced with, `replaced_versions` those of the rows it changed, before.
CREATE TABLE IF NOT EXISTS reprice_runs
(
    run_id String,
    started_at DateTime64(3, 'UTC'),
    finished_at DateTime64(3, 'UTC'),
    since DateTime64(9, 'UTC'),                                    -- inclusive, span end (`timestamp`)
    until DateTime64(9, 'UTC'),                                    -- exclusive
    price_versions Array(String),
    replaced_versions Array(String),
    rows_examined UInt64,
    rows_changed UInt64,
    old_total Decimal(38, 24),                                     -- USD, billable, before
    new_total Decimal(38, 24),                                     -- USD, billable, after
    status LowCardinality(String),                                 -- ok | failed | recovered
    message String
)
ENGINE = MergeTree
ORDER BY (started_at, run_id);
