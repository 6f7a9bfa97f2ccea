-- Re-attribution (`otel-cost reattribute`): stored rows get the owners the current attribution rules
-- give them. `cost_center` and `team` are in the sorting key of `requests`, which a mutation cannot
-- update, so a changed call has its row replaced: the new row is inserted (the materialized views add
-- it to the rollups), the old one deleted by a mutation, and correction rows take one call, its tokens
-- and its cost off the old key of each rollup (signed counts since 005_reprice_runs.sql).
-- One row per run (dry runs are not recorded). `rules` is the attribution section the run applied, as
-- JSON, `rules_digest` a digest of it and of the service catalog it read. `billable_total` is the
-- billable spend of the range (sum(cost) WHERE billable), which a run never changes, and
-- `unattributed_before` and `unattributed_after` the part of it owned by the unattributed team.
CREATE TABLE IF NOT EXISTS reattribute_runs
(
    run_id String,
    started_at DateTime64(3, 'UTC'),
    finished_at DateTime64(3, 'UTC'),
    since DateTime64(9, 'UTC'),                                    -- inclusive, span end (`timestamp`)
    until DateTime64(9, 'UTC'),                                    -- exclusive
    rules String,
    rules_digest String,
    rows_examined UInt64,
    rows_changed UInt64,                                           -- rows with a new owner, rules or tags
    rows_moved UInt64,                                             -- of those, rows whose rollup key moved
    billable_total Decimal(38, 24),                                -- USD
    unattributed_before Decimal(38, 24),                           -- USD, billable
    unattributed_after Decimal(38, 24),                            -- USD, billable
    status LowCardinality(String),                                 -- ok | recovered
    message String
)
ENGINE = MergeTree
ORDER BY (started_at, run_id);
