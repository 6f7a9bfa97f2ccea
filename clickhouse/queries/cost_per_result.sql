-- Cost per accepted result by feature: the feature's billable spend in the ISO week divided by the
-- traces whose result (latest outcome in the week) is accepted. A trace's result belongs to the
-- feature that spent most in that trace, else to the feature its outcome span is attributed to.
--   clickhouse-client --database otel_cost --param_week=2026-W48 --queries-file cost_per_result.sql
WITH
    toDateTime(toMonday(makeDate(toUInt16(substring({week:String}, 1, 4)), 1, 4))
        + toIntervalWeek(toUInt8(substring({week:String}, 7, 2)) - 1), 'UTC') AS week_start,
    week_start + INTERVAL 7 DAY AS week_end,
    week_start - INTERVAL 7 DAY AS previous_start
SELECT
    feature,
    toString(spend) AS spend_usd,
    call_count AS calls,
    accepted,
    rejected,
    if(accepted + rejected = 0, NULL, round(accepted / (accepted + rejected) * 100, 1)) AS accepted_percent,
    if(accepted = 0, NULL, toString(spend / accepted)) AS cost_per_accepted_usd
FROM
(
    SELECT feature, sum(cost) AS spend, sum(calls) AS call_count
    FROM spend_hour
    WHERE billable = 1 AND hour >= week_start AND hour < week_end
    GROUP BY feature
) AS spending
FULL OUTER JOIN
(
    SELECT
        if(trace_feature != '', trace_feature, own_feature) AS feature,
        countIf(result = 'accepted') AS accepted,
        countIf(result = 'rejected') AS rejected
    FROM
    (
        SELECT trace_id, argMax(outcome, (timestamp, outcome)) AS result, argMax(feature, (timestamp, outcome)) AS own_feature
        FROM outcomes
        WHERE timestamp >= week_start AND timestamp < week_end
        GROUP BY trace_id
    ) AS results
    LEFT JOIN
    (
        SELECT trace_id, argMax(feature, (spent, feature)) AS trace_feature
        FROM
        (
            SELECT trace_id, feature, sum(cost) AS spent
            FROM requests
            WHERE billable = 1
                AND timestamp >= previous_start AND timestamp < week_end
                AND trace_id IN (SELECT trace_id FROM outcomes WHERE timestamp >= week_start AND timestamp < week_end)
            GROUP BY trace_id, feature
        )
        GROUP BY trace_id
    ) AS traces USING (trace_id)
    GROUP BY feature
) AS judged USING (feature)
ORDER BY accepted = 0, spend / greatest(accepted, 1) DESC, feature
