"""A small server-side SVG chart builder for the console's insights.

Charts are drawn here, as markup, so the page needs no chart library and no inline script or
style (the Content-Security-Policy allows neither): colours come from CSS classes in
``console.css`` (``fill-<key>``, ``stroke-<key>``), which also follow the dark theme. Each chart
is an ``<svg role="img">`` named by its ``<title>`` and summarised in words by its ``<desc>``
for screen readers; every bar and point carries its own ``<title>`` (a tooltip) and ``data-``
attributes naming its series and value.

All text given to a chart (agent and action names come from agents) is escaped here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH = 640
HEIGHT = 250
LEFT, RIGHT, TOP, BOTTOM = 60, 12, 36, 28
MAX_X_LABELS = 8


def duration(seconds: float) -> str:
    """A short, human duration: 45 s, 12 min, 3.5 h, 2.1 d."""
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            value = seconds / size
            return f"{_num(value) if value < 10 else f'{value:.0f}'} {unit}"
    return f"{seconds:.0f} s"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _attrs(attributes: dict[str, object]) -> str:
    return "".join(
        f' {name.rstrip("_").replace("_", "-")}="{escape(value)}"'
        for name, value in attributes.items()
        if value is not None
    )


def _el(tag: str, body: str = "", **attributes: object) -> str:
    """An element; ``body`` is markup (already escaped), attributes are escaped here."""
    return f"<{tag}{_attrs(attributes)}>{body}</{tag}>"


def _title(text: str) -> str:
    return _el("title", escape(text))


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


# Round steps for a time axis, in seconds: 1 s … 30 s, 1 min … 30 min, 1 h … 12 h, 1 d, 2 d, 1 week.
DURATION_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
                  21600, 43200, 86400, 172800, 604800)  # fmt: skip


def nice_ticks(maximum: float, count: int = 4, *, durations: bool = False) -> list[float]:
    """Evenly spaced round ticks from 0 covering ``maximum``: whole numbers (0, 5, 10, 15) or,
    for ``durations`` in seconds, round times (0, 2 min, 4 min)."""
    if maximum <= 0:
        return [0.0, 1.0]
    raw = maximum / count
    if durations:
        step = float(next((s for s in DURATION_STEPS if s >= raw), 0))
        step = step or DURATION_STEPS[-1] * math.ceil(raw / DURATION_STEPS[-1])
    else:
        magnitude = 10 ** max(0, math.floor(math.log10(raw)))
        step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    steps = math.ceil(maximum / step - 1e-9)
    return [step * i for i in range(steps + 1)]


@dataclass(frozen=True)
class Series:
    key: str
    label: str
    values: Sequence[float | None]


@dataclass(frozen=True)
class Bar:
    """One row of a horizontal bar chart: its label, its parts (key, label, value) drawn end to
    end, and the text written after it."""

    key: str
    label: str
    parts: Sequence[tuple[str, str, float]]
    text: str
    detail: str = ""


@dataclass
class _Svg:
    chart_id: str
    title: str
    description: str
    height: int
    kind: str
    parts: list[str] = field(default_factory=list)
    data: dict[str, object] = field(default_factory=dict)

    def render(self) -> SafeString:
        head = _el("title", escape(self.title), id=f"{self.chart_id}-title") + _el(
            "desc", escape(self.description), id=f"{self.chart_id}-desc"
        )
        svg = _el(
            "svg",
            head + "".join(self.parts),
            id=self.chart_id,
            class_=f"chart chart-{self.kind}",
            viewBox=f"0 0 {WIDTH} {self.height}",
            role="img",
            aria_labelledby=f"{self.chart_id}-title {self.chart_id}-desc",
            **{f"data_{name}": value for name, value in self.data.items()},
        )
        return mark_safe(svg)  # noqa: S308 (every text and attribute was escaped by _el)


def _legend(series: Sequence[tuple[str, str]], kind: str = "fill") -> str:
    items, x = [], float(LEFT)
    for key, label in series:
        swatch = _el("rect", x=_num(x), y=8, width=12, height=12, rx=2, class_=f"{kind}-{key}")
        items.append(
            _el(
                "g",
                swatch + _el("text", escape(label), x=_num(x + 17), y=18),
                class_="legend-item",
                data_series=key,
            )
        )
        x += 17 + 8.5 * len(label) + 22
    return _el("g", "".join(items), class_="legend")


def _y_axis(
    ticks: list[float], scale: Callable[[float], float], fmt: Callable[[float], str]
) -> str:
    lines = []
    for tick in ticks:
        y = _num(scale(tick))
        lines.append(
            _el("line", x1=LEFT, x2=WIDTH - RIGHT, y1=y, y2=y, class_="grid")
            + _el("text", escape(fmt(tick)), x=LEFT - 6, y=y, dy="0.32em", class_="tick y")
        )
    return _el("g", "".join(lines), class_="axis y")


def _x_axis(days: Sequence[date], centre: Callable[[int], float]) -> str:
    every = max(1, math.ceil(len(days) / MAX_X_LABELS))
    labels = [
        _el(
            "text",
            escape(f"{day:%b} {day.day}"),
            x=_num(centre(i)),
            y=HEIGHT - 8,
            class_="tick x",
        )
        for i, day in enumerate(days)
        if (len(days) - 1 - i) % every == 0  # always label the last day (today)
    ]
    baseline = _el(
        "line", x1=LEFT, x2=WIDTH - RIGHT, y1=HEIGHT - BOTTOM, y2=HEIGHT - BOTTOM, class_="axis"
    )
    return _el("g", baseline + "".join(labels), class_="axis x")


def stacked_columns(
    *, chart_id: str, title: str, description: str, days: Sequence[date], series: list[Series]
) -> SafeString:
    """One column per day, its series stacked; zero values draw nothing."""
    totals = [sum(s.values[i] or 0 for s in series) for i in range(len(days))]
    ticks = nice_ticks(max(totals, default=0))
    plot_height = HEIGHT - TOP - BOTTOM
    band = (WIDTH - LEFT - RIGHT) / max(1, len(days))

    def scale(value: float) -> float:
        return HEIGHT - BOTTOM - value / ticks[-1] * plot_height

    svg = _Svg(chart_id, title, description, HEIGHT, "columns")
    svg.parts += [_legend([(s.key, s.label) for s in series]), _y_axis(ticks, scale, _count)]
    bars = []
    for i, day in enumerate(days):
        base = 0.0
        for s in series:
            value = s.values[i] or 0
            if not value:
                continue
            top, bottom = scale(base + value), scale(base)
            bars.append(
                _el(
                    "rect",
                    _title(f"{day:%a %b} {day.day}: {_count(value)} {s.label.lower()}"),
                    x=_num(LEFT + i * band + band * 0.15),
                    y=_num(top),
                    width=_num(max(1.0, band * 0.7)),
                    height=_num(bottom - top),
                    class_=f"bar fill-{s.key}",
                    data_series=s.key,
                    data_day=day.isoformat(),
                    data_value=_num(value),
                )
            )
            base += value
    svg.parts += [
        _el("g", "".join(bars), class_="bars"),
        _x_axis(days, lambda i: LEFT + (i + 0.5) * band),
    ]
    return svg.render()


def lines(
    *, chart_id: str, title: str, description: str, days: Sequence[date], series: list[Series]
) -> SafeString:
    """One line per series over the days, in seconds; a day with no value breaks the line."""
    values = [v for s in series for v in s.values if v is not None]
    ticks = nice_ticks(max(values, default=0), durations=True)
    plot_height = HEIGHT - TOP - BOTTOM
    step = (WIDTH - LEFT - RIGHT) / max(1, len(days))

    def scale(value: float) -> float:
        return HEIGHT - BOTTOM - value / ticks[-1] * plot_height

    def x(i: int) -> float:
        return LEFT + (i + 0.5) * step

    svg = _Svg(chart_id, title, description, HEIGHT, "lines")
    svg.parts += [
        _legend([(s.key, s.label) for s in series], kind="fill"),
        _y_axis(ticks, scale, duration),
    ]
    for s in series:
        path, points, pen_down = [], [], False
        for i, value in enumerate(s.values):
            if value is None:
                pen_down = False
                continue
            path.append(f"{'L' if pen_down else 'M'}{_num(x(i))},{_num(scale(value))}")
            pen_down = True
            points.append(
                _el(
                    "circle",
                    _title(f"{days[i]:%a %b} {days[i].day}: {s.label} {duration(value)}"),
                    cx=_num(x(i)),
                    cy=_num(scale(value)),
                    r=3,
                    class_=f"point fill-{s.key}",
                    data_series=s.key,
                    data_day=days[i].isoformat(),
                    data_value=_num(value),
                )
            )
        line = _el("path", d=" ".join(path), class_=f"line stroke-{s.key}", data_series=s.key)
        svg.parts.append(_el("g", (line if path else "") + "".join(points), class_="series"))
    svg.parts.append(_x_axis(days, x))
    return svg.render()


ROW = 30
LABEL_WIDTH = 190
TEXT_WIDTH = 130
LABEL_CHARS = 22


def hbars(
    *,
    chart_id: str,
    title: str,
    description: str,
    bars: list[Bar],
    maximum: float,
    legend: Sequence[tuple[str, str]] = (),
) -> SafeString:
    """Horizontal bars, one row per ``Bar``, its parts end to end on a 0..``maximum`` scale."""
    top = TOP if legend else 8
    height = top + ROW * max(1, len(bars)) + 8
    plot_width = WIDTH - LABEL_WIDTH - TEXT_WIDTH
    scale = plot_width / maximum if maximum > 0 else 0.0
    svg = _Svg(chart_id, title, description, height, "bars")
    svg.data = {"plot_width": _num(plot_width), "maximum": _num(maximum)}
    if legend:
        svg.parts.append(_legend(legend))
    rows = []
    for n, bar in enumerate(bars):
        y = top + n * ROW
        label = bar.label if len(bar.label) <= LABEL_CHARS else bar.label[: LABEL_CHARS - 1] + "…"
        # The row's title is the full label (a tooltip where the label is cut short).
        cells = [
            _title(bar.label),
            _el(
                "text",
                escape(label),
                x=LABEL_WIDTH - 8,
                y=y + ROW / 2,
                dy="0.32em",
                class_="label",
            ),
        ]
        x = float(LABEL_WIDTH)
        for key, part_label, value in bar.parts:
            width = value * scale
            cells.append(
                _el(
                    "rect",
                    _title(f"{bar.label}: {part_label}{bar.detail}"),
                    x=_num(x),
                    y=y + 5,
                    width=_num(width),
                    height=ROW - 10,
                    class_=f"bar fill-{key}",
                    data_series=key,
                    data_value=_num(value),
                )
            )
            x += width
        cells.append(
            _el(
                "text",
                escape(bar.text),
                x=_num(x + 6),
                y=y + ROW / 2,
                dy="0.32em",
                class_="value",
                data_value_for=bar.key,
            )
        )
        rows.append(_el("g", "".join(cells), class_="row", data_key=bar.key))
    svg.parts.append(_el("g", "".join(rows), class_="rows"))
    return svg.render()
