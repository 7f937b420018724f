"""Inline SVG charts: no JavaScript, no external assets. Labels are escaped like all other text."""

from __future__ import annotations

import time
from collections.abc import Sequence

from modelyard.dashboard.html import esc

COLOURS = ("#3b63d1", "#e0892b", "#2e9e5b", "#b42318", "#7a4cc2", "#0e8a9c")
WIDTH = 640
HEIGHT = 180
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 56, 12, 12, 36


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.4g}"


def line_chart(
    times: Sequence[float],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    unit: str = "",
    chart_id: str = "",
) -> str:
    """A line per series over the same time points (unix seconds)."""
    if not times:
        return '<p class="muted">no data</p>'
    top = max([max(values, default=0.0) for _, values in series] + [0.0]) or 1.0
    inner_w = WIDTH - PAD_LEFT - PAD_RIGHT
    inner_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    span = (times[-1] - times[0]) or 1.0

    def x(t: float) -> float:
        return PAD_LEFT + inner_w * (t - times[0]) / span

    def y(v: float) -> float:
        return PAD_TOP + inner_h * (1 - v / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT + 18}" role="img"'
        f' id="{esc(chart_id)}" aria-label="{esc(", ".join(name for name, _ in series))}">',
        f'<line x1="{PAD_LEFT}" y1="{PAD_TOP + inner_h}" x2="{WIDTH - PAD_RIGHT}" y2="{PAD_TOP + inner_h}"'
        ' stroke="#999"/>',
        f'<line x1="{PAD_LEFT}" y1="{PAD_TOP}" x2="{PAD_LEFT}" y2="{PAD_TOP + inner_h}" stroke="#999"/>',
        f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + 10}" font-size="11" text-anchor="end">'
        f"{esc(_fmt(top))}{esc(unit)}</text>",
        f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + inner_h}" font-size="11" text-anchor="end">0</text>',
    ]
    for t, anchor in ((times[0], "start"), (times[-1], "end")):
        label = time.strftime("%m-%d %H:%M", time.gmtime(t))
        parts.append(
            f'<text x="{x(t):.1f}" y="{PAD_TOP + inner_h + 14}" font-size="11" text-anchor="{anchor}">'
            f"{esc(label)}</text>"
        )
    for index, (name, values) in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in zip(times, values, strict=False))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{points}"/>')
        parts.append(
            f'<rect x="{PAD_LEFT + 130 * index}" y="{HEIGHT + 2}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{PAD_LEFT + 14 + 130 * index}" y="{HEIGHT + 11}" font-size="11">{esc(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(items: Sequence[tuple[str, float]], *, unit: str = "", chart_id: str = "") -> str:
    """Horizontal bars, one per (label, value)."""
    if not items:
        return '<p class="muted">no data</p>'
    top = max(v for _, v in items) or 1.0
    row_h = 22
    height = row_h * len(items) + 8
    label_w = 200
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" role="img"'
        f' id="{esc(chart_id)}">'
    ]
    for i, (label, value) in enumerate(items):
        y0 = 4 + i * row_h
        w = (WIDTH - label_w - 90) * value / top
        parts.append(
            f'<text x="{label_w - 6}" y="{y0 + 14}" font-size="12" text-anchor="end">{esc(label[:32])}</text>'
            f'<rect class="bar" x="{label_w}" y="{y0 + 3}" width="{w:.1f}" height="{row_h - 8}"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y0 + 14}" font-size="12">'
            f"{esc(_fmt(value))}{esc(unit)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
