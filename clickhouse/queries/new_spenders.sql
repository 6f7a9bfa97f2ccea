-- New spenders: teams, features, agents and models whose first billable call is in the ISO week.
--   clickhouse-client --database otel_cost --param_week=2026-W48 --queries-file new_spenders.sql
WITH
    toDateTime(toMonday(makeDate(toUInt16(substring({week:String}, 1, 4)), 1, 4))
        + toIntervalWeek(toUInt8(substring({week:String}, 7, 2)) - 1), 'UTC') AS week_start,
    week_start + INTERVAL 7 DAY AS week_end,
    week_start - INTERVAL 7 DAY AS previous_start
SELECT
    dimension,
    value,
    first_seen,
    toString(this_week) AS this_week_usd,
    this_week_calls
FROM
(
    SELECT
        dimension,
        value,
        min(hour) AS first_seen,
        sumIf(cost, hour >= week_start) AS this_week,
        sumIf(calls, hour >= week_start) AS this_week_calls
    FROM spend_hour
    ARRAY JOIN
        ['team', 'feature', 'agent', 'model'] AS dimension,
        [team, feature, agent, model] AS value
    WHERE billable = 1 AND hour < week_end AND value != ''
    GROUP BY dimension, value
)
WHERE first_seen >= week_start
ORDER BY indexOf(['team', 'feature', 'agent', 'model'], dimension), this_week DESC, value
