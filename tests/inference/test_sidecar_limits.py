"""The sidecar under a hostile job, in process: bounded connections and memory, hole-free shared
memory, empty requests refused uncharged, failures confined to their request, nothing printed, and
its status (ready, usage) written where only the worker reads it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.inference.client import Client
from service.inference.contract import USAGE_NAME, ModelError
from service.inference.protocol import PREFIX, read_frame, send_frame_with_fd
from service.inference.server import Server, make_server, report_usage

MiB = 1 << 20


@contextlib.contextmanager
def serving(path: Path, model: Path, **limits: object) -> Iterator[Server]:
    server, _ = make_server(str(path), str(model), max_rows=100_000, **limits)  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def connect(server: Server) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(server.server_address)
    return s


def reply(s: socket.socket) -> dict:
    frame = read_frame(s)
    return frame[0] if frame else {"error": "closed"}


def predict_frame(rows: int, **header: object) -> bytes:
    x = np.zeros((rows, 16), dtype=np.float32)
    raw = json.dumps(
        {"op": "predict", "inputs": [{"name": "features", "dtype": "float32", "shape": [rows, 16]}], **header}
    ).encode()
    return PREFIX.pack(len(raw), x.nbytes) + raw + x.tobytes()


def memfd(size: int, written: bool) -> int:
    fd = os.memfd_create("t", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    if written:
        os.posix_fallocate(fd, 0, size)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
    return fd


def wait_until(cond, timeout_s: float = 5) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


@pytest.fixture
def data(demo_files):
    with np.load(demo_files["data"]) as npz:
        return npz["x"]


def test_connections_past_the_cap_are_answered_busy_and_closed(tmp_path, demo_files, data):
    with serving(tmp_path / "m.sock", demo_files["model"], max_connections=3) as server:
        held = [connect(server) for _ in range(3)]
        wait_until(lambda: server.open_connections == 3)
        extra = connect(server)
        assert reply(extra)["error"] == "busy"
        assert extra.recv(1) == b""  # and closed
        held.pop().close()
        wait_until(lambda: server.open_connections == 2)
        with Client(str(server.server_address)) as c:  # a slot came free: served again
            assert c.predict({"features": data[:2]})["probabilities"].shape == (2, 3)
        for s in held:
            s.close()


def test_receive_buffers_are_charged_before_they_are_allocated(tmp_path, demo_files, data):
    """Frames declaring big bodies on many connections: the first fits the allowance, the next is
    refused before any buffer is allocated, and the sidecar serves normally afterwards."""
    with serving(tmp_path / "m.sock", demo_files["model"], max_body=48 * MiB, allowance_bytes=64 * MiB) as server:
        first, second = connect(server), connect(server)
        header = b'{"op":"predict"}'
        first.sendall(PREFIX.pack(len(header), 40 * MiB) + header)  # the body never comes
        wait_until(lambda: server.allowance.used >= 40 * MiB)
        second.sendall(PREFIX.pack(len(header), 40 * MiB) + header)
        assert reply(second)["error"] == "busy"
        assert server.allowance.used == 40 * MiB  # nothing taken for the refused one
        first.close()
        wait_until(lambda: server.allowance.used == 0)  # given back when the connection ends
        with Client(str(server.server_address)) as c:
            assert c.predict({"features": data[:3]})["probabilities"].shape == (3, 3)
        second.close()


def test_shared_memory_must_have_no_holes_and_is_charged_in_full(tmp_path, demo_files):
    with serving(tmp_path / "m.sock", demo_files["model"], shared_memory=True, allowance_bytes=48 * MiB) as server:
        s = connect(server)
        sparse = memfd(64 * MiB, written=False)  # mapping it would fault 64 MiB into the sidecar
        whole = memfd(32 * MiB, written=True)
        other = memfd(32 * MiB, written=True)
        try:
            send_frame_with_fd(s, {"op": "attach", "slot": 0}, sparse)
            refused = reply(s)
            assert refused["error"] == "bad_frame" and "holes" in refused["detail"]
            send_frame_with_fd(s, {"op": "attach", "slot": 0}, whole)
            assert reply(s) == {"ok": True}
            assert server.allowance.used >= 32 * MiB
            send_frame_with_fd(s, {"op": "attach", "slot": 1}, other)  # 64 MiB in all: over 48
            assert reply(s)["error"] == "busy"
            send_frame_with_fd(s, {"op": "attach", "slot": 0}, other)  # replacing a slot gives its share back
            assert reply(s) == {"ok": True}
        finally:
            for fd in (sparse, whole, other):
                os.close(fd)
            s.close()
        wait_until(lambda: server.allowance.used == 0)


def _widening_model(path: Path, width: int) -> Path:
    """(n, 1) in, (n, width) out: answers far larger than the requests."""
    import onnx
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, width])
    graph = helper.make_graph(
        [helper.make_node("Expand", ["x", "shape"], ["y"])],
        "widen",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", width])],
        initializer=[shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_answers_count_against_the_allowance(tmp_path):
    """A batched request whose answer would not fit is refused `busy` (charged: its rows ran), the
    allowance is whole again afterwards, and a request whose answer fits is served."""
    model = _widening_model(tmp_path / "widen.onnx", 4096)  # 16 KiB of answer a row
    server, budget = make_server(
        str(tmp_path / "m.sock"), str(model), max_rows=100_000, max_batch=256, allowance_bytes=6 * MiB
    )
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with Client(str(server.server_address), shared_memory=False) as c:
            x = np.ones((1024, 1), dtype=np.float32)  # 4 KiB in, 16 MiB out
            with pytest.raises(ModelError) as refused:
                c._call(
                    {
                        "op": "predict_batched",
                        "batch": 256,
                        "inputs": [{"name": "x", "dtype": "float32", "shape": [1024, 1]}],
                    },
                    [x],
                )
            assert refused.value.code == "busy"
            assert server.allowance.used == 4096  # only this connection's receive buffer remains held
            assert c.predict({"x": x[:256]})["y"].shape == (256, 4096)  # 4 MiB: fits
        assert budget.snapshot()["rows"] == 1024 + 256
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("op", ["predict", "predict_batched"])
def test_an_empty_request_is_refused_and_not_charged(tmp_path, demo_files, data, op):
    server, budget = make_server(str(tmp_path / "m.sock"), str(demo_files["model"]), max_rows=100)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        s = connect(server)
        for _ in range(500):
            s.sendall(predict_frame(0, op=op, batch=8))
            assert reply(s)["error"] == "empty_batch"
        s.sendall(predict_frame(2))
        assert reply(s)["ok"] is True  # the same connection goes on
        s.close()
        snap = budget.snapshot()
        assert (snap["rows"], snap["requests"], snap["refused"]) == (2, 1, 0)
    finally:
        server.shutdown()
        server.server_close()


def test_a_failure_of_the_sidecar_answers_that_request_only_and_prints_nothing(
    tmp_path, demo_files, data, capfd, monkeypatch
):
    from service.inference import server as server_module

    with serving(tmp_path / "m.sock", demo_files["model"]) as server:
        a, b = connect(server), connect(server)
        real_run = server_module.Model.run
        calls = {"n": 0}

        def flaky(self, feeds, names=None):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if calls["n"] == 1:
                raise ZeroDivisionError("a bug of ours")
            return real_run(self, feeds, names)

        monkeypatch.setattr(server_module.Model, "run", flaky)
        a.sendall(predict_frame(3))
        assert reply(a)["error"] == "internal"
        a.sendall(predict_frame(3))  # the connection that failed goes on
        assert reply(a)["ok"] is True
        b.sendall(predict_frame(1))  # and the other one was never touched
        assert reply(b)["ok"] is True
        for _ in range(200):  # garbage, many times over: answered, never logged
            a.sendall(PREFIX.pack(4, 0) + b"\xff\xfe\xfd\xfc")
            assert reply(a)["error"] == "bad_frame"
        a.close()
        b.close()
        wait_until(lambda: server.open_connections == 0)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_descriptors_with_a_refused_frame_are_closed(tmp_path, demo_files):
    with serving(tmp_path / "m.sock", demo_files["model"], shared_memory=True, max_body=MiB) as server:
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(50):
            s = connect(server)
            fd = memfd(MiB, written=True)
            raw = b'{"op":"attach","slot":0}'
            socket.send_fds(s, [PREFIX.pack(len(raw), 2 * MiB) + raw], [fd])  # oversized: refused
            assert reply(s)["error"] == "too_large"
            os.close(fd)
            s.close()
        wait_until(lambda: server.open_connections == 0)
        assert len(os.listdir("/proc/self/fd")) <= before + 2  # not 50 leaked memfds


def test_usage_is_reported_once_the_jobs_connections_ended(tmp_path, demo_files, data):
    server, budget = make_server(str(tmp_path / "m.sock"), str(demo_files["model"]), max_rows=1000)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    status = tmp_path / "status"
    status.mkdir()
    try:
        s = connect(server)
        s.sendall(predict_frame(7))
        assert reply(s)["ok"] is True
        reporter = threading.Thread(target=report_usage, args=(server, budget, str(status)))
        reporter.start()
        time.sleep(0.3)
        assert not (status / USAGE_NAME).exists()  # a connection is still open: the count may grow
        s.sendall(predict_frame(5))
        assert reply(s)["ok"] is True
        s.close()
        reporter.join(10)
        usage = json.loads((status / USAGE_NAME).read_text())
        assert (usage["rows"], usage["requests"], usage["connections_open"]) == (12, 2, 0)
        assert usage["inference"]["intra_op_threads"] == 1
    finally:
        server.shutdown()
        server.server_close()


def test_the_sidecar_process_writes_ready_then_usage_on_sigusr1(tmp_path, demo_files, data):
    """The real entry point in a subprocess: ready.json once it serves, usage.json on SIGUSR1; its
    stdout and stderr stay empty whatever the job sent."""
    import signal
    import subprocess
    import sys

    status = tmp_path / "status"
    status.mkdir()
    sock = tmp_path / "m.sock"
    env = {
        **os.environ,
        "EVALGATE_SOCKET": str(sock),
        "EVALGATE_MODEL": str(demo_files["model"]),
        "EVALGATE_STATUS_DIR": str(status),
        "EVALGATE_QUERY_BUDGET_ROWS": "100",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.inference.server"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_until(lambda: (status / "ready.json").exists(), timeout_s=30)
        with Client(str(sock)) as c:
            c.predict({"features": data[:9]})
            for _ in range(100):
                with contextlib.suppress(Exception):
                    c.predict({"features": data[:0]})
        proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: (status / USAGE_NAME).exists(), timeout_s=30)
        usage = json.loads((status / USAGE_NAME).read_text())
        assert usage["rows"] == 9 and usage["requests"] == 1
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert out == b"" and err == b""
