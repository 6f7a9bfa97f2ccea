-- Unpriced models: billable calls in the ISO week that no price covers, by provider and model.
-- Add the model to pricing.overrides (README "Pricing") and re-price with otel-cost reprice.
--   clickhouse-client --database otel_cost --param_week=2026-W48 --queries-file unpriced_models.sql
WITH
    toDateTime(toMonday(makeDate(toUInt16(substring({week:String}, 1, 4)), 1, 4))
        + toIntervalWeek(toUInt8(substring({week:String}, 7, 2)) - 1), 'UTC') AS week_start,
    week_start + INTERVAL 7 DAY AS week_end,
    week_start - INTERVAL 7 DAY AS previous_start
SELECT
    provider,
    model,
    sum(calls) AS call_count,
    sum(input_tokens + cache_read_tokens + cache_write_tokens) AS input_tokens_total,
    sum(output_tokens) AS output_tokens_total,
    groupUniqArray(team) AS teams
FROM spend_hour
WHERE billable = 1 AND priced = 0 AND hour >= week_start AND hour < week_end
GROUP BY provider, model
ORDER BY call_count DESC, provider, model
