"""Inline SVG charts for the HTML review: no script, no fonts to fetch, no network.

Bars are drawn from exact Decimals scaled to pixels; the numbers printed beside them are the
review's own (rounded for display only).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from html import escape

__all__ = ["PALETTE", "diverging_bars", "horizontal_bars", "paired_columns"]

#: Colours by meaning; the screenshot test looks for them.
PALETTE = {
    "this": "#2f6fdf",
    "previous": "#b8c7e6",
    "up": "#d9534f",
    "down": "#2e9d5b",
    "axis": "#8a94a6",
    "text": "#1f2430",
}

_FONT = 'font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="12"'


def _scale(value: Decimal, largest: Decimal, pixels: int) -> float:
    if largest <= 0:
        return 0.0
    return float(value / largest * pixels)


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def paired_columns(
    title: str, labels: Sequence[str], current: Sequence[Decimal], previous: Sequence[Decimal], shown: Sequence[str]
) -> str:
    """Columns per label: this period (dark) beside the one before (light), value above."""
    width, height, top, bottom, left = 720, 240, 24, 40, 16
    plot = height - top - bottom
    slot = (width - 2 * left) / max(len(labels), 1)
    largest = max([*current, *previous, Decimal(0)])
    body = [f'<line x1="{left}" y1="{top + plot}" x2="{width - left}" y2="{top + plot}" stroke="{PALETTE["axis"]}"/>']
    bar = slot * 0.32
    for index, label in enumerate(labels):
        x = left + index * slot + slot * 0.16
        for offset, (value, colour) in enumerate(((previous[index], "previous"), (current[index], "this"))):
            tall = _scale(value, largest, plot)
            body.append(
                f'<rect x="{x + offset * bar:.1f}" y="{top + plot - tall:.1f}" width="{bar:.1f}" '
                f'height="{tall:.1f}" fill="{PALETTE[colour]}">'
                f"<title>{escape(label)}: {escape(str(value))}</title></rect>"
            )
        centre = x + bar
        body.append(
            f'<text x="{centre:.1f}" y="{top + plot - _scale(current[index], largest, plot) - 6:.1f}" '
            f'text-anchor="middle" fill="{PALETTE["text"]}" {_FONT}>{escape(shown[index])}</text>'
        )
        body.append(
            f'<text x="{centre:.1f}" y="{height - bottom + 18}" text-anchor="middle" '
            f'fill="{PALETTE["text"]}" {_FONT}>{escape(label)}</text>'
        )
    legend_y = height - 8
    body.append(f'<rect x="{left}" y="{legend_y - 10}" width="10" height="10" fill="{PALETTE["this"]}"/>')
    body.append(f'<text x="{left + 14}" y="{legend_y}" fill="{PALETTE["text"]}" {_FONT}>this week</text>')
    body.append(f'<rect x="{left + 90}" y="{legend_y - 10}" width="10" height="10" fill="{PALETTE["previous"]}"/>')
    body.append(f'<text x="{left + 104}" y="{legend_y}" fill="{PALETTE["text"]}" {_FONT}>week before</text>')
    return _svg(width, height, title, body)


def horizontal_bars(title: str, labels: Sequence[str], values: Sequence[Decimal], shown: Sequence[str]) -> str:
    """One bar per label, longest first as given, value at the end of the bar."""
    row, left, right = 24, 200, 120
    width = 720
    height = max(len(labels), 1) * row + 8
    largest = max([*values, Decimal(0)])
    body = []
    for index, label in enumerate(labels):
        y = 4 + index * row
        long = _scale(values[index], largest, width - left - right)
        body.append(
            f'<text x="{left - 8}" y="{y + 15}" text-anchor="end" fill="{PALETTE["text"]}" {_FONT}>'
            f"{escape(label[:32])}</text>"
        )
        body.append(
            f'<rect x="{left}" y="{y + 3}" width="{long:.1f}" height="{row - 8}" fill="{PALETTE["this"]}">'
            f"<title>{escape(label)}: {escape(str(values[index]))}</title></rect>"
        )
        body.append(
            f'<text x="{left + long + 6:.1f}" y="{y + 15}" fill="{PALETTE["text"]}" {_FONT}>'
            f"{escape(shown[index])}</text>"
        )
    return _svg(width, height, title, body)


def diverging_bars(title: str, labels: Sequence[str], changes: Sequence[Decimal], shown: Sequence[str]) -> str:
    """Changes around a centre line: increases right (red), decreases left (green)."""
    row, width, label_width = 24, 720, 180
    height = max(len(labels), 1) * row + 8
    centre = label_width + (width - label_width) / 2
    half = (width - label_width) / 2 - 80
    largest = max([abs(change) for change in changes] + [Decimal(0)])
    body = [f'<line x1="{centre}" y1="0" x2="{centre}" y2="{height}" stroke="{PALETTE["axis"]}"/>']
    for index, label in enumerate(labels):
        y = 4 + index * row
        change = changes[index]
        long = _scale(abs(change), largest, int(half))
        x = centre if change >= 0 else centre - long
        colour = PALETTE["up"] if change >= 0 else PALETTE["down"]
        body.append(
            f'<text x="{label_width - 8}" y="{y + 15}" text-anchor="end" fill="{PALETTE["text"]}" {_FONT}>'
            f"{escape(label[:28])}</text>"
        )
        body.append(
            f'<rect x="{x:.1f}" y="{y + 3}" width="{long:.1f}" height="{row - 8}" fill="{colour}">'
            f"<title>{escape(label)}: {escape(str(change))}</title></rect>"
        )
        text_x = centre + long + 6 if change >= 0 else centre - long - 6
        anchor = "start" if change >= 0 else "end"
        body.append(
            f'<text x="{text_x:.1f}" y="{y + 15}" text-anchor="{anchor}" fill="{PALETTE["text"]}" {_FONT}>'
            f"{escape(shown[index])}</text>"
        )
    return _svg(width, height, title, body)
