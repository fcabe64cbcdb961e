"""The job's result reaches the worker through the sidecar: when the worker asks for the job's usage
(the job has stopped), the sidecar copies the result file into its status directory, and the worker
reads it there instead of through the Docker API's archive call. The sidecar copies only a regular
file within the cap, never through a link and never waiting on a FIFO; anything else is left to the
archive API, which says what is wrong (tests/security/test_output.py attacks that, in both runtimes)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from service.inference.contract import RESULT_COPY_NAME, RESULT_NAME
from service.inference.server import copy_result, memory_peak
from service.sandbox.reading import NO_RESULT, read_copied_result, read_status


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    out, status = tmp_path / "out", tmp_path / "status"
    out.mkdir()
    status.mkdir()
    return out, status


def test_a_regular_file_is_copied_whole(dirs: tuple[Path, Path]) -> None:
    out, status = dirs
    data = os.urandom(3 << 20)  # more than one read's chunk
    (out / RESULT_NAME).write_bytes(data)
    assert copy_result(str(out / RESULT_NAME), len(data), str(status)) == "copied"
    assert (status / RESULT_COPY_NAME).read_bytes() == data
    assert sorted(p.name for p in status.iterdir()) == [RESULT_COPY_NAME]  # no temporary file left


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda p: None, "absent"),
        (lambda p: p.symlink_to("/etc/passwd"), "unreadable"),  # O_NOFOLLOW: a link is never followed
        (lambda p: os.mkfifo(p), "not a regular file"),  # opened without waiting for a writer
        (lambda p: p.mkdir(), "not a regular file"),
        (lambda p: p.write_bytes(b"x" * 101), "too large"),
    ],
    ids=["absent", "symlink", "fifo", "directory", "over-the-cap"],
)
def test_anything_else_is_left_to_the_worker(dirs: tuple[Path, Path], make, said: str) -> None:  # type: ignore[no-untyped-def]
    out, status = dirs
    make(out / RESULT_NAME)
    assert copy_result(str(out / RESULT_NAME), 100, str(status)) == said
    assert list(status.iterdir()) == []  # nothing copied, nothing half-written


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: None, NO_RESULT),
        (lambda p: p.symlink_to("/etc/passwd"), NO_RESULT),  # the worker follows no link either
        (lambda p: os.mkfifo(p), "result is not a regular file"),  # and never waits on a FIFO
        (lambda p: p.mkdir(), "result is not a regular file"),
        (lambda p: p.write_bytes(b"x" * 101), "result larger than the cap"),
    ],
    ids=["absent", "symlink", "fifo", "directory", "over-the-cap"],
)
def test_the_worker_checks_the_copy_again(tmp_path: Path, make, problem: str) -> None:  # type: ignore[no-untyped-def]
    make(tmp_path / RESULT_COPY_NAME)
    assert read_copied_result(tmp_path / RESULT_COPY_NAME, 100) == (None, problem)
    (tmp_path / "ok").write_bytes(b"x" * 100)
    assert read_copied_result(tmp_path / "ok", 100) == (b"x" * 100, None)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p.symlink_to("/etc/passwd"),
        lambda p: os.mkfifo(p),
        lambda p: p.mkdir(),
        lambda p: p.write_text('{"rows": 1, "pad": "' + "x" * 200 + '"}'),
        lambda p: p.write_text("[1, 2]"),
    ],
    ids=["symlink", "fifo", "directory", "over-the-cap", "not-an-object"],
)
def test_a_status_file_that_is_not_one_reads_as_none(tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    make(tmp_path / "usage.json")
    assert read_status(tmp_path / "usage.json", max_bytes=100) is None
    (tmp_path / "ready.json").write_text('{"rows": 1}')
    assert read_status(tmp_path / "ready.json", max_bytes=100) == {"rows": 1}


def test_the_sidecar_reads_its_memory_peak_from_its_cgroup_else_its_own_peak_rss(tmp_path: Path) -> None:
    import resource

    v1, v2 = tmp_path / "memory.max_usage_in_bytes", tmp_path / "memory.peak"
    v2.write_text("123456789\n")
    assert memory_peak([str(v1), str(v2)]) == 123456789  # the first the container can read
    v1.write_text("not a number")
    assert memory_peak([str(v1), str(v2)]) == 123456789
    own = memory_peak([str(tmp_path / "absent")])  # as under gVisor: no cgroup files inside
    assert own == resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 and own > 1 << 20


# -- in the real sandbox, under runc and gVisor ----------------------------------------------------


def _run(docker_client, demo_files: dict[str, Path], tmp_path: Path, runtime: str, code: str):  # type: ignore[no-untyped-def]
    from service.sandbox.runner import Sandbox
    from service.sandbox.runtimes import resolve, runsc_available
    from service.sandbox.spec import JobSandbox, Limits

    if runtime == "runsc" and not runsc_available(docker_client):
        from tests.harness import unavailable

        unavailable("gVisor", "the engine lacks the evalgate runsc runtimes: run `evalgate sandbox setup`")
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "main.py").write_text(code)
    for p in (tmp_path, suite):
        p.chmod(0o755)
    (suite / "main.py").chmod(0o644)
    data = tmp_path / "data.npz"
    shutil.copy(demo_files["data"], data)
    data.chmod(0o644)
    spec = JobSandbox(
        job_id=f"copy-{runtime}-{os.urandom(4).hex()}",
        job_image=docker_client.images.get("evalgate-job:latest").id,
        sidecar_image=docker_client.images.get("evalgate-sidecar:latest").id,
        model_path=demo_files["model"],
        dataset_path=data,
        suite_path=suite,
        entrypoint="main.py",
        env={},
        query_budget_rows=100,
        limits=Limits(memory_mb=512, cpus=1, timeout_s=60),
        runtime=resolve(docker_client, runtime),
    )
    sandbox = Sandbox(docker_client, deployment="evalgate-test-copy", state_dir=tmp_path / "state")
    archive_reads: list[str] = []
    read_file = sandbox._read_file

    def counted(container, path, max_bytes):  # type: ignore[no-untyped-def]
        archive_reads.append(path)
        return read_file(container, path, max_bytes)

    sandbox._read_file = counted  # type: ignore[method-assign]
    from docker.models.containers import Container

    def no_stats(self, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the engine's statistics wait for its collector's tick: not on a job's path")

    stats, Container.stats = Container.stats, no_stats  # type: ignore[method-assign]
    try:
        outcome = sandbox.run(spec)
        copied = (sandbox._status_dir(spec.job_id) / RESULT_COPY_NAME).exists()
    finally:
        Container.stats = stats  # type: ignore[method-assign]
        sandbox.remove(spec.job_id)
    return outcome, copied, archive_reads


@pytest.mark.docker
@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_the_result_comes_through_the_sidecar_not_the_archive_api(
    docker_client, demo_files: dict[str, Path], tmp_path: Path, runtime: str
) -> None:  # type: ignore[no-untyped-def]
    code = 'import evalgate\nevalgate.report({"score": 0.25})\n'
    outcome, copied, archive_reads = _run(docker_client, demo_files, tmp_path, runtime, code)
    assert outcome.exit_code == 0, outcome.job_log[-2000:]
    assert outcome.result == b'{"score": 0.25}' and outcome.result_problem is None
    assert copied and archive_reads == []
    assert "result" not in outcome.usage  # how the copy went is the worker's business, not a usage figure
    # The sidecar's memory peak comes with its usage (its cgroup's figure under runc, its own peak
    # resident size under gVisor), never from the engine's statistics; not a usage figure either.
    assert "memory_peak" not in outcome.usage
    assert outcome.sidecar_memory_peak is not None and 8 << 20 < outcome.sidecar_memory_peak < 512 << 20


@pytest.mark.docker
@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_a_result_the_sidecar_may_not_read_still_arrives(
    docker_client, demo_files: dict[str, Path], tmp_path: Path, runtime: str
) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import os\n"
        'fd = os.open("/output/result.json", os.O_WRONLY | os.O_CREAT, 0o600)\n'
        "os.write(fd, b'{\"score\": 0.5}')\n"
    )
    outcome, copied, archive_reads = _run(docker_client, demo_files, tmp_path, runtime, code)
    assert outcome.exit_code == 0, outcome.job_log[-2000:]
    assert outcome.result == b'{"score": 0.5}' and outcome.result_problem is None
    assert not copied and len(archive_reads) == 1  # the sidecar could not read it: the archive API did
