"""The review in four formats: Markdown (chat, tickets), HTML (one file, inline SVG, no network),
JSON (the exact document) and CSV (one row per section row and column, or one section wide)."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from html import escape
from typing import Any

from .charts import diverging_bars, horizontal_bars, paired_columns
from .report import SECTIONS, Column, Review, Section

__all__ = ["FORMATS", "render_review"]

FORMATS = ("md", "html", "csv", "json")
_CENT = Decimal("0.01")


def money(value: Any) -> str:
    """Exact text -> "$1,234.57"; below a cent, four places ("$0.0042"); None -> "—"."""
    if value in (None, ""):
        return "—"
    amount = Decimal(str(value))
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if amount and amount < _CENT:
        return f"{sign}${amount.quantize(Decimal('0.0001'), ROUND_HALF_EVEN)}"
    return f"{sign}${amount.quantize(_CENT, ROUND_HALF_EVEN):,}"


def _percent(value: Any, signed: bool = False) -> str:
    if value in (None, ""):
        return "—"
    try:
        number = Decimal(str(value)).quantize(Decimal("0.1"), ROUND_HALF_EVEN)
    except InvalidOperation:
        return str(value)
    return f"{'+' if signed and number > 0 else ''}{number}%"


def _count(value: Any) -> str:
    if value in (None, ""):
        return "—"
    number = Decimal(str(value))
    return f"{number:,}" if number == number.to_integral_value() else f"{number:,.1f}"


def cell(column: Column, value: Any) -> str:
    if column.kind == "money":
        return money(value)
    if column.kind == "percent":
        return _percent(value, signed=column.key == "change_percent")
    if column.kind == "count":
        return _count(value)
    if column.kind == "time":
        return "—" if value in (None, "") else str(value)[:16]
    if column.kind == "list":
        return ", ".join(str(item) for item in value) if isinstance(value, list) else str(value)
    return "—" if value in (None, "") else str(value)


def _headline(review: Review) -> list[tuple[str, str]]:
    summary = review.summary
    change = summary["change_percent"]
    return [
        # The change belongs to this week's figure: beside the week before it read as that week's growth.
        ("spend", money(summary["spend_usd"]) + ("" if change is None else f" ({_percent(change, True)})")),
        ("week before", money(summary["previous_spend_usd"])),
        ("calls", _count(summary["calls"])),
        ("accepted results", _count(summary["accepted_results"])),
        ("unattributed", money(summary["unattributed_usd"])),
        ("unpriced calls", _count(summary["unpriced_calls"])),
        ("caching saved", money(summary["cache_saved_usd"])),
        ("model-mix saving", money(summary["model_mix_saving_usd"])),
        ("caps over forecast", _count(summary["caps_over_forecast"])),
    ]


def _period(review: Review) -> str:
    last = review.week.end.date().toordinal() - 1
    return f"{review.week.start.date().isoformat()} to {date.fromordinal(last).isoformat()}"


# --- Markdown ------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(section: Section, rows: list[dict[str, Any]]) -> list[str]:
    right = ("money", "count", "percent")
    lines = [
        "| " + " | ".join(column.header for column in section.columns) + " |",
        "|" + "|".join("---:" if column.kind in right else "---" for column in section.columns) + "|",
    ]
    for row in rows:
        lines.append(
            "| " + " | ".join(_md_cell(cell(column, row.get(column.key))) for column in section.columns) + " |"
        )
    return lines


def markdown(review: Review) -> str:
    lines = [
        f"# Weekly LLM spend review, {review.week.label}",
        "",
        f"{_period(review)} (UTC), from {review.source or 'the store'}; amounts in USD.",
        "",
        "| " + " | ".join(name for name, _ in _headline(review)) + " |",
        "|" + "|".join("---:" for _ in _headline(review)) + "|",
        "| " + " | ".join(value for _, value in _headline(review)) + " |",
    ]
    for section in SECTIONS:
        rows = review.sections.get(section.name, [])
        lines += ["", f"## {section.title}", "", section.explains, ""]
        if rows:
            lines += _md_table(section, rows)
            shown = review.summary.get("truncated", {}).get(section.name)
            if shown:
                lines += ["", f"Top {len(rows)} of {shown}; `--format json` or the query file has them all."]
        else:
            lines.append(f"_{section.empty}_" if section.empty else "_Nothing this week._")
    lines += [
        "",
        f"Every section is a query in `clickhouse/queries/` (run it with `--param_week={review.week.label}`).",
        "",
    ]
    return "\n".join(lines)


# --- HTML ----------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2430; margin: 2rem auto;
       max-width: 1080px; padding: 0 1rem; line-height: 1.4; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
.lede { color: #5b6475; margin-top: 0; } .explains { color: #5b6475; margin: .2rem 0 .6rem; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: .6rem; }
.tile { border: 1px solid #dde3ee; border-radius: 6px; padding: .5rem .7rem; }
.tile .name { font-size: .8rem; color: #5b6475; } .tile .value { font-size: 1.15rem; font-weight: 600; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { border-bottom: 1px solid #e6eaf2; padding: .3rem .5rem; text-align: left; }
th { background: #f4f6fa; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.empty { color: #5b6475; font-style: italic; } figure { margin: .6rem 0; } figcaption { color: #5b6475; }
footer { margin-top: 2rem; color: #5b6475; font-size: .85rem; }
"""


def _html_table(section: Section, rows: list[dict[str, Any]]) -> str:
    right = ("money", "count", "percent")
    head = "".join(
        f'<th class="{"num" if column.kind in right else ""}">{escape(column.header)}</th>'
        for column in section.columns
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"num" if column.kind in right else ""}">{escape(cell(column, row.get(column.key)))}</td>'
            for column in section.columns
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _charts(review: Review) -> dict[str, str]:
    charts: dict[str, str] = {}
    this = [row for row in review.daily if row["week"] == "this"]
    previous = {row["day"]: row for row in review.daily if row["week"] == "previous"}
    start = review.week.start.date().toordinal()
    labels, current, before, shown = [], [], [], []
    for offset in range(7):
        day = date.fromordinal(start + offset)
        labels.append(day.strftime("%a %d"))
        today = next((row for row in this if row["day"] == day.isoformat()), None)
        earlier = previous.get(date.fromordinal(start + offset - 7).isoformat())
        amount = Decimal(today["spend_usd"]) if today else Decimal(0)
        current.append(amount)
        before.append(Decimal(earlier["spend_usd"]) if earlier else Decimal(0))
        shown.append(money(amount))
    charts["daily"] = paired_columns(
        "Billable spend per day, this week and the week before", labels, current, before, shown
    )
    movers = [row for row in review.sections.get("top_movers", []) if row["dimension"] == "team"]
    if movers:
        changes = [Decimal(row["change_usd"]) for row in movers]
        charts["top_movers"] = diverging_bars(
            "Change in spend by team", [row["value"] for row in movers], changes, [money(change) for change in changes]
        )
    results = [row for row in review.sections.get("cost_per_result", []) if row.get("cost_per_accepted_usd")]
    if results:
        values = [Decimal(row["cost_per_accepted_usd"]) for row in results]
        charts["cost_per_result"] = horizontal_bars(
            "Cost per accepted result by feature",
            [row["feature"] for row in results],
            values,
            [money(v) for v in values],
        )
    mix = [row for row in review.sections.get("model_mix", []) if row.get("saving_usd")]
    if mix:
        values = [max(Decimal(row["saving_usd"]), Decimal(0)) for row in mix]
        charts["model_mix"] = horizontal_bars(
            "What moving light work to the cheaper model would save",
            [f"{row['feature']} · {row['model']}" for row in mix],
            values,
            [money(value) for value in values],
        )
    return charts


def html(review: Review) -> str:
    charts = _charts(review)
    tiles = "".join(
        f'<div class="tile"><div class="name">{escape(name)}</div><div class="value">{escape(value)}</div></div>'
        for name, value in _headline(review)
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Weekly LLM spend review {escape(review.week.label)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Weekly LLM spend review, {escape(review.week.label)}</h1>",
        f'<p class="lede">{escape(_period(review))} (UTC), from {escape(review.source or "the store")}; '
        "amounts in USD.</p>",
        f'<div class="tiles">{tiles}</div>',
        f"<figure>{charts['daily']}<figcaption>Billable spend per day.</figcaption></figure>",
    ]
    for section in SECTIONS:
        rows = review.sections.get(section.name, [])
        parts.append(f'<section id="{section.name}"><h2>{escape(section.title)}</h2>')
        parts.append(f'<p class="explains">{escape(section.explains)}</p>')
        if section.name in charts:
            parts.append(f"<figure>{charts[section.name]}</figure>")
        if rows:
            parts.append(_html_table(section, rows))
        else:
            parts.append(f'<p class="empty">{escape(section.empty or "Nothing this week.")}</p>')
        parts.append("</section>")
    parts.append(
        f"<footer>Generated {escape(review.document()['generated_at'])} by otel-cost. Every section is a query in "
        f"<code>clickhouse/queries/</code>; run it with <code>--param_week={escape(review.week.label)}</code>.</footer>"
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --- CSV -----------------------------------------------------------------------------------------


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(str(item) for item in value)
    return str(value)


def csv_text(review: Review, section_name: str | None = None) -> str:
    """All sections long (week, section, rank, field, value), or one section wide (its own columns)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if section_name is not None:
        rows = review.sections[section_name]
        names = list(rows[0]) if rows else [column.key for column in _section(section_name).columns]
        writer.writerow(["week", *names])
        for row in rows:
            writer.writerow([review.week.label, *(_csv_value(row.get(name)) for name in names)])
        return out.getvalue()
    writer.writerow(["week", "section", "rank", "field", "value"])
    for key, value in review.summary.items():
        if key != "truncated":
            writer.writerow([review.week.label, "summary", 1, key, _csv_value(value)])
    for section in SECTIONS:
        for rank, row in enumerate(review.sections.get(section.name, []), start=1):
            for name, value in row.items():
                writer.writerow([review.week.label, section.name, rank, name, _csv_value(value)])
    return out.getvalue()


def _section(name: str) -> Section:
    for section in SECTIONS:
        if section.name == name:
            return section
    raise KeyError(name)


def render_review(review: Review, fmt: str, section: str | None = None) -> str:
    if fmt == "md":
        return markdown(review)
    if fmt == "html":
        return html(review)
    if fmt == "csv":
        return csv_text(review, section)
    if fmt == "json":
        return json.dumps(review.document(), indent=2, ensure_ascii=False, default=str) + "\n"
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
