"""What each stored export adds to the cost metrics: billable calls summed per owner and model.

The pipeline (in a worker process) sums its export's billable calls into a `Usage` mapping; the
receiving process hands it to `CostMetrics.record` once the export is stored. Integers only: costs are
exact 10^-24 USD units (`model.COST_SCALE`), turned into the metric's USD where it is exported.
"""

from __future__ import annotations

from collections.abc import MutableMapping

__all__ = ["USAGE_FIELDS", "Usage", "UsageKey", "add_usage"]

#: (provider, model, team, feature, agent): model is the priced model, else the response or request model.
UsageKey = tuple[str, str, str, str, str]

#: The position of each sum in a `Usage` value. Token classes are disjoint and add up to every token
#: of a call: input is uncached input, output excludes reasoning.
USAGE_FIELDS = (
    "cost_units",
    "calls",
    "unpriced_calls",
    "input",
    "cache_read",
    "cache_write",
    "output",
    "reasoning",
)

Usage = MutableMapping[UsageKey, list[int]]


def add_usage(
    usage: Usage,
    key: UsageKey,
    cost_units: int,
    priced: bool,
    input_tokens: int,
    cache_read_tokens: int,
    cache_write_tokens: int,
    output_tokens: int,
    reasoning_tokens: int,
) -> None:
    """Add one billable call (`output_tokens` includes `reasoning_tokens`, as in `model.Call`)."""
    sums = usage.get(key)
    if sums is None:
        sums = usage[key] = [0, 0, 0, 0, 0, 0, 0, 0]
    sums[0] += cost_units
    sums[1] += 1
    if not priced:
        sums[2] += 1
    sums[3] += input_tokens
    sums[4] += cache_read_tokens
    sums[5] += cache_write_tokens
    sums[6] += output_tokens - reasoning_tokens
    sums[7] += reasoning_tokens
