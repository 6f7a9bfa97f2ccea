-- Prompt caching: per model, the share of input read from the cache in the ISO week and what that
-- saved at the model's list prices (model_rates): cached tokens at the input price minus their cache
-- read price, less the premium cache writes paid over the input price.
--   clickhouse-client --database otel_cost --param_week=2026-W48 --queries-file cache_savings.sql
WITH
    toDateTime(toMonday(makeDate(toUInt16(substring({week:String}, 1, 4)), 1, 4))
        + toIntervalWeek(toUInt8(substring({week:String}, 7, 2)) - 1), 'UTC') AS week_start,
    week_start + INTERVAL 7 DAY AS week_end,
    week_start - INTERVAL 7 DAY AS previous_start
SELECT
    usage.provider AS provider,
    usage.model AS model,
    uncached_input,
    cached_input,
    cache_writes,
    round(cached_input / greatest(uncached_input + cached_input, 1) * 100, 1) AS cache_read_percent,
    toString(spend) AS spend_usd,
    if(rates.model = '', NULL, toString(cached_input * (rates.input - rates.cache_read))) AS read_savings_usd,
    if(rates.model = '', NULL, toString(cache_writes * greatest(rates.cache_write - rates.input, toDecimal128(0, 24))))
        AS write_premium_usd,
    if(
        rates.model = '',
        NULL,
        toString(
            cached_input * (rates.input - rates.cache_read)
            - cache_writes * greatest(rates.cache_write - rates.input, toDecimal128(0, 24))
        )
    ) AS saved_usd,
    rates.price_version AS rates_version
FROM
(
    SELECT
        provider,
        model,
        sum(input_tokens) AS uncached_input,
        sum(cache_read_tokens) AS cached_input,
        sum(cache_write_tokens) AS cache_writes,
        sum(cost) AS spend
    FROM spend_hour
    WHERE billable = 1 AND priced = 1 AND hour >= week_start AND hour < week_end
    GROUP BY provider, model
    HAVING cached_input > 0 OR cache_writes > 0
) AS usage
LEFT JOIN (SELECT * FROM model_rates FINAL) AS rates ON rates.provider = usage.provider AND rates.model = usage.model
ORDER BY saved_usd IS NULL, toDecimal128OrZero(saved_usd, 24) DESC, provider, model
