"""A job attacks its own sidecar with everything that used to kill it or blind the worker: big
frames on many connections, more connections than allowed, shared memory with holes or past the
allowance, thousands of empty and malformed requests. The sidecar stays under its memory limit
(read from its container's own peak), keeps serving, and the worker still learns that it was
ready and what the job used. Under runc and gVisor."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Harness, unavailable, worker_harness
from tests.security.battery import MARKER, attack, released

SIDECAR_MB = 384  # the allowance is what is left after the sidecar's own 256 MiB: 128 MiB

ATTACK = """
import fcntl, json, os, socket, struct, evalgate
print("{marker}")
MiB = 1 << 20
def conn(timeout=20):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect("/run/evalgate/model.sock")
    return s
def reply(s):
    try:
        hl, bl = struct.unpack(">II", s.recv(8, socket.MSG_WAITALL))
        r = json.loads(s.recv(hl, socket.MSG_WAITALL))
        if bl:
            s.recv(bl, socket.MSG_WAITALL)
        return r
    except (OSError, struct.error, ValueError):
        return {{"error": "closed"}}
codes = []
held = []
# 1. Twelve connections, each with a 60 MiB frame short of its last byte: without bounds the
#    sidecar would hold 8 x 60 MiB.
for i in range(12):
    s = conn()
    header = b'{{"op":"predict"}}'
    try:
        s.sendall(struct.pack(">II", len(header), 60 * MiB) + header)
        chunk = bytes(MiB)
        for _ in range(59):
            s.sendall(chunk)
        s.sendall(chunk[:-1])
    except OSError:
        pass
    s.settimeout(1.0)
    try:
        hl, bl = struct.unpack(">II", s.recv(8, socket.MSG_WAITALL))
        codes.append(json.loads(s.recv(hl, socket.MSG_WAITALL)).get("error"))
        s.close()
    except socket.timeout:
        held.append(s)  # the sidecar holds this frame: the connection stays open
    except (OSError, struct.error, ValueError):
        codes.append("closed")
        s.close()
# 2. Shared memory (runc; gVisor passes no descriptors): one with holes, then written ones past the
#    allowance.
holes = 0
try:
    s = conn()
    sparse = os.memfd_create("x", os.MFD_ALLOW_SEALING)
    os.ftruncate(sparse, 60 * MiB)  # the job's own file-size limit is 64 MiB
    fcntl.fcntl(sparse, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
    raw = json.dumps({{"op": "attach", "slot": 0}}).encode()
    socket.send_fds(s, [struct.pack(">II", len(raw), 0) + raw], [sparse])
    r = reply(s)
    holes = int("holes" in r.get("detail", ""))
    full = os.memfd_create("y", os.MFD_ALLOW_SEALING)
    os.ftruncate(full, 60 * MiB)
    os.posix_fallocate(full, 0, 60 * MiB)
    fcntl.fcntl(full, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
    for slot in range(5):
        raw = json.dumps({{"op": "attach", "slot": slot}}).encode()
        socket.send_fds(s, [struct.pack(">II", len(raw), 0) + raw], [full])
        codes.append(reply(s).get("error"))
    held.append(s)
except OSError:
    pass
# 3. Thousands of empty and malformed requests on one connection.
empty = 0
s = conn()
spec = {{"name": "features", "dtype": "float32", "shape": [0, 16]}}
zero = json.dumps({{"op": "predict", "inputs": [spec]}}).encode()
for i in range(3000):
    s.sendall(struct.pack(">II", len(zero), 0) + zero)
    empty += reply(s).get("error") == "empty_batch"
    s.sendall(struct.pack(">II", 4, 0) + b"\\xff\\xfe\\xfd\\xfc")
    reply(s)
s.close()
for s in held:
    s.close()
x, _ = evalgate.load_dataset()
served = evalgate.predict(x[:4]).shape[0]
evalgate.report({{"busy": codes.count("busy"), "holes": holes, "empty": empty, "served_after": served}})
"""


@pytest.fixture(scope="module", params=["runc", "runsc"])
def small_sidecar(request, tmp_path_factory, demo_files: dict[str, Path], docker_client) -> Iterator[Harness]:  # type: ignore[no-untyped-def]
    from service.sandbox.runtimes import runsc_available

    if request.param == "runsc" and not runsc_available(docker_client):
        unavailable("gVisor", "the engine lacks the evalgate runsc runtimes: run `evalgate sandbox setup`")
    tmp = tmp_path_factory.mktemp(f"sidecar-{request.param}")
    yield from worker_harness(
        tmp, demo_files, docker_runtime=request.param, default_timeout_s=120, sidecar_memory_mb=SIDECAR_MB
    )


def test_a_job_cannot_push_its_sidecar_out_of_memory_or_out_of_service(small_sidecar):
    stack = small_sidecar
    job = attack(stack, ATTACK.format(marker=MARKER), ["busy", "holes", "empty", "served_after"])
    m = released(job)
    assert m["served_after"] == 4 and m["empty"] == 3000
    assert m["busy"] >= 4  # frames and connections past the allowance and the cap were refused
    if stack.settings.docker_runtime == "runc":
        assert m["holes"] == 1
    facts = stack.outcome(job["id"])
    assert facts["sidecar_oom"] is False and facts["sidecar_ready"] is True
    peak = facts["sidecar_memory_peak"]
    assert peak is None or peak < SIDECAR_MB << 20, peak
    usage = stack.usage(job["id"])
    assert (usage["rows"], usage["requests"], usage["internal_errors"]) == (4, 1, 0)
