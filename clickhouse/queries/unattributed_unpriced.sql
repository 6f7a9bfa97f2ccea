-- Unattributed and unpriced: the ISO week's billable spend, how much of it has no owner (team
-- 'unattributed'), and how many billable calls have no price (their cost is not known, not zero).
--   clickhouse-client --database otel_cost --param_week=2026-W48 --queries-file unattributed_unpriced.sql
WITH
    toDateTime(toMonday(makeDate(toUInt16(substring({week:String}, 1, 4)), 1, 4))
        + toIntervalWeek(toUInt8(substring({week:String}, 7, 2)) - 1), 'UTC') AS week_start,
    week_start + INTERVAL 7 DAY AS week_end,
    week_start - INTERVAL 7 DAY AS previous_start
SELECT
    toString(sum(cost)) AS spend_usd,
    sum(calls) AS call_count,
    toString(sumIf(cost, team = 'unattributed')) AS unattributed_usd,
    sumIf(calls, team = 'unattributed') AS unattributed_calls,
    if(sum(cost) = 0, NULL, round(toFloat64(sumIf(cost, team = 'unattributed')) / toFloat64(sum(cost)) * 100, 1))
        AS unattributed_percent,
    sumIf(calls, priced = 0) AS unpriced_calls,
    if(sum(calls) = 0, NULL, round(sumIf(calls, priced = 0) / sum(calls) * 100, 1)) AS unpriced_percent,
    sumIf(input_tokens + cache_read_tokens + cache_write_tokens + output_tokens, priced = 0) AS unpriced_tokens
FROM spend_hour
WHERE billable = 1 AND hour >= week_start AND hour < week_end
