"""A full disk during an upload, a submission and a result write: a clear 507 `storage_full`, no
partial file, no half-made record, no half-released job. The data directory (blobs and the SQLite
database) is a small tmpfs of the test's own, filled to the last byte. Needs root (mount); the
sandbox is a stub (no Docker)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from service.db import utcnow
from service.jobs import runner
from service.jobs.models import Job
from service.jobs.recovery import Recovery
from service.jobs.states import JobState
from service.quotas.models import BudgetReservation
from service.release import service as release_service
from tests import factories
from tests.harness import Harness, harness, unavailable
from tests.stubs import StubSandbox, context, released_outcome


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "data"
    mount.mkdir()
    if os.geteuid() != 0:
        unavailable("a tmpfs of the test's own", "mounting needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        unavailable("a tmpfs of the test's own", done.stderr.strip())
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def full_api(small_disk: Path, demo_files) -> Iterator[Harness]:  # type: ignore[no-untyped-def]
    yield from harness(factories.settings(small_disk), demo_files)


@contextmanager
def disk_full(where: Path) -> Iterator[None]:
    """Fill the filesystem of `where` to its last byte, for the duration."""
    filler = where / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    try:
        yield
    finally:
        filler.unlink()


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "filler"}


def test_an_upload_on_a_full_disk_is_refused_and_leaves_nothing(full_api: Harness, small_disk: Path, demo_files):  # type: ignore[no-untyped-def]
    def upload() -> object:
        with open(demo_files["model"], "rb") as f:
            return full_api.client.post(
                "/v1/models", headers=full_api.operator, data={"name": "again", "version": "1"}, files={"file": f}
            )

    before = files_under(small_disk / "blobs")
    with disk_full(small_disk):
        r = upload()
        assert r.status_code == 507 and r.json()["error"] == "storage_full", r.text  # type: ignore[attr-defined]
        assert int(r.headers["Retry-After"]) > 0  # type: ignore[attr-defined]
        assert files_under(small_disk / "blobs") == before  # no partial blob, no temporary file
    listed = full_api.client.get("/v1/models", headers=full_api.operator).json()
    assert "again" not in [m["name"] for m in listed]
    assert upload().status_code == 201  # type: ignore[attr-defined]  # room again: the same upload goes through


def test_a_submission_on_a_full_disk_is_refused_and_admits_nothing(full_api: Harness, small_disk: Path):
    with disk_full(small_disk):
        r = full_api.post_job(metrics=["accuracy"])
        assert r.status_code == 507 and r.json()["error"] == "storage_full", r.text
    with full_api.db() as s:
        assert s.query(Job).count() == 0 and s.query(BudgetReservation).count() == 0
    assert full_api.post_job(metrics=["accuracy"]).status_code == 202


def test_a_result_write_on_a_full_disk_leaves_the_job_in_the_gate_until_there_is_room(
    full_api: Harness, small_disk: Path, demo_files, monkeypatch
):  # type: ignore[no-untyped-def]
    job_id = full_api.post_job(metrics=["accuracy"], resources={"query_budget": 1000}).json()["id"]
    real = release_service.conclude
    filled = []

    def conclude_on_a_full_disk(*args, **kwargs):  # type: ignore[no-untyped-def]
        cm = disk_full(small_disk)
        cm.__enter__()
        filled.append(cm)
        return real(*args, **kwargs)

    monkeypatch.setattr(release_service, "conclude", conclude_on_a_full_disk)
    ctx = context(full_api, StubSandbox(released_outcome(demo_files["data"])))
    with pytest.raises(Exception, match="full"):
        runner.run_job(ctx, job_id)
    monkeypatch.undo()
    with full_api.db() as s:
        job = s.get(Job, job_id)
        assert job.state == JobState.GATING and job.outcome is not None  # judged again, from here
        assert s.query(Job).filter(Job.state == JobState.RELEASED).count() == 0
    filled[0].__exit__(None, None, None)  # room again
    with full_api.db() as s:
        s.get(Job, job_id).lease_expires_at = utcnow() - timedelta(seconds=60)
    state = full_api.client.app.state
    reaper = Recovery(full_api.settings, state.sessionmaker, state.budgets, full_api.dispatcher)
    assert reaper.reap() == {job_id: JobState.GATING}
    assert runner.run_job(context(full_api, StubSandbox()), job_id) == JobState.RELEASED
