-- Floating aliases: billable calls in the ISO week that asked for a moving name (gpt-4o, *-latest)
-- and were served by a dated snapshot: the model, and its price, can change under the caller.
--   clickhouse-client --database otel_cost --param_week=2026-W48 --queries-file floating_aliases.sql
WITH
    toDateTime(toMonday(makeDate(toUInt16(substring({week:String}, 1, 4)), 1, 4))
        + toIntervalWeek(toUInt8(substring({week:String}, 7, 2)) - 1), 'UTC') AS week_start,
    week_start + INTERVAL 7 DAY AS week_end,
    week_start - INTERVAL 7 DAY AS previous_start
SELECT
    provider,
    request_model AS requested,
    arraySort(groupUniqArray(response_model)) AS served,
    count() AS call_count,
    toString(sum(cost)) AS spend_usd,
    arraySort(groupUniqArray(team)) AS teams
FROM requests
WHERE billable = 1 AND has(flags, 'floating_alias') AND timestamp >= week_start AND timestamp < week_end
GROUP BY provider, request_model
ORDER BY sum(cost) DESC, provider, requested
