"""Line charts as inline SVG for the run report: metric curves over RL steps.

Hand-written rather than drawn by matplotlib so the report stays small, byte-for-byte
deterministic and free of duplicate element ids when several charts share one page; each
series is one `<polyline data-key="...">`, so tests (and curious readers of the HTML) can find
a curve by its metric name. Points carry `<title>` tooltips while there are few enough of them.
"""

from __future__ import annotations

import math
from html import escape

# Okabe–Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442"]
WIDTH, HEIGHT = 420, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 10, 36
MAX_MARKERS = 60
"""Series with more points than this are drawn as a line only (markers would bloat the file)."""

Series = list[tuple[float, float]]


def nice_ticks(low: float, high: float, target: int = 5, integer: bool = False) -> list[float]:
    """Round tick values covering [low, high]: steps of 1, 2, 2.5 or 5 times a power of ten."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"ticks need finite bounds, got {low}, {high}")
    if high <= low:
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / max(target - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if integer:
        step = max(1.0, math.ceil(step))
    first = math.floor(low / step + 1e-9) * step
    count = math.ceil((high - first) / step - 1e-9)
    return [first + i * step for i in range(count + 1)]


def tick_labels(ticks: list[float]) -> list[str]:
    """The fewest decimals that write every tick exactly (0.25 stays 0.25, and 5.555 and 5.56
    never both read 5.56)."""
    tolerance = 1e-9 * max(abs(t) for t in ticks) + 1e-12
    for decimals in range(10):
        labels = [f"{t:.{decimals}f}" for t in ticks]
        if all(abs(float(label) - t) <= tolerance for label, t in zip(labels, ticks, strict=True)):
            return labels
    return [f"{t:.3e}" for t in ticks]


def line_chart(series: dict[str, Series], x_label: str = "step") -> str:
    """One SVG chart of `name → [(x, y), ...]`; every series shares the axes. Colours follow
    the order of `series` through PALETTE (the caller's legend uses `series_color`)."""
    points = [p for values in series.values() for p in values]
    if not points:
        raise ValueError("line_chart needs at least one point")
    # x spans exactly the steps logged (round ticks inside it); y is widened to round ticks.
    x_low, x_high = min(x for x, _ in points), max(x for x, _ in points)
    if x_low == x_high:
        x_low, x_high = x_low - 1, x_high + 1
    x_ticks = [t for t in nice_ticks(x_low, x_high, integer=True) if x_low <= t <= x_high]
    y_ticks = nice_ticks(min(y for _, y in points), max(y for _, y in points))

    def sx(x: float) -> float:
        return LEFT + (x - x_low) / (x_high - x_low) * (WIDTH - LEFT - RIGHT)

    def sy(y: float) -> float:
        span = y_ticks[-1] - y_ticks[0]
        return HEIGHT - BOTTOM - (y - y_ticks[0]) / span * (HEIGHT - TOP - BOTTOM)

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg">'
    ]
    parts += _axes(x_ticks, y_ticks, sx, sy, x_label)
    for index, (name, values) in enumerate(series.items()):
        parts += _series(name, values, series_color(index), sx, sy)
    parts.append("</svg>")
    return "\n".join(parts)


def series_color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _axes(x_ticks, y_ticks, sx, sy, x_label: str) -> list[str]:
    """Grid lines, tick labels and the x-axis label."""
    bottom, right = HEIGHT - BOTTOM, WIDTH - RIGHT
    parts = []
    for y, label in zip(y_ticks, tick_labels(y_ticks), strict=True):
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{right}" y1="{sy(y):.1f}" y2="{sy(y):.1f}"/>')  # fmt: skip
        parts.append(f'<text class="tick" x="{LEFT - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{label}</text>')  # fmt: skip
    for x, label in zip(x_ticks, tick_labels(x_ticks), strict=True):
        parts.append(f'<line class="grid" x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{TOP}" y2="{bottom}"/>')  # fmt: skip
        parts.append(f'<text class="tick" x="{sx(x):.1f}" y="{bottom + 15}" text-anchor="middle">{label}</text>')  # fmt: skip
    parts.append(f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{right - LEFT}" height="{bottom - TOP}"/>')  # fmt: skip
    parts.append(f'<text class="axis-label" x="{(LEFT + right) / 2}" y="{HEIGHT - 4}" text-anchor="middle">{escape(x_label)}</text>')  # fmt: skip
    return parts


def _series(name: str, values: Series, color: str, sx, sy) -> list[str]:
    coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
    key = escape(name)
    parts = [
        f'<polyline class="series" data-key="{key}" data-points="{len(values)}" '
        f'points="{coords}" stroke="{color}" fill="none" stroke-width="1.8"/>'
    ]
    if len(values) <= MAX_MARKERS:
        for x, y in values:
            parts.append(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.6" fill="{color}">'
                f"<title>{key} · step {x:g}: {y:.6g}</title></circle>"
            )
    return parts
