-- Which of these files have been applied to this database (written by `otel-cost serve` on start).
CREATE TABLE IF NOT EXISTS schema_migrations
(
    name String,
    applied_at DateTime('UTC') DEFAULT now()
)
ENGINE = MergeTree
ORDER BY name;
