"""The sandbox without the service: plain arguments, a real Docker engine."""

import textwrap
import threading
import time
import uuid

import pytest

from service.sandbox.runner import LABEL_JOB, Sandbox, names
from service.sandbox.runtimes import resolve
from service.sandbox.spec import JobSandbox, Limits
from tests.factories import unique

pytestmark = pytest.mark.docker


def make_spec(tmp_path, demo_files, docker_client, code: str, **limits) -> JobSandbox:
    suite = tmp_path / f"suite-{uuid.uuid4().hex[:6]}"
    suite.mkdir()
    (suite / "main.py").write_text(textwrap.dedent(code))
    return JobSandbox(
        job_id=f"test-{uuid.uuid4().hex[:12]}",
        job_image=docker_client.images.get("evalgate-job:latest").id,
        sidecar_image=docker_client.images.get("evalgate-sidecar:latest").id,
        model_path=demo_files["model"],
        dataset_path=demo_files["data"],
        suite_path=suite,
        entrypoint="main.py",
        env={"EVALGATE_METRICS": "starts,rows"},
        query_budget_rows=10_000,
        limits=Limits(memory_mb=256, cpus=1.0, timeout_s=limits.pop("timeout_s", 60), **limits),
        runtime=resolve(docker_client, "runc"),
    )


def leftovers(client, job_id):
    flt = {"label": f"{LABEL_JOB}={job_id}"}
    return client.containers.list(all=True, filters=flt) + client.volumes.list(filters=flt)


COUNTING_JOB = """
    import os, time, evalgate
    with open("/output/starts", "a") as f:
        f.write("x")
    x, _ = evalgate.load_dataset()
    evalgate.predict(x[:40])
    time.sleep(3)
    evalgate.report({"starts": len(open("/output/starts").read()), "rows": 40})
"""


def test_run_collects_result_usage_and_image_ids(tmp_path, demo_files, docker_client):
    sandbox = Sandbox(docker_client)
    spec = make_spec(tmp_path, demo_files, docker_client, COUNTING_JOB.replace("time.sleep(3)", ""))
    try:
        out = sandbox.run(spec)
    finally:
        sandbox.remove(spec.job_id)
    assert out.exit_code == 0 and not out.oom and not out.timed_out
    assert out.result == b'{"rows": 40, "starts": 1}'  # whole numbers stay whole (counts)
    assert out.usage["rows"] == 40 and out.usage["requests"] == 1 and not out.usage["budget_exceeded"]
    assert out.images == {"job": spec.job_image, "sidecar": spec.sidecar_image}
    assert leftovers(docker_client, spec.job_id) == []


def test_redelivered_run_resumes_and_never_starts_a_second_container(tmp_path, demo_files, docker_client):
    spec = make_spec(tmp_path, demo_files, docker_client, COUNTING_JOB)
    first, second = Sandbox(docker_client), Sandbox(docker_client)
    outcomes = {}
    t = threading.Thread(target=lambda: outcomes.setdefault("first", first.run(spec)))
    t.start()
    try:
        deadline = time.monotonic() + 30
        while not docker_client.containers.list(filters={"name": names(spec.job_id)["job"]}):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        outcomes["second"] = second.run(spec)  # the same job, delivered again while it runs
        t.join(60)
    finally:
        first.remove(spec.job_id)
    assert outcomes["second"].result is not None
    assert b'"starts": 1}' in outcomes["second"].result


def test_sweep_removes_leftovers_of_jobs_not_kept(tmp_path, demo_files, docker_client):
    sandbox = Sandbox(docker_client, deployment=unique("deploy"))
    spec = make_spec(tmp_path, demo_files, docker_client, COUNTING_JOB.replace("time.sleep(3)", ""))
    sandbox.run(spec)  # no remove(): as if the worker died after the run
    assert leftovers(docker_client, spec.job_id)
    # Another deployment on the same engine does not know this job, and must leave it alone.
    assert spec.job_id not in Sandbox(docker_client, deployment=unique("other")).sweep(keep=lambda job_id: False)
    assert leftovers(docker_client, spec.job_id)
    assert spec.job_id not in sandbox.sweep(keep=lambda job_id: job_id == spec.job_id)
    assert leftovers(docker_client, spec.job_id)
    assert spec.job_id in sandbox.sweep(keep=lambda job_id: False)
    assert leftovers(docker_client, spec.job_id) == []
    sandbox.remove(spec.job_id)  # idempotent


def test_cancel_kills_the_job(tmp_path, demo_files, docker_client):
    sandbox = Sandbox(docker_client)
    spec = make_spec(tmp_path, demo_files, docker_client, "import time; time.sleep(300)")
    t0 = time.monotonic()
    try:
        out = sandbox.run(spec, should_cancel=lambda: time.monotonic() - t0 > 2)
    finally:
        sandbox.remove(spec.job_id)
    assert out.cancelled and not out.timed_out and time.monotonic() - t0 < 30


def test_container_hardening_flags(tmp_path, demo_files, docker_client):
    """The flags the isolation rests on, read back from Docker itself."""
    sandbox = Sandbox(docker_client)
    spec = make_spec(tmp_path, demo_files, docker_client, "import time; time.sleep(5)")
    t = threading.Thread(target=lambda: sandbox.run(spec))
    t.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            found = docker_client.containers.list(filters={"name": names(spec.job_id)["job"]})
            if found:
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
        hc = found[0].attrs["HostConfig"]
        cfg = found[0].attrs["Config"]
        assert hc["NetworkMode"] == "none" and hc["ReadonlyRootfs"] is True
        assert hc["CapDrop"] == ["ALL"] and "no-new-privileges:true" in hc["SecurityOpt"]
        seccomp = next(o for o in hc["SecurityOpt"] if o.startswith("seccomp="))
        assert '"defaultAction":"SCMP_ACT_ERRNO"' in seccomp and '"ptrace"' not in seccomp
        assert hc["Memory"] == hc["MemorySwap"] == 256 << 20 and hc["PidsLimit"] == 128 and hc["Init"] is True
        assert {u["Name"] for u in hc["Ulimits"]} == {"nofile", "core", "fsize", "nproc"}
        assert cfg["User"] == "10002:10002" and hc["LogConfig"]["Config"]["max-file"] == "1"
        assert {"/proc/stat", "/proc/meminfo", "/proc/uptime", "/proc/kcore"} <= set(hc["MaskedPaths"])
        assert not any("docker.sock" in str(m) or ".onnx" in str(m.get("Source", "")) for m in found[0].attrs["Mounts"])
        assert all(not e.startswith(("EVALGATE_DATABASE", "EVALGATE_BROKER")) for e in cfg["Env"])
    finally:
        t.join(60)
        sandbox.remove(spec.job_id)


@pytest.mark.parametrize(
    "code, oom",
    [
        ("b = []\nwhile True:\n    b.append(bytearray(8 << 20))", True),  # the kernel kills it at the limit
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", False),  # it kills itself
    ],
)
def test_a_sigkilled_container_is_out_of_memory_only_if_the_engine_logged_an_oom(docker_client, tmp_path, code, oom):
    """Docker's OOMKilled flag can come after the exit (seen under gVisor, loaded): the engine's event
    log then tells an out-of-memory kill from a job that killed itself."""
    from service.sandbox.runner import SIGKILLED, Sandbox

    image = docker_client.images.get("evalgate-job:latest").id
    script = tmp_path / "code.py"
    script.write_text(code)
    script.chmod(0o644)
    tmp_path.chmod(0o755)
    container = docker_client.containers.run(  # python under sh, not pid 1: a pid 1 ignores its own SIGKILL
        image,
        ["sh", "-c", "/opt/venv/bin/python /code/code.py; exit $?"],
        volumes={str(tmp_path): {"bind": "/code", "mode": "ro"}},
        detach=True,
        mem_limit="64m",
        memswap_limit="64m",
        network_mode="none",
    )
    try:
        assert container.wait(timeout=60)["StatusCode"] == SIGKILLED
        container.reload()
        sandbox = Sandbox(docker_client, deployment=f"t-{tmp_path.name}", state_dir=tmp_path / "state")
        assert sandbox._oom_event(container, container.attrs["State"]["StartedAt"]) is oom
    finally:
        container.remove(force=True)
