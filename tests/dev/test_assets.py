"""Where `evalgate dev run` takes its twin and stand-in from, and how it refuses before running."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from service.cli import main
from service.client import Api
from service.dev import assets as dev_assets
from service.dev.run import DevError, DevExit
from tests import factories
from tests.harness import Harness, harness


@pytest.fixture
def server(tmp_path: Path, demo_files: dict[str, Path]) -> Iterator[Harness]:
    yield from harness(factories.settings(tmp_path / "server"), demo_files)


def api_as(h: Harness, headers: dict[str, str]) -> Api:
    api = Api("http://testserver", "unused")
    h.client.headers.update(headers)
    api.http = h.client
    return api


def test_from_server_downloads_checked_twins_and_the_real_jobs_facts(server, tmp_path):
    got = dev_assets.from_server(api_as(server, server.partner), "demo-classifier@1", "demo-blobs@1", tmp_path)
    provenance = server.client.get("/v1/datasets/demo-blobs/1/twin/provenance").json()
    assert hashlib.sha256(got.dataset.read_bytes()).hexdigest() == provenance["sha256"]
    assert got.dataset_rows == 600 and got.output_policy == {"kind": "full"}
    assert got.contract is not None and got.contract["classes"] == 3
    with pytest.raises(DevError, match=r"unknown dataset demo-blobs@7; versions of demo-blobs: 1"):
        dev_assets.from_server(api_as(server, server.partner), "demo-classifier@1", "demo-blobs@7", tmp_path)


def test_a_partner_the_policy_leaves_out_is_told_so(server, tmp_path):
    path = "/v1/policies/partners/globex"
    etag = server.client.get(path, headers=server.operator).headers["ETag"]
    r = server.client.put(path, headers={**server.operator, "If-Match": etag}, json={"reason": "t", "datasets": []})
    assert r.status_code == 200, r.text
    with pytest.raises(DevError, match="dataset_not_allowed"):
        dev_assets.from_server(api_as(server, server.other), "demo-classifier@1", "demo-blobs@1", tmp_path)


def test_dev_run_without_a_twin_to_run_on_exits_2_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("EVALGATE_API_KEY", raising=False)
    monkeypatch.setenv("EVALGATE_DATA_DIR", str(tmp_path / "d"))
    (tmp_path / "s").mkdir()
    runner = CliRunner()
    r = runner.invoke(main, ["dev", "run", str(tmp_path / "s")])
    assert r.exit_code == DevExit.SETUP and "give --model and --dataset" in r.output
    r = runner.invoke(main, ["dev", "run", str(tmp_path / "s"), "--model", "m@1", "--dataset", "d@1"])
    assert r.exit_code == DevExit.SETUP and "--key-file" in r.output
