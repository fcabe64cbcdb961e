"""Auth through HTTP: 401 for missing/unknown/expired/revoked keys, 403 for wrong role, 404 across partners."""

import pytest

from service.db import session_scope
from service.ledger import service as ledger
from tests.factories import CLASSIFICATION


def test_whoami(api):
    r = api.client.get("/v1/whoami", headers=api.partner)
    assert r.status_code == 200 and r.json()["role"] == "partner" and r.json()["name"] == "acme"


@pytest.mark.parametrize(
    "headers, code",
    [
        ({}, "missing_key"),
        ({"Authorization": "Basic abc"}, "missing_key"),
        ({"Authorization": "Bearer eg_AAAAAAAAAAAAAAAA_" + "x" * 43}, "invalid_key"),
    ],
)
def test_401_shapes(api, headers, code):
    r = api.client.get("/v1/jobs", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"] == code and set(r.json()) == {"error", "detail", "alternatives"}


def test_expired_key_is_401(api):
    from datetime import timedelta

    from service.auth.models import ApiKey
    from service.db import utcnow

    headers = api.key("late", "partner", expires="1h")
    key_id = headers["Authorization"].split("_")[1]
    with session_scope(api.sessions) as s:
        key = s.query(ApiKey).filter_by(key_id=key_id).one()
        key.expires_at = utcnow() - timedelta(seconds=1)
    r = api.client.get("/v1/jobs", headers=headers)
    assert r.status_code == 401 and r.json()["error"] == "key_expired"


def test_wrong_role_is_403_and_audited(api):
    r = api.client.post(
        "/v1/models", headers=api.partner, data={"name": "x", "version": "1"}, files={"file": ("m.onnx", b"junk")}
    )
    assert r.status_code == 403 and r.json()["error"] == "wrong_role"
    assert api.client.post("/v1/jobs", headers=api.operator, json={}).status_code == 403
    with session_scope(api.sessions) as s:
        denials = ledger.events_for(s, "route:POST /v1/models")
    assert denials and denials[-1]["data"]["reason"] == "wrong_role" and denials[-1]["actor"] == "partner:acme"


def test_unknown_key_denial_is_audited(api):
    api.client.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
    with session_scope(api.sessions) as s:
        assert ledger.events_for(s, "route:GET /v1/jobs")[-1]["data"]["reason"] == "invalid_key"
        assert ledger.verify(s).ok


def test_other_partners_job_is_404_not_403(api):
    job = api.client.post(
        "/v1/jobs",
        headers=api.partner,
        json={
            "suite": CLASSIFICATION,
            "model": "demo-classifier@1",
            "dataset": "demo-blobs@1",
            "metrics": ["accuracy"],
        },
    ).json()
    for method, path in (("get", f"/v1/jobs/{job['id']}"), ("post", f"/v1/jobs/{job['id']}/cancel")):
        r = getattr(api.client, method)(path, headers=api.other)
        assert r.status_code == 404 and r.json()["error"] == "job_not_found"
    assert api.client.get(f"/v1/jobs/{job['id']}", headers=api.researcher).status_code == 200
    assert api.client.get("/v1/jobs", headers=api.other).json()["jobs"] == []
