"""A job page shows the license terms of its model and dataset versions, and those its release was
signed with."""

from __future__ import annotations

from tests.site.pages import sign_in
from tests.site.seed import Seeded


def test_a_job_page_shows_the_terms_now_and_those_its_release_was_signed_with(site: Seeded):
    h, job_id = site.h, site.released["acme-1"]
    sign_in(h.client, h.partner)
    assert "none set" in h.client.get(f"/site/jobs/{job_id}").text  # released before any terms were set
    r = h.client.put(
        "/v1/models/demo-classifier/1/license",
        headers=h.operator,
        json={"terms": "evaluation only", "spdx": "LicenseRef-eval", "reason": "owner's terms"},
    )
    assert r.status_code == 200, r.text
    html = h.client.get(f"/site/jobs/{job_id}").text
    assert "evaluation only" in html and "<code>LicenseRef-eval</code>" in html
    assert "signed with the terms" not in html  # this release was made before they were set
