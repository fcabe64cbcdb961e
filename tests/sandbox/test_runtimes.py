import json
from pathlib import Path

import pytest

from service.sandbox.runtimes import RUNSC_JOB, RUNSC_SIDECAR, resolve, seccomp_profile, with_runsc

REPO = Path(__file__).resolve().parents[2]


def test_runsc_entries_are_added_and_other_settings_kept():
    before = {"log-driver": "json-file", "runtimes": {"kata": {"path": "/usr/bin/kata"}}}
    after = with_runsc(before, "/usr/bin/runsc")
    assert after["log-driver"] == "json-file" and after["runtimes"]["kata"] == {"path": "/usr/bin/kata"}
    assert "--host-uds=open" in after["runtimes"][RUNSC_JOB]["runtimeArgs"]  # the job only connects
    assert "--host-uds=create" in after["runtimes"][RUNSC_SIDECAR]["runtimeArgs"]
    assert all("--network=none" in r["runtimeArgs"] for k, r in after["runtimes"].items() if k != "kata")
    assert with_runsc(after, "/usr/bin/runsc") == after  # idempotent
    assert before == {"log-driver": "json-file", "runtimes": {"kata": {"path": "/usr/bin/kata"}}}


def test_shipped_profiles_are_what_the_annotated_source_generates():
    import runpy

    build = runpy.run_path(str(REPO / "sandbox_images" / "seccomp" / "build_profile.py"))
    for runtime in ("runc", "runsc"):
        shipped = (REPO / "sandbox_images" / "seccomp" / f"evalgate-{runtime}.json").read_text()
        assert shipped == build["render"](runtime)
        profile = json.loads(seccomp_profile(runtime))
        allowed = {
            n
            for rule in profile["syscalls"]
            if rule["action"] == "SCMP_ACT_ALLOW" and "args" not in rule
            for n in rule["names"]
        }
        assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
        for dangerous in (
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "personality",
            "keyctl",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "unshare",
            "setns",
            "mount",
            "kexec_load",
            "reboot",
            "open_by_handle_at",
            "io_uring_setup",
            "add_key",
        ):
            assert dangerous not in allowed, dangerous
            assert dangerous in build["REMOVED"], f"{dangerous} removal is not explained"


@pytest.mark.docker
def test_unknown_runtime_is_refused(docker_client):
    from service.sandbox.errors import SandboxError

    with pytest.raises(SandboxError):
        resolve(docker_client, "kata")
    assert resolve(docker_client, "runc").job == "runc"
