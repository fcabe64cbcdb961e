"""Structured logs: one job followed from the API's lines to the worker's by its job_id (both JSON,
parsed), the request and the partner on each line they belong to, and no secret on any line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from service.jobs import tasks
from service.jobs.context import LazyContext
from service.observability import logs
from tests.stubs import StubSandbox, context, released_outcome


@contextmanager
def captured(fmt: logs.Format = "json") -> Iterator[io.StringIO]:
    """Every line logged meanwhile, as the service's formatter writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter(fmt, "test"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def parsed(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_job_is_followed_from_the_api_to_the_worker_by_its_job_id(api, monkeypatch, demo_files):
    with captured() as stream:
        r = api.post_job(metrics=["accuracy"])
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        ctx = context(api, StubSandbox(released_outcome(demo_files["data"])))
        monkeypatch.setattr(tasks, "_context", LazyContext(lambda: ctx))
        assert tasks.run(job_id) == "released"  # the Celery task a worker runs
        api.client.get(f"/v1/jobs/{job_id}", headers=api.partner)
    lines = parsed(stream)
    api_lines = [x for x in lines if x["logger"] == "evalgate.http" and x["msg"].startswith("POST /v1/jobs")]
    worker_lines = [x for x in lines if x["logger"] == "evalgate.worker"]
    assert len(api_lines) == 1 and len(worker_lines) == 2, lines
    (api_line,) = api_lines
    assert api_line["job_id"] == job_id and api_line["partner"] == "acme" and api_line["status"] == 202
    assert len(api_line["request_id"]) >= 8
    for line in worker_lines:
        assert line["job_id"] == job_id and line["partner"] == "acme" and "request_id" not in line
    assert worker_lines[-1]["state"] == "released"
    handed = [x for x in lines if x["msg"] == f"job {job_id} handed to a worker"]
    assert len(handed) == 1 and handed[0]["request_id"] == api_line["request_id"]
    (read,) = [x for x in lines if x["msg"] == "GET /v1/jobs/{job_id} 200"]
    assert read["job_id"] == job_id and read["request_id"] != api_line["request_id"]
    key = api.partner["Authorization"].split()[1]
    assert key not in stream.getvalue()


def test_an_operator_line_names_the_caller_but_no_partner(api):
    with captured() as stream:
        assert api.client.get("/v1/budget", headers=api.operator, params={"partner": "acme"}).status_code == 200
    (line,) = [x for x in parsed(stream) if x["logger"] == "evalgate.http"]
    assert line["principal"] == "ops" and line["role"] == "operator" and "partner" not in line


def test_no_secret_reaches_a_line(api):
    key = api.operator["Authorization"].split()[1]
    pem = api.settings.signing_key_path.read_text()
    url = "postgresql+psycopg://evalgate:hunter2@postgres:5432/evalgate redis://:hunter2@redis:6379/0"
    log = logging.getLogger("evalgate.test")
    for fmt in ("json", "text"):
        with captured(fmt) as stream:
            log.info("key %s, header Bearer %s, url %s", key, key, url, extra={"detail": {"key": key}})
            log.warning("the signing key:\n%s", pem)
            try:
                raise ValueError(f"bad key {key}")
            except ValueError:
                log.exception("failed")
        text = stream.getvalue()
        key_id, secret = key[3:19], key[20:]  # eg_<16-character id>_<secret>
        assert key not in text and secret not in text
        assert "PRIVATE KEY" not in text and pem.splitlines()[1] not in text
        assert "hunter2" not in text
        assert f"eg_{key_id}_[redacted]" in text  # the key's id stays: operators can revoke it


def test_text_lines_for_people_carry_the_same_fields():
    with captured("text") as stream, logs.scope(request_id="r" * 12, job_id="j-1"):
        logs.bind(partner="acme")
        logging.getLogger("evalgate.test").info("hello")
    line = stream.getvalue().strip()
    assert line.endswith("evalgate.test: hello [request_id=rrrrrrrrrrrr job_id=j-1 partner=acme]"), line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_fields_end_with_their_unit_of_work():
    with logs.scope(job_id="a"):
        logs.bind(partner="acme")
        with logs.scope(request_id="inner"):
            assert logs.current() == {"job_id": "a", "partner": "acme", "request_id": "inner"}
        assert logs.current() == {"job_id": "a", "partner": "acme"}
    assert logs.current() == {}
    logs.bind(job_id="stray")  # outside any unit: nothing sticks to later lines
    assert logs.current() == {}
