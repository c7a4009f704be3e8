"""Inline SVG charts: no JavaScript, no build step, readable without colour (labels on bars).

Every function returns markup with its text escaped, ready to embed with ``|safe``.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["CATEGORY_COLOURS", "bar_chart", "stacked_by_day"]

CATEGORY_COLOURS = {1: "#b3261e", 2: "#e8710a", 3: "#f9ab00", 4: "#1a73e8", 9: "#80868b"}


def bar_chart(title: str, bars: Sequence[tuple[str, int, str]], *, width: int = 560) -> str:
    """Horizontal bars ``(label, value, colour)``, e.g. the delivery funnel."""
    top = max((v for _, v, _ in bars), default=0) or 1
    row, label_w = 26, 150
    height = row * len(bars) + 30
    parts = [f'<svg role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="0" y="16" font-size="14" font-weight="bold">{escape(title)}</text>']
    for i, (label, value, colour) in enumerate(bars):
        y = 26 + i * row
        length = int((width - label_w - 60) * value / top)
        parts += [f'<text x="0" y="{y + 15}" font-size="12">{escape(label)}</text>',
                  f'<rect x="{label_w}" y="{y + 3}" width="{max(length, 1)}" height="16" fill="{colour}">'
                  f'<title>{escape(label)}: {value}</title></rect>',
                  f'<text x="{label_w + length + 6}" y="{y + 15}" font-size="12">{value}</text>']
    parts.append("</svg>")
    return "".join(parts)


def stacked_by_day(title: str, points: Sequence[dict[str, object]], *, width: int = 640,
                   height: int = 200) -> str:
    """Bounces per day stacked by category; ``points`` are ``{"day", "category", "count"}``."""
    days = sorted({str(p["day"]) for p in points})
    totals: dict[str, int] = dict.fromkeys(days, 0)
    for p in points:
        totals[str(p["day"])] += int(str(p["count"]))
    top = max(totals.values(), default=0) or 1
    plot_h = height - 50
    step = (width - 40) / max(len(days), 1)
    parts = [f'<svg role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="0" y="16" font-size="14" font-weight="bold">{escape(title)}</text>']
    base: dict[str, float] = dict.fromkeys(days, 0.0)
    for p in sorted(points, key=lambda p: (str(p["day"]), int(str(p["category"])))):
        day, cat, count = str(p["day"]), int(str(p["category"])), int(str(p["count"]))
        x = 30 + days.index(day) * step
        h = plot_h * count / top
        y = 30 + plot_h - base[day] - h
        base[day] += h
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}" height="{h:.1f}" '
                     f'fill="{CATEGORY_COLOURS.get(cat, "#80868b")}"><title>{escape(day)} category {cat}: '
                     f'{count}</title></rect>')
    if days:
        parts += [f'<text x="30" y="{height - 4}" font-size="11">{escape(days[0])}</text>',
                  f'<text x="{width - 80}" y="{height - 4}" font-size="11">{escape(days[-1])}</text>']
    parts.append("</svg>")
    return "".join(parts)
