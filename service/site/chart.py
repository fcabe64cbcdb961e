"""The leaderboard's chart, drawn by the server as SVG geometry for a template: one metric across
model versions (the latest release of each in the filtered set), the noise scale as error bars."""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.site.leaderboard import Point

WIDTH, HEIGHT = 720, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 56


@dataclass(frozen=True)
class Mark:
    x: float
    y: float
    low: float  # y of value - error (the bar's bottom)
    high: float  # y of value + error
    label: str
    title: str
    job_id: str


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    bottom_y: float
    right_x: float
    top: int
    marks: list[Mark]
    ticks: list[Tick]
    approximate: bool  # a bar is scale ÷ dataset rows (noise on counts)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(math.ceil((hi - start) / step) + 1)]


def draw(points: list[Point]) -> Chart | None:
    if not points:
        return None
    lows = [p.value - (p.error or 0.0) for p in points]
    highs = [p.value + (p.error or 0.0) for p in points]
    ticks = nice_ticks(min(lows), max(highs))
    lo, hi = ticks[0], ticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def y(v: float) -> float:
        return round(TOP + plot_h * (1 - (v - lo) / (hi - lo)), 2)

    step = plot_w / len(points)
    marks = []
    for i, p in enumerate(points):
        error = p.error or 0.0
        noise = (
            "no noise" if p.error is None else f"± {p.error:.4g}" + (" (≈, noise on counts)" if p.approximate else "")
        )
        marks.append(
            Mark(
                x=round(LEFT + step * (i + 0.5), 2),
                y=y(p.value),
                low=y(p.value - error),
                high=y(p.value + error),
                label=p.model,
                title=f"{p.model}: {p.value:.4g} {noise}",
                job_id=p.job_id,
            )
        )
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        bottom_y=HEIGHT - BOTTOM,
        right_x=WIDTH - RIGHT,
        top=TOP,
        marks=marks,
        ticks=[Tick(y(t), f"{t:.4g}") for t in ticks],
        approximate=any(p.approximate for p in points),
    )
