"""Tenants that share a host cannot disturb or watch each other through the kernel's per-user limits
or its host-wide counters. Each job runs as a host uid of its own (allocated per running job), so a
per-user limit one job exhausts is its own; under runc, /proc and /sys files that count the host's
activity are masked. Under runc and gVisor, on the sandbox alone (no service)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import pytest

from service.sandbox.runner import HOST_COUNTERS_MASKED, Sandbox, names
from service.sandbox.runtimes import resolve, runsc_available
from tests.harness import unavailable
from tests.sandbox.test_runner import make_spec

# Holds every inotify instance its uid may have (fs.inotify.max_user_instances, 128 by default),
# says so on stdout, and keeps them while the test starts a second job.
HOG = """
    import ctypes, time, evalgate
    libc = ctypes.CDLL(None, use_errno=True)
    held = 0
    while held < 4096 and libc.inotify_init1(0) >= 0:
        held += 1
    print("HELD", held, flush=True)
    time.sleep(20)
    evalgate.report({"held": held})
"""
PROBE = """
    import ctypes, evalgate
    libc = ctypes.CDLL(None, use_errno=True)
    evalgate.report({"inotify": int(libc.inotify_init1(0) >= 0)})
"""


@pytest.fixture(params=["runc", "runsc"])
def runtime(request, docker_client):  # type: ignore[no-untyped-def]
    if request.param == "runsc" and not runsc_available(docker_client):
        unavailable("gVisor", "the engine lacks the evalgate runsc runtimes: run `evalgate sandbox setup`")
    return resolve(docker_client, request.param)


def spec_for(tmp_path, demo_files, docker_client, runtime, code: str, metrics: str, user: str):  # type: ignore[no-untyped-def]
    spec = make_spec(tmp_path, demo_files, docker_client, code)
    return dataclasses.replace(spec, runtime=runtime, env={"EVALGATE_METRICS": metrics}, job_user=f"{user}:{user}")


def probe_beside_a_hog(tmp_path, demo_files, docker_client, runtime, hog_uid: int, probe_uid: int) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(instances the hog holds, whether the probe could make one) with both jobs running at once."""
    sandbox = Sandbox(docker_client, state_dir=tmp_path / "state")
    hog = spec_for(tmp_path, demo_files, docker_client, runtime, HOG, "held", str(hog_uid))
    probe = spec_for(tmp_path, demo_files, docker_client, runtime, PROBE, "inotify", str(probe_uid))
    outcomes = {}
    thread = threading.Thread(target=lambda: outcomes.setdefault("hog", sandbox.run(hog)))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        held = None
        while held is None:
            assert time.monotonic() < deadline, "the hog never said it held its instances"
            try:
                text = docker_client.containers.get(names(hog.job_id)["job"]).logs().decode()
            except Exception:  # not created yet
                text = ""
            held = next((int(line.split()[1]) for line in text.splitlines() if line.startswith("HELD")), None)
            time.sleep(0.2)
        out = sandbox.run(probe)
        assert out.exit_code == 0, out.job_log
        return held, json.loads(out.result or b"{}")["inotify"]
    finally:
        sandbox.remove(probe.job_id)
        docker_client.containers.get(names(hog.job_id)["job"]).kill()
        thread.join(60)
        sandbox.remove(hog.job_id)


def test_a_per_user_limit_one_job_exhausts_is_its_own(tmp_path, demo_files, docker_client, runtime):
    held, probe_ok = probe_beside_a_hog(tmp_path, demo_files, docker_client, runtime, 300101, 300102)
    assert held >= 1
    assert probe_ok == 1
    if runtime.family == "runc":
        # The same two jobs sharing one uid, as every job once did: the attack is real under runc.
        held, probe_ok = probe_beside_a_hog(tmp_path, demo_files, docker_client, runtime, 300103, 300103)
        assert probe_ok == 0, "the hog exhausted nothing: this test proves nothing"


COUNTERS = """
    import evalgate
    seen = 0
    for path in %r:
        try:
            with open(path, "rb") as f:
                seen += bool(f.read(64))
        except IsADirectoryError:
            import os
            seen += bool(os.listdir(path))
        except OSError:
            pass
    with open("/proc/self/status") as f:
        uid = int(next(line for line in f if line.startswith("Uid:")).split()[1])
    evalgate.report({"visible": seen, "uid": uid})
"""


def test_host_wide_counters_are_not_visible(tmp_path, demo_files, docker_client, runtime):
    sandbox = Sandbox(docker_client, state_dir=tmp_path / "state")
    code = COUNTERS % (list(HOST_COUNTERS_MASKED),)
    spec = spec_for(tmp_path, demo_files, docker_client, runtime, code, "visible,uid", "300111")
    try:
        out = sandbox.run(spec)
    finally:
        sandbox.remove(spec.job_id)
    assert out.exit_code == 0, out.job_log
    result = json.loads(out.result or b"{}")
    assert result["uid"] == 300111
    if runtime.family == "runc":
        assert result["visible"] == 0  # every host-wide counter is masked
    # Under gVisor these files exist but describe the sandbox's own kernel, not the host.
