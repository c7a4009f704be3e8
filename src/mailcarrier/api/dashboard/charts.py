"""Inline SVG charts, drawn on the server: no JavaScript, no build step, nothing fetched.

Each chart has a title, labelled axes, a legend naming every series, and the value of each
mark in its text (and in a ``<title>`` tooltip), so it reads without colour and without a
mouse. Every function returns markup with its text escaped, ready to embed with ``|safe``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from html import escape

__all__ = [
    "CATEGORY_COLOURS",
    "CATEGORY_NAMES",
    "SERIES_COLOURS",
    "bar_chart",
    "category_label",
    "days_between",
    "line_chart",
    "percent",
    "stacked_by_day",
]

#: Seed 001's categories as a marketer reads them.
CATEGORY_NAMES = {1: "spam or blocked sender", 2: "invalid address", 3: "temporary",
                  4: "technical", 9: "unknown"}
CATEGORY_COLOURS = {1: "#b3261e", 2: "#c5590a", 3: "#8a6d00", 4: "#1a5fb4", 9: "#5f6368"}
#: Distinguishable lines for per-domain trends (dark enough against white for text too).
SERIES_COLOURS = ("#1a5fb4", "#b3261e", "#188038", "#8a6d00", "#6f2da8", "#00707a")
_FONT = 'font-family="system-ui, sans-serif"'


def category_label(category: int | None) -> str:
    """``"2 – invalid address"``; unknown numbers keep their number."""
    if category is None:
        return "–"
    name = CATEGORY_NAMES.get(int(category))
    return f"{category} – {name}" if name else str(category)


def percent(part: int, whole: int) -> str:
    """``part`` as a percentage of ``whole``, one decimal (``"–"`` for an empty whole)."""
    if not whole:
        return "–"
    return f"{100 * part / whole:.1f}%"


def days_between(since: date, until: date) -> list[date]:
    """Every day of the period, so a chart has a slot (possibly empty) for each."""
    return [since + timedelta(days=i) for i in range((until - since).days + 1)]


def _nice_top(value: int) -> int:
    """A round axis maximum at or above ``value`` (1, 2, 5 × 10^n)."""
    if value <= 5:
        return max(value, 1)
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return int(step * power)
    return int(10 * power)  # pragma: no cover - the loop always returns


def _ticks(top: int) -> list[int]:
    step = max(1, top // 5) if top > 5 else 1
    return list(range(0, top + 1, step))


def _open(title: str, width: int, height: int) -> list[str]:
    return [f'<svg role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" {_FONT}>',
            f'<title>{escape(title)}</title>',
            f'<text x="0" y="16" font-size="14" font-weight="bold" fill="#202124">{escape(title)}</text>']


def _legend(entries: Sequence[tuple[str, str]], x: float, y: float, width: int) -> list[str]:
    parts: list[str] = []
    cx, cy = x, y
    for label, colour in entries:
        span = 22 + 7 * len(label)
        if cx + span > width and cx > x:
            cx, cy = x, cy + 18
        parts += [f'<rect x="{cx:.0f}" y="{cy - 10:.0f}" width="12" height="12" fill="{colour}"/>',
                  f'<text x="{cx + 16:.0f}" y="{cy:.0f}" font-size="12" fill="#202124">'
                  f'{escape(label)}</text>']
        cx += span
    return parts


def bar_chart(title: str, bars: Sequence[tuple[str, int, str]], *, total: int | None = None,
              axis_label: str = "recipients", width: int = 600) -> str:
    """Horizontal bars ``(label, value, colour)``, each with its count and its share of ``total``.

    ``total`` defaults to the sum of the bars; the x axis is scaled to round numbers.
    """
    whole = sum(v for _, v, _ in bars) if total is None else total
    top = _nice_top(max((v for _, v, _ in bars), default=0))
    row, label_w, right = 24, 190, 120
    plot_w = width - label_w - right
    height = row * len(bars) + 70
    parts = _open(title, width, height)
    base_y = 28 + row * len(bars)
    for tick in _ticks(top):
        x = label_w + plot_w * tick / top
        parts += [f'<line x1="{x:.1f}" y1="26" x2="{x:.1f}" y2="{base_y}" stroke="#e0e0e0"/>',
                  f'<text x="{x:.1f}" y="{base_y + 14}" font-size="11" text-anchor="middle" '
                  f'fill="#3c4043">{tick}</text>']
    parts += [f'<line x1="{label_w}" y1="26" x2="{label_w}" y2="{base_y}" stroke="#3c4043"/>',
              f'<line x1="{label_w}" y1="{base_y}" x2="{label_w + plot_w}" y2="{base_y}" stroke="#3c4043"/>',
              f'<text x="{label_w + plot_w / 2:.0f}" y="{base_y + 30}" font-size="11" text-anchor="middle" '
              f'fill="#3c4043">{escape(axis_label)}</text>']
    for i, (label, value, colour) in enumerate(bars):
        y = 28 + i * row
        length = plot_w * value / top
        share = percent(value, whole)
        parts += [f'<text x="{label_w - 6}" y="{y + 15}" font-size="12" text-anchor="end" '
                  f'fill="#202124">{escape(label)}</text>',
                  f'<rect x="{label_w}" y="{y + 4}" width="{max(length, 1):.1f}" height="15" fill="{colour}">'
                  f'<title>{escape(label)}: {value} ({share})</title></rect>',
                  f'<text x="{label_w + length + 6:.1f}" y="{y + 15}" font-size="12" fill="#202124">'
                  f'{value} ({share})</text>']
    parts.append("</svg>")
    return "".join(parts)


def stacked_by_day(title: str, points: Sequence[Mapping[str, object]], since: date, until: date, *,
                   width: int = 900, height: int = 280) -> str:
    """Bounces per day stacked by category, one column per day of the period (empty days too).

    ``points`` are ``{"day": "YYYY-MM-DD", "category": n, "count": n}`` as the bounce report gives.
    """
    days = days_between(since, until)
    index = {d.isoformat(): i for i, d in enumerate(days)}
    per_day: dict[int, dict[int, int]] = {}
    for p in points:
        i = index.get(str(p["day"]))
        if i is None:
            continue
        cats = per_day.setdefault(i, {})
        category = int(str(p["category"]))
        cats[category] = cats.get(category, 0) + int(str(p["count"]))
    top = _nice_top(max((sum(c.values()) for c in per_day.values()), default=0))
    left, right, plot_top, bottom = 50, 10, 30, 78
    plot_w, plot_h = width - left - right, height - plot_top - bottom
    step = plot_w / len(days)
    parts = _open(title, width, height)
    for tick in _ticks(top):
        y = plot_top + plot_h - plot_h * tick / top
        parts += [f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e0e0e0"/>',
                  f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" '
                  f'fill="#3c4043">{tick}</text>']
    parts.append(f'<text x="12" y="{plot_top + plot_h / 2:.0f}" font-size="11" text-anchor="middle" '
                 f'fill="#3c4043" transform="rotate(-90 12 {plot_top + plot_h / 2:.0f})">bounces</text>')
    for i, cats in sorted(per_day.items()):
        x = left + i * step
        base = 0.0
        for category in sorted(cats):
            count = cats[category]
            h = plot_h * count / top
            y = plot_top + plot_h - base - h
            base += h
            parts.append(f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}" height="{h:.1f}" '
                         f'fill="{CATEGORY_COLOURS.get(category, "#5f6368")}"><title>{days[i].isoformat()}: '
                         f'{count} × {escape(category_label(category))}</title></rect>')
    axis_y = plot_top + plot_h
    parts += [f'<line x1="{left}" y1="{plot_top}" x2="{left}" y2="{axis_y}" stroke="#3c4043"/>',
              f'<line x1="{left}" y1="{axis_y}" x2="{left + plot_w}" y2="{axis_y}" stroke="#3c4043"/>']
    every = max(1, math.ceil(len(days) / 10))
    for i in range(0, len(days), every):
        x = left + i * step + step / 2
        parts.append(f'<text x="{x:.1f}" y="{axis_y + 14}" font-size="11" text-anchor="middle" '
                     f'fill="#3c4043">{days[i].strftime("%d %b")}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{axis_y + 30}" font-size="11" text-anchor="middle" '
                 f'fill="#3c4043">day (UTC), {since.isoformat()} to {until.isoformat()}</text>')
    parts += _legend([(category_label(c), colour) for c, colour in CATEGORY_COLOURS.items()],
                     left, axis_y + 54, width)
    parts.append("</svg>")
    return "".join(parts)


def line_chart(title: str, series: Mapping[str, Mapping[date, int]], since: date, until: date, *,
               width: int = 900, height: int = 260, axis_label: str = "bounces") -> str:
    """One line per series (e.g. receiving domain) over every day of the period; missing days are 0."""
    days = days_between(since, until)
    top = _nice_top(max((n for values in series.values() for n in values.values()), default=0))
    left, right, plot_top, bottom = 50, 10, 30, 78
    plot_w, plot_h = width - left - right, height - plot_top - bottom
    step = plot_w / max(len(days) - 1, 1)
    parts = _open(title, width, height)
    for tick in _ticks(top):
        y = plot_top + plot_h - plot_h * tick / top
        parts += [f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e0e0e0"/>',
                  f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" '
                  f'fill="#3c4043">{tick}</text>']
    parts.append(f'<text x="12" y="{plot_top + plot_h / 2:.0f}" font-size="11" text-anchor="middle" '
                 f'fill="#3c4043" transform="rotate(-90 12 {plot_top + plot_h / 2:.0f})">'
                 f'{escape(axis_label)}</text>')
    axis_y = plot_top + plot_h
    legend = []
    for n, (name, values) in enumerate(series.items()):
        colour = SERIES_COLOURS[n % len(SERIES_COLOURS)]
        legend.append((name, colour))
        coords = [(left + i * step, axis_y - plot_h * values.get(d, 0) / top) for i, d in enumerate(days)]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for (x, y), d in zip(coords, days, strict=True):
            if values.get(d):
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>{escape(name)} '
                             f'{d.isoformat()}: {values[d]}</title></circle>')
    parts += [f'<line x1="{left}" y1="{plot_top}" x2="{left}" y2="{axis_y}" stroke="#3c4043"/>',
              f'<line x1="{left}" y1="{axis_y}" x2="{left + plot_w}" y2="{axis_y}" stroke="#3c4043"/>']
    every = max(1, math.ceil(len(days) / 10))
    for i in range(0, len(days), every):
        parts.append(f'<text x="{left + i * step:.1f}" y="{axis_y + 14}" font-size="11" text-anchor="middle" '
                     f'fill="#3c4043">{days[i].strftime("%d %b")}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{axis_y + 30}" font-size="11" text-anchor="middle" '
                 f'fill="#3c4043">day (UTC)</text>')
    if not legend:
        parts.append(f'<text x="{left + 10}" y="{plot_top + 20}" font-size="12" fill="#3c4043">'
                     'no bounces in this period</text>')
    parts += _legend(legend, left, axis_y + 54, width)
    parts.append("</svg>")
    return "".join(parts)
