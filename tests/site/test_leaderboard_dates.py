"""The leaderboard's date filters at the ends of the calendar: `until` the last day there is and
`since` the first are read as days like any other (every release is on or before 9999-12-31, and on
or after 0001-01-01), never a 500, for every role, on the page and in its exports, on SQLite as on
Postgres (a partner's board is filtered here, a researcher's by the database)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.config import Settings
from tests.site.pages import BOARD, job_links, sign_in
from tests.site.seed import Seeded, seeded, site_settings


@pytest.fixture
def site(db_settings: Settings, tmp_path: Path, demo_files: dict[str, Path]) -> Iterator[Seeded]:
    yield from seeded(site_settings(tmp_path / "data", database_url=db_settings.database_url), demo_files)


def rows(html: str) -> set[str]:
    return set(job_links(html.split("<tbody>", 1)[1].split("</tbody>", 1)[0])) if "<tbody>" in html else set()


def test_the_ends_of_the_calendar_are_days_like_any_other(site: Seeded):
    c = site.h.client
    mine = {site.released["acme-1"], site.released["acme-2"]}
    for headers, everything in ((site.h.researcher, set(site.released.values())), (site.h.partner, mine)):
        sign_in(c, headers)
        for dates, expected in (
            ({"until": "9999-12-31"}, everything),
            ({"since": "0001-01-01"}, everything),
            ({"since": "0001-01-01", "until": "9999-12-31"}, everything),
            ({"until": "0001-01-01"}, set()),
            ({"since": "9999-12-31"}, set()),
        ):
            r = c.get("/site/leaderboard", params={**BOARD, **dates})
            assert r.status_code == 200, (dates, r.text[-500:])
            assert rows(r.text) == expected, dates
            doc = c.get("/site/leaderboard.json", params={**BOARD, **dates})
            assert doc.status_code == 200 and {row["job_id"] for row in doc.json()["rows"]} == expected, dates
            assert c.get("/site/leaderboard.csv", params={**BOARD, **dates}).status_code == 200, dates
