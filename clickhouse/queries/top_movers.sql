-- Top movers: billable spend in the ISO week against the week before, by team, feature, agent and
-- model, the largest changes first (10 per dimension).
--   clickhouse-client --database otel_cost --param_week=2026-W48 --queries-file top_movers.sql
WITH
    toDateTime(toMonday(makeDate(toUInt16(substring({week:String}, 1, 4)), 1, 4))
        + toIntervalWeek(toUInt8(substring({week:String}, 7, 2)) - 1), 'UTC') AS week_start,
    week_start + INTERVAL 7 DAY AS week_end,
    week_start - INTERVAL 7 DAY AS previous_start
SELECT
    dimension,
    value,
    toString(this_week) AS this_week_usd,
    toString(last_week) AS last_week_usd,
    toString(this_week - last_week) AS change_usd,
    if(last_week = 0, NULL, round((toFloat64(this_week) - toFloat64(last_week)) / toFloat64(last_week) * 100, 1))
        AS change_percent
FROM
(
    SELECT
        dimension,
        value,
        sumIf(cost, hour >= week_start) AS this_week,
        sumIf(cost, hour < week_start) AS last_week
    FROM spend_hour
    ARRAY JOIN
        ['team', 'feature', 'agent', 'model'] AS dimension,
        [team, feature, agent, model] AS value
    WHERE billable = 1 AND hour >= previous_start AND hour < week_end AND value != ''
    GROUP BY dimension, value
)
WHERE this_week != last_week
ORDER BY indexOf(['team', 'feature', 'agent', 'model'], dimension), abs(this_week - last_week) DESC, value
LIMIT 10 BY dimension
