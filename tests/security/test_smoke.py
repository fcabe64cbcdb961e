"""First security smoke set. Each attack is a partner suite uploaded through the API and run by the
real worker in the real sandbox. Each test asserts that the attack failed and that nothing but an
error class or gated metrics reached the partner."""

from __future__ import annotations

import json

import pytest

from tests.helpers import suite_bundle, unique

pytestmark = [pytest.mark.docker, pytest.mark.redis]

MARKER = "LEAKMARKER-7f3a9c"  # printed by attacks; must never appear in anything a partner reads


def run_attack(stack, code: str, metrics: list[str], **extra) -> dict:
    suite = stack.upload_suite(suite_bundle(unique("attack"), code, metrics))
    job = stack.run(f"{suite['name']}@{suite['version']}", metrics, **extra)
    seen = json.dumps(job) + stack.client.get("/v1/jobs", headers=stack.partner).text
    assert MARKER not in seen, "job output reached the partner"
    return job


def test_no_network_egress(stack):
    job = run_attack(stack, f"""
        import socket, evalgate
        print("{MARKER}")
        ok = 0
        for family, addr in [(socket.AF_INET, ("1.1.1.1", 53)), (socket.AF_INET, ("169.254.169.254", 80)),
                             (socket.AF_INET, ("172.17.0.1", 2375)), (socket.AF_INET6, ("2606:4700:4700::1111", 53))]:
            try:
                s = socket.socket(family, socket.SOCK_STREAM); s.settimeout(2); s.connect(addr); ok += 1
            except OSError:
                pass
        try:
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(b"x", ("8.8.8.8", 53)); ok += 1
        except OSError:
            pass
        try:
            socket.getaddrinfo("pypi.org", 443); ok += 1
        except OSError:
            pass
        interfaces = [name for _, name in socket.if_nameindex()]
        evalgate.report({{"connections": ok, "interfaces": len(interfaces)}})
    """, ["connections", "interfaces"])
    assert job["state"] == "released", job
    assert job["result"]["metrics"]["connections"] == 0
    assert job["result"]["metrics"]["interfaces"] == 1  # loopback only


def test_cannot_find_or_read_the_model(stack, demo_files):
    job = run_attack(stack, f"""
        import os, stat, evalgate
        print("{MARKER}")
        hits = 0
        needle = b"evalgate" + b"-demo"  # the model's producer name, built so this file does not contain it
        for root, dirs, files in os.walk("/", onerror=lambda e: None):
            if root.startswith(("/proc", "/sys", "/dev")):
                dirs[:] = []
                continue
            for f in files:
                p = os.path.join(root, f)
                try:
                    if not stat.S_ISREG(os.lstat(p).st_mode):
                        continue
                    # the demo model's producer name sits in its first bytes
                    if f.endswith(".onnx") or needle in open(p, "rb").read(4096):
                        hits += 1
                except OSError:
                    pass
        evalgate.report({{"model_files_found": hits}})
    """, ["model_files_found"])
    assert job["state"] == "released", job
    assert job["result"]["metrics"]["model_files_found"] == 0


def test_cannot_write_outside_output(stack):
    job = run_attack(stack, f"""
        import os, evalgate
        print("{MARKER}")
        written = 0
        for d in ["/", "/suite", "/data", "/run/evalgate", "/opt/venv", "/etc", "/home", "/var/tmp", "/dev/shm/../.."]:
            try:
                with open(os.path.join(d, "pwned"), "w") as f:
                    f.write("x")
                written += 1
            except OSError:
                pass
        evalgate.report({{"written": written}})
    """, ["written"])
    assert job["state"] == "released", job
    assert job["result"]["metrics"]["written"] == 0


def test_stdout_flood_is_capped_and_never_shown(stack):
    job = run_attack(stack, f"""
        import sys, evalgate
        line = ("{MARKER}" * 20 + "\\n").encode()
        for _ in range(200_000):  # about 70 MB
            sys.stdout.buffer.write(line)
        sys.stdout.flush()
        evalgate.report({{"done": 1}})
    """, ["done"])
    assert job["state"] == "released", job
    from service.db import make_engine, make_sessionmaker, session_scope
    from service.jobs.models import Job

    with session_scope(make_sessionmaker(make_engine(stack.settings.database_url))) as s:
        log = s.get(Job, job["id"]).operator_log
    assert MARKER in log  # operators do get it…
    assert len(log.encode()) < stack.settings.log_cap_bytes + 4096  # …but capped


def test_sleep_past_the_limit_is_a_timeout(stack):
    job = run_attack(stack, f"""
        import time
        print("{MARKER}")
        time.sleep(600)
    """, ["never"], resources={"timeout_s": 3})
    assert (job["state"], job["error_class"]) == ("failed", "timeout")
    assert job["result"] is None


def test_crash_traceback_is_only_an_error_class(stack):
    job = run_attack(stack, f"""
        raise RuntimeError("{MARKER} secret in a traceback")
    """, ["never"])
    assert (job["state"], job["error_class"]) == ("failed", "crashed")


def test_memory_bomb_is_oom(stack):
    job = run_attack(stack, """
        blocks = []
        while True:
            blocks.append(bytearray(32 << 20))
    """, ["never"], resources={"memory_mb": 128})
    assert (job["state"], job["error_class"]) == ("failed", "oom")


def test_query_budget_exceeded(stack):
    job = run_attack(stack, """
        import evalgate
        x, _ = evalgate.load_dataset()
        for i in range(0, len(x), 10):
            evalgate.predict(x[i:i + 10])
        evalgate.report({"done": 1})
    """, ["done"], resources={"query_budget": 50})
    assert (job["state"], job["error_class"]) == ("failed", "query_budget_exceeded")


@pytest.mark.parametrize("payload", [
    '{"score": NaN}', '{"score": 1, "score": 2}', '{"score": 1, "extra": 2}', '[1]', '{"score": {"a": 1}}',
    '{"score": "0.9"}', '{"score": true}',
])
def test_result_that_breaks_the_rules_is_rejected(stack, payload):
    job = run_attack(stack, f"""
        open("/output/result.json", "w").write({payload!r})
    """, ["score"])
    assert (job["state"], job["error_class"]) == ("rejected", "output_rejected")
    assert job["result"] is None


def test_result_symlink_to_host_path_is_not_followed(stack):
    job = run_attack(stack, """
        import os
        os.symlink("/etc/passwd", "/output/result.json")
    """, ["score"])
    assert (job["state"], job["error_class"]) == ("rejected", "missing_output")


def test_filling_the_output_directory_stops_at_its_cap(stack):
    job = run_attack(stack, """
        import evalgate
        written = 0
        try:
            with open("/output/fill", "wb") as f:
                for _ in range(64):
                    f.write(b"\\0" * (1 << 20)); f.flush(); written += 1
        except OSError:
            pass
        import os
        os.remove("/output/fill")
        evalgate.report({"mib_written": written})
    """, ["mib_written"])
    assert job["state"] == "released", job
    assert job["result"]["metrics"]["mib_written"] <= 1
