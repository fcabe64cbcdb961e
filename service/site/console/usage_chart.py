"""Usage per partner per UTC day over the last days, drawn by the server as SVG geometry for a template
(one line per partner), with the same numbers as a table for whoever would rather read them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from service.quotas.usage import DayUsage
from service.site.chart import nice_ticks

WIDTH, HEIGHT = 760, 320
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 16, 48
COLOURS = 8  # series classes s0..s7 in site.css; more partners than that reuse them, with their own legend


@dataclass(frozen=True)
class Measure:
    key: str
    title: str  # "Model rows per day"
    unit: str

    def of(self, u: DayUsage) -> float:
        return float(getattr(u, self.key))


MEASURES = {
    m.key: m
    for m in (
        Measure("rows", "Model rows charged per day", "model rows"),
        Measure("bits", "Leakage bits charged per day", "bits"),
        Measure("jobs", "Jobs admitted per day", "jobs"),
        Measure("epsilon", "ε charged per day (every dataset version)", "ε"),
    )
}
DEFAULT = "rows"


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    title: str


@dataclass(frozen=True)
class Series:
    partner: str
    colour: int
    points: list[Point]
    total: float

    @property
    def polyline(self) -> str:
        return " ".join(f"{p.x},{p.y}" for p in self.points)


@dataclass(frozen=True)
class Label:
    at: float
    text: str


@dataclass(frozen=True)
class UsageChart:
    measure: Measure
    width: int
    height: int
    left: int
    right_x: int
    top: int
    bottom_y: int
    days: list[str]  # YYYY-MM-DD, oldest first
    series: list[Series]  # busiest partner first
    x_labels: list[Label]
    y_labels: list[Label]
    table: list[list[float]]  # per day, per series (in the series' order)


def draw(usage: list[DayUsage], measure: Measure, today: date, days: int = 30) -> UsageChart | None:
    """The chart of `measure` over the `days` days ending today; None if nobody used anything."""
    dates = [today - timedelta(days=days - 1 - i) for i in range(days)]
    keys = [d.strftime("%Y%m%d") for d in dates]
    values: dict[str, list[float]] = {}
    for u in usage:
        if u.day in keys:
            values.setdefault(u.partner, [0.0] * days)[keys.index(u.day)] += measure.of(u)
    if not values:
        return None
    partners = sorted(values, key=lambda p: (-sum(values[p]), p))
    ticks = nice_ticks(0.0, max(max(v) for v in values.values()) or 1.0)
    top_value = ticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(1, days - 1)

    def x(i: int) -> float:
        return round(LEFT + step * i, 2)

    def y(v: float) -> float:
        return round(TOP + plot_h * (1 - v / top_value), 2)

    shown = [d.isoformat() for d in dates]
    series = [
        Series(
            partner=p,
            colour=n % COLOURS,
            points=[Point(x(i), y(v), f"{p}, {shown[i]}: {v:,.4g} {measure.unit}") for i, v in enumerate(values[p])],
            total=sum(values[p]),
        )
        for n, p in enumerate(partners)
    ]
    return UsageChart(
        measure=measure,
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        right_x=WIDTH - RIGHT,
        top=TOP,
        bottom_y=HEIGHT - BOTTOM,
        days=shown,
        series=series,
        x_labels=[Label(x(i), dates[i].strftime("%d %b")) for i in range(0, days - 3, 7)]
        + [Label(x(days - 1), "today")],
        y_labels=[Label(y(t), f"{t:,.4g}") for t in ticks],
        table=[[values[p][i] for p in partners] for i in range(days)],
    )
