"""Small inline-SVG charts for the static report: line charts, grouped bars, histograms.

No dependencies and no JavaScript: each function returns one ``<svg>`` element as text, sized by its
``viewBox`` so it scales with the page, with a title, axes with "nice" ticks, axis labels and a legend.
Every piece of text (titles, labels, series names) is XML-escaped.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from html import escape

WIDTH, HEIGHT = 640, 320
MARGIN = {"left": 62, "right": 16, "top": 40, "bottom": 72}
# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#999999", "#f0e442")
Point = tuple[float, float]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) covering ``[low, high]``."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"ticks need finite bounds, got {low}, {high}")
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high - step * 1e-9:
        ticks.append(round(value, 10))
    return ticks


def _tick_label(value: float) -> str:
    if value == int(value) and abs(value) < 1e6:
        return f"{int(value):,}"
    return f"{value:.3g}"


class _Frame:
    """The plotting area of one chart and its linear scales."""

    def __init__(self, x_range: tuple[float, float], y_ticks: list[float]):
        self.left, self.top = MARGIN["left"], MARGIN["top"]
        self.right, self.bottom = WIDTH - MARGIN["right"], HEIGHT - MARGIN["bottom"]
        self.x0, self.x1 = x_range if x_range[1] > x_range[0] else (x_range[0] - 0.5, x_range[0] + 0.5)
        self.y_ticks = y_ticks
        self.y0, self.y1 = y_ticks[0], y_ticks[-1]

    def x(self, value: float) -> float:
        return self.left + (value - self.x0) / (self.x1 - self.x0) * (self.right - self.left)

    def y(self, value: float) -> float:
        return self.bottom - (value - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)


def _svg(title: str, body: list[str], legend: Legend) -> str:
    """The chart element: title on top, the legend in rows below the plot (the height grows with it)."""
    rows, x, row = [], float(MARGIN["left"]), 0
    for name in legend:
        width = 26 + 6.5 * len(name)
        if x + width > WIDTH - MARGIN["right"] and x > MARGIN["left"]:
            x, row = float(MARGIN["left"]), row + 1
        rows.append((x, HEIGHT + 12 + 18 * row, name))
        x += width
    height = HEIGHT + 18 * (row + 1) + 12 if legend else HEIGHT
    return (f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" xmlns="http://www.w3.org/2000/svg" role="img" '
            f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
            f'<text class="chart-title" x="{WIDTH / 2}" y="20" text-anchor="middle">{escape(title)}</text>'
            + "".join(body) + "".join(_legend_entry(x, y, name, legend) for x, y, name in rows) + "</svg>")


def _y_axis(frame: _Frame, label: str, percent: bool = False) -> list[str]:
    parts = []
    for tick in frame.y_ticks:
        y = frame.y(tick)
        text = f"{tick:.0%}" if percent else _tick_label(tick)
        parts.append(f'<line class="grid" x1="{frame.left}" x2="{frame.right}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="tick" x="{frame.left - 6}" y="{y + 4:.1f}" text-anchor="end">{text}</text>')
    middle = (frame.top + frame.bottom) / 2
    parts.append(f'<line class="axis" x1="{frame.left}" x2="{frame.left}" y1="{frame.top}" y2="{frame.bottom}"/>'
                 f'<line class="axis" x1="{frame.left}" x2="{frame.right}" y1="{frame.bottom}" y2="{frame.bottom}"/>'
                 f'<text class="axis-label" transform="translate(14 {middle:.1f}) rotate(-90)" '
                 f'text-anchor="middle">{escape(label)}</text>')
    return parts


def _x_label(frame: _Frame, label: str) -> str:
    return (f'<text class="axis-label" x="{(frame.left + frame.right) / 2:.1f}" y="{HEIGHT - 8}" '
            f'text-anchor="middle">{escape(label)}</text>')


class Legend(list):
    """Series names in drawing order; ``dashed`` names are reference lines (a dashed swatch)."""

    def __init__(self, names: Sequence[str], dashed: Sequence[str] = ()):
        super().__init__(names)
        self.dashed = set(dashed)


def _legend_entry(x: float, y: float, name: str, legend: Legend) -> str:
    if name in legend.dashed:
        swatch = (f'<line x1="{x:.1f}" x2="{x + 16:.1f}" y1="{y - 4}" y2="{y - 4}" stroke="#444" stroke-width="2" '
                  'stroke-dasharray="4 3"/>')
    else:
        swatch = f'<rect x="{x:.1f}" y="{y - 9}" width="14" height="10" fill="{PALETTE[legend.index(name) % len(PALETTE)]}"/>'
    return f'<g class="legend-entry">{swatch}<text class="legend" x="{x + 20:.1f}" y="{y}">{escape(name)}</text></g>'


def _reference_lines(frame: _Frame, references: Mapping[str, float], percent: bool = False) -> list[str]:
    """Dashed horizontal lines, each labelled with its name and value at its right end."""
    parts = []
    for name, value in references.items():
        y = frame.y(value)
        label = f"{escape(name)}: {value:.1%}" if percent else f"{escape(name)}: {value:.4g}"
        parts.append(f'<line class="reference" x1="{frame.left}" x2="{frame.right}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="reference-label" x="{frame.right - 4}" y="{y - 4:.1f}" text-anchor="end">{label}</text>')
    return parts


def line_chart(series: Mapping[str, Sequence[Point]], *, title: str, x_label: str, y_label: str,
               references: Mapping[str, float] | None = None) -> str:
    """Lines through each series' (x, y) points (sorted by x), a marker on every point; ``references``
    are horizontal dashed lines (e.g. a baseline) named in the legend. The y axis spans the data (not
    from zero: a loss curve's shape is in its range)."""
    references = dict(references or {})
    drawn = {name: sorted(points) for name, points in series.items() if points}
    xs = [x for points in drawn.values() for x, _ in points]
    ys = [y for points in drawn.values() for _, y in points] + list(references.values())
    if not ys:
        raise ValueError(f"{title}: nothing to plot")
    frame = _Frame((min(xs), max(xs)) if xs else (0.0, 1.0), nice_ticks(min(ys), max(ys)))
    body = _y_axis(frame, y_label)
    for tick in nice_ticks(frame.x0, frame.x1, 6):
        if frame.x0 <= tick <= frame.x1:
            body.append(f'<text class="tick" x="{frame.x(tick):.1f}" y="{frame.bottom + 16}" '
                        f'text-anchor="middle">{_tick_label(tick)}</text>')
    body.append(_x_label(frame, x_label))
    body += _reference_lines(frame, references)
    for name, points in drawn.items():
        colour = PALETTE[list(series).index(name) % len(PALETTE)]
        path = " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in points)
        body.append(f'<g class="series"><title>{escape(name)}</title>'
                    f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>'
                    + "".join(f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="2.5" fill="{colour}"/>'
                              for x, y in points) + "</g>")
    return _svg(title, body, Legend([*series, *references], dashed=list(references)))


def bar_chart(categories: Sequence[str], series: Mapping[str, Sequence[float | None]], *, title: str, y_label: str,
              x_label: str = "", intervals: Mapping[str, Sequence[tuple[float, float] | None]] | None = None,
              references: Mapping[str, float] | None = None, percent: bool = False, y_max: float | None = None) -> str:
    """Grouped bars: one group per category, one bar per series (None: no bar). ``intervals`` draws an
    error bar (low, high) on a series' bars; ``references`` are horizontal dashed lines; ``percent``
    labels the y axis as percentages of 1; the y axis reaches at least ``y_max`` (e.g. 1 for rates)."""
    references = dict(references or {})
    intervals = intervals or {}
    values = [v for row in series.values() for v in row if v is not None]
    values += [high for row in intervals.values() for pair in row if pair is not None for high in pair]
    values += list(references.values()) + ([y_max] if y_max is not None else [])
    if not values or not categories:
        raise ValueError(f"{title}: nothing to plot")
    frame = _Frame((0.0, float(len(categories))), nice_ticks(min(0.0, min(values)), max(values)))
    body = _y_axis(frame, y_label, percent)
    group = (frame.right - frame.left) / len(categories)
    bar = group * 0.8 / max(1, len(series))
    label_every = max(1, math.ceil(len(categories) / 16))
    for position, category in enumerate(categories):
        if position % label_every == 0:
            lines = _wrap(category, max(4, int(group * label_every / 6.5)))
            body.append(f'<text class="tick" x="{frame.x(position + 0.5):.1f}" y="{frame.bottom + 16}" '
                        'text-anchor="middle">' + "".join(
                            f'<tspan x="{frame.x(position + 0.5):.1f}" dy="{0 if i == 0 else 13}">{escape(line)}</tspan>'
                            for i, line in enumerate(lines)) + "</text>")
    body.append(_x_label(frame, x_label))
    zero = frame.y(0.0)
    for index, (name, row) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        parts = []
        for position, value in enumerate(row):
            if value is None:
                continue
            x = frame.x(position) + group * 0.1 + index * bar
            top = frame.y(value)
            shown = f"{value:.1%}" if percent else f"{value:.4g}"
            parts.append(f'<rect x="{x:.1f}" y="{min(top, zero):.1f}" width="{bar:.1f}" height="{abs(zero - top):.1f}" '
                         f'fill="{colour}"><title>{escape(name)}, {escape(categories[position])}: {shown}</title></rect>')
            pair = intervals.get(name, [None] * len(row))[position]
            if pair is not None:
                middle, low, high = x + bar / 2, frame.y(pair[0]), frame.y(pair[1])
                parts.append(f'<path class="interval" d="M{middle:.1f},{low:.1f}V{high:.1f}M{middle - 4:.1f},{low:.1f}'
                             f'h8M{middle - 4:.1f},{high:.1f}h8"/>')
        body.append(f'<g class="series">{"".join(parts)}</g>')
    body += _reference_lines(frame, references, percent)
    return _svg(title, body, Legend([*series, *references], dashed=list(references)))


def _wrap(text: str, width: int, max_lines: int = 3) -> list[str]:
    """``text`` broken at spaces into lines of about ``width`` characters; the third line ends in "…" if cut."""
    lines: list[str] = []
    for word in text.split() or [""]:
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    if len(lines) > max_lines:
        lines = [*lines[:max_lines - 1], " ".join(lines[max_lines - 1:])]
    return [line if len(line) <= width else line[:width - 1] + "…" for line in lines]


def histogram(samples: Mapping[str, Sequence[float]], edges: Sequence[float], *, title: str, x_label: str,
              open_ended: bool = True) -> str:
    """The distributions of ``samples`` side by side as the share of each sample per bin (grouped bars,
    so samples of different sizes compare). Bins are ``[edges[i], edges[i+1])``; with ``open_ended`` the
    last edge starts a final bin "edge+" that takes everything above (else values beyond it are left out
    and the bars of that sample sum to less than 1)."""
    bins = list(itertools.pairwise(edges))
    labels = [_bin_label(low, high) for low, high in bins]
    if open_ended:
        bins.append((edges[-1], math.inf))
        labels.append(f"{_tick_label(edges[-1])}+")
    shares = {}
    for name, values in samples.items():
        counts = [sum(1 for v in values if low <= v < high) for low, high in bins]
        shares[f"{name} (n={len(values):,})"] = [c / len(values) if values else None for c in counts]
    return bar_chart(labels, shares, title=title, y_label="share", x_label=x_label, percent=True)


def _bin_label(low: float, high: float) -> str:
    if high - low == 1 and low == int(low):
        return _tick_label(low)
    return f"{_tick_label(low)}-{_tick_label(high)}"
