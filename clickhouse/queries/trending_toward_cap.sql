-- Trending toward cap: every cap's last state in the ISO week as the enforcer computed it (spent,
-- forecast for the period end at the recent pace, when the limit is reached), nearest its limit first.
--   clickhouse-client --database otel_cost --param_week=2026-W48 --queries-file trending_toward_cap.sql
WITH
    toDateTime(toMonday(makeDate(toUInt16(substring({week:String}, 1, 4)), 1, 4))
        + toIntervalWeek(toUInt8(substring({week:String}, 7, 2)) - 1), 'UTC') AS week_start,
    week_start + INTERVAL 7 DAY AS week_end,
    week_start - INTERVAL 7 DAY AS previous_start
SELECT
    budget,
    scope_key AS scope,
    action,
    toString(spent) AS spent_usd,
    toString(limit_amount) AS limit_usd,
    toString(forecast) AS forecast_usd,
    round(toFloat64(spent) / toFloat64(limit_amount) * 100, 1) AS spent_percent,
    round(toFloat64(forecast) / toFloat64(limit_amount) * 100, 1) AS forecast_percent,
    period_start,
    period_end,
    limit_at,
    evaluated_at
FROM
(
    SELECT *
    FROM budget_snapshots
    WHERE evaluated_at >= week_start AND evaluated_at < week_end AND automatic = 0
    ORDER BY budget, scope_key, evaluated_at DESC
    LIMIT 1 BY budget, scope_key
)
ORDER BY greatest(toFloat64(forecast), toFloat64(spent)) / toFloat64(limit_amount) DESC, budget, scope
LIMIT 50
