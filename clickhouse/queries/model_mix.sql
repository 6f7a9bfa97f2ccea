-- Model mix: billable spend in the ISO week on expensive models (review.model_mix.alternatives) for
-- work that rarely needs them: light operations (embeddings), or a feature's calls averaging few
-- output tokens (short extraction, classification); and what the same tokens would cost on the
-- cheaper model the config names, at its list prices (model_rates).
--   clickhouse-client --database otel_cost --param_week=2026-W48 --queries-file model_mix.sql
WITH
    toDateTime(toMonday(makeDate(toUInt16(substring({week:String}, 1, 4)), 1, 4))
        + toIntervalWeek(toUInt8(substring({week:String}, 7, 2)) - 1), 'UTC') AS week_start,
    week_start + INTERVAL 7 DAY AS week_end,
    week_start - INTERVAL 7 DAY AS previous_start
SELECT
    usage.feature AS feature,
    usage.operation AS operation,
    usage.provider AS provider,
    usage.model AS model,
    choice.alternative AS alternative,
    usage.call_count AS calls,
    round(usage.output / usage.call_count, 1) AS avg_output_tokens,
    toString(usage.spend) AS spend_usd,
    if(rates.model = '', NULL, toString(
        usage.input * rates.input + usage.cache_read * rates.cache_read
        + usage.cache_write * rates.cache_write + usage.output * rates.output
    )) AS what_if_usd,
    if(rates.model = '', NULL, toString(usage.spend - (
        usage.input * rates.input + usage.cache_read * rates.cache_read
        + usage.cache_write * rates.cache_write + usage.output * rates.output
    ))) AS saving_usd,
    rates.price_version AS rates_version
FROM
(
    SELECT
        feature,
        operation,
        provider,
        priced_model AS model,
        count() AS call_count,
        sum(cost) AS spend,
        sum(input_tokens) AS input,
        sum(cache_read_tokens) AS cache_read,
        sum(cache_write_tokens) AS cache_write,
        sum(output_tokens) AS output
    FROM requests
    WHERE billable = 1 AND priced = 1 AND timestamp >= week_start AND timestamp < week_end
        AND priced_model IN (SELECT model FROM model_alternatives FINAL)
    GROUP BY feature, operation, provider, priced_model
) AS usage
INNER JOIN (SELECT * FROM model_alternatives FINAL) AS choice ON choice.model = usage.model
LEFT JOIN (SELECT * FROM model_rates FINAL) AS rates ON rates.provider = usage.provider AND rates.model = choice.alternative
WHERE has(choice.light_operations, usage.operation) OR usage.output <= usage.call_count * choice.short_output_tokens
ORDER BY saving_usd IS NULL, toDecimal128OrZero(saving_usd, 24) DESC, feature, model
