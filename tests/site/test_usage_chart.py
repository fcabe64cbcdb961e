"""The console's usage chart: one line per partner across the last days, busiest first, with the same
numbers in its table; days outside the window are left out."""

from __future__ import annotations

from datetime import date

from service.quotas.usage import DayUsage
from service.site.console import usage_chart
from service.site.console.usage_chart import MEASURES


def test_one_line_per_partner_over_the_window_busiest_first():
    today = date(2026, 11, 28)
    usage = [
        DayUsage("acme", "20261128", jobs=2, rows=300),
        DayUsage("acme", "20261101", jobs=1, rows=100),
        DayUsage("globex", "20261127", jobs=1, rows=900),
        DayUsage("globex", "20261020", jobs=9, rows=99999),  # before the 30 days
    ]
    chart = usage_chart.draw(usage, MEASURES["rows"], today, days=30)
    assert chart is not None
    assert [s.partner for s in chart.series] == ["globex", "acme"] and [s.total for s in chart.series] == [900, 400]
    assert chart.days[0] == "2026-10-30" and chart.days[-1] == "2026-11-28" and len(chart.table) == 30
    assert chart.table[-1] == [0.0, 300.0] and chart.table[-2] == [900.0, 0.0] and chart.table[2] == [0.0, 100.0]
    globex, acme = chart.series
    assert (
        acme.points[0].x == chart.left and acme.points[-1].x == chart.right_x
    )  # oldest at the left, today at the right
    assert globex.points[-2].y < acme.points[-1].y < acme.points[0].y == chart.bottom_y  # higher is more
    assert chart.y_labels[0].text == "0" and float(chart.y_labels[-1].text.replace(",", "")) >= 900
    assert globex.points[-2].title == "globex, 2026-11-27: 900 model rows"
    assert usage_chart.draw(usage, MEASURES["jobs"], today, days=30).series[0].total == 3  # type: ignore[union-attr]


def test_nothing_used_draws_nothing():
    assert usage_chart.draw([], MEASURES["bits"], date(2026, 11, 28)) is None
    old = [DayUsage("acme", "20200101", rows=5)]
    assert usage_chart.draw(old, MEASURES["rows"], date(2026, 11, 28)) is None
