"""The sidecar protocol against a real onnxruntime server on a real unix socket."""

import socket
import struct
import threading

import numpy as np
import pytest

from service.inference.client import BudgetExceeded, Client, ModelError
from service.inference.protocol import PREFIX, ProtocolError, decode_tensors
from service.inference.server import make_server


@pytest.fixture(params=[True, False], ids=["shared-memory", "in-band"])
def sidecar(request, tmp_path, demo_files):
    path = str(tmp_path / "model.sock")
    server, budget = make_server(path, str(demo_files["model"]), max_rows=1000, max_batch=512, max_body=1 << 20,
                                 shared_memory=request.param)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield path, budget
    server.shutdown()
    server.server_close()


@pytest.fixture
def data(demo_files):
    with np.load(demo_files["data"]) as npz:
        return npz["x"], npz["y"]


def test_metadata_has_signature_and_no_weights(sidecar):
    with Client(sidecar[0]) as c:
        meta = c.metadata()
    assert meta["inputs"] == [{"name": "features", "dtype": "float32", "shape": [None, 16]}]
    assert meta["outputs"][0]["name"] == "probabilities"
    assert "W" not in str(meta)


def test_predict_matches_in_process_onnxruntime(sidecar, data, demo_files):
    import onnxruntime as ort

    x, _ = data
    with Client(sidecar[0]) as c:
        out = c.predict({"features": x[:100]})["probabilities"]
    ref = ort.InferenceSession(str(demo_files["model"]), providers=["CPUExecutionProvider"]).run(None, {"features": x[:100]})[0]
    np.testing.assert_array_equal(out, ref)
    assert sidecar[1].snapshot()["rows"] == 100


@pytest.mark.parametrize("inputs, code", [
    ({"nope": np.zeros((2, 16), np.float32)}, "unknown_input"),
    ({"features": np.zeros((2, 16), np.float64)}, "dtype_mismatch"),
    ({"features": np.zeros((2, 15), np.float32)}, "shape_mismatch"),
    ({"features": np.zeros((600, 16), np.float32)}, "too_large"),
])
def test_bad_requests_get_a_code_and_the_connection_goes_on(sidecar, inputs, code, data):
    with Client(sidecar[0]) as c:
        with pytest.raises(ModelError) as e:
            c.predict(inputs)
        assert e.value.code == code
        assert c.predict({"features": data[0][:2]})["probabilities"].shape == (2, 3)


def test_budget_is_counted_in_rows_and_refused_past_it(sidecar, data):
    x, _ = data
    with Client(sidecar[0]) as c:
        for i in range(0, 500, 250):
            c.predict({"features": x[i % len(x):i % len(x) + 250]})
        # 500 rows spent of 1000; a 512-row batch no longer fits
        c.predict({"features": np.resize(x, (450, 16)).astype(np.float32)})
        with pytest.raises(BudgetExceeded):
            c.predict({"features": x[:100]})
    snap = sidecar[1].snapshot()
    assert snap["rows"] == 950 and snap["budget_exceeded"] and snap["refused"] == 1


def raw(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    return s


def read_reply(s):
    header_len, body_len = struct.unpack(">II", s.recv(8, socket.MSG_WAITALL))
    return s.recv(header_len, socket.MSG_WAITALL)


@pytest.mark.parametrize("frame, code", [
    (PREFIX.pack(10 << 20, 0), b"too_large"),
    (PREFIX.pack(0, 64 << 20), b"too_large"),
    (PREFIX.pack(4, 0) + b"\xff\xfe\xfd\xfc", b"bad_frame"),
    (PREFIX.pack(2, 0) + b"[]", b"bad_frame"),
    (PREFIX.pack(16, 0) + b'{"op":"weights"}', b"unknown_op"),
    (PREFIX.pack(47, 0) + b'{"op":"predict","inputs":[{"name":"features"}]}', b"bad_frame"),
])
def test_malformed_frames_never_crash_the_sidecar(sidecar, frame, code, data):
    s = raw(sidecar[0])
    s.sendall(frame)
    assert code in read_reply(s)
    s.close()
    with Client(sidecar[0]) as c:  # the sidecar still serves
        assert c.predict({"features": data[0][:1]})["probabilities"].shape == (1, 3)


def test_half_a_frame_then_hangup_leaves_the_sidecar_up(sidecar, data):
    s = raw(sidecar[0])
    s.sendall(PREFIX.pack(100, 0) + b'{"op":')
    s.close()
    with Client(sidecar[0]) as c:
        assert c.metadata()["inputs"][0]["name"] == "features"


def test_decode_is_zero_copy_and_checks_lengths():
    body = memoryview(np.arange(6, dtype=np.float32).tobytes())
    out = decode_tensors([{"name": "a", "dtype": "float32", "shape": [2, 3]}], body)
    assert out["a"].base is not None and out["a"][1, 2] == 5
    with pytest.raises(ProtocolError):
        decode_tensors([{"name": "a", "dtype": "float32", "shape": [2, 4]}], body)
    with pytest.raises(ProtocolError):
        decode_tensors([{"name": "a", "dtype": "float32", "shape": [1, 3]}], body)
    with pytest.raises(ProtocolError):
        decode_tensors([{"name": "a", "dtype": "object", "shape": [1]}], body)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-memory", "in-band"])
def test_stream_answers_in_order_and_matches_single_requests(tmp_path, demo_files, data, shared):
    path = str(tmp_path / "big.sock")
    server, budget = make_server(path, str(demo_files["model"]), max_rows=100_000, max_batch=4096, shared_memory=shared)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        x = np.resize(data[0], (6000, 16)).astype(np.float32)  # 2000-row batches: 128 KB, over the shared-memory floor
        with Client(path) as c:
            streamed = [o["probabilities"] for o in
                        c.predict_stream(({"features": x[i:i + 2000]} for i in range(0, 6000, 2000)), depth=2)]
            assert bool(c._shared) == shared  # the big batches really went through shared memory
        with Client(path, shared_memory=False) as c:
            single = [c.predict({"features": x[i:i + 2000]})["probabilities"] for i in range(0, 6000, 2000)]
        for a, b in zip(streamed, single):
            np.testing.assert_array_equal(a, b)
        assert budget.snapshot()["rows"] == 12_000
    finally:
        server.shutdown()
        server.server_close()


def _attach(path, fd, slot=0):
    from service.inference.protocol import read_frame, send_frame_with_fd

    s = raw(path)
    send_frame_with_fd(s, {"op": "attach", "slot": slot}, fd)
    reply = read_frame(s)[0]
    s.close()
    return reply


def test_shared_memory_must_be_a_sealed_memfd(sidecar, tmp_path, demo_files):
    import fcntl
    import os

    unsealed = os.memfd_create("x", os.MFD_ALLOW_SEALING)
    os.ftruncate(unsealed, 1 << 20)
    plain_file = os.open(demo_files["data"], os.O_RDONLY)
    sealed = os.memfd_create("y", os.MFD_ALLOW_SEALING)
    os.ftruncate(sealed, 1 << 20)
    fcntl.fcntl(sealed, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
    try:
        assert _attach(sidecar[0], plain_file)["error"] in ("bad_frame", "unknown_op")
        assert _attach(sidecar[0], unsealed)["error"] in ("bad_frame", "unknown_op")
        assert _attach(sidecar[0], sealed, slot=9)["error"] in ("bad_frame", "unknown_op")
        good = _attach(sidecar[0], sealed)
        assert good.get("ok") is True or good["error"] == "unknown_op"  # unknown_op: shared memory is off
    finally:
        for fd in (unsealed, plain_file, sealed):
            os.close(fd)


def test_predict_from_an_unattached_slot_is_refused(sidecar):
    s = raw(sidecar[0])
    header = b'{"op":"predict","shm":true,"slot":1,"inputs":[{"name":"features","dtype":"float32","shape":[1,16]}]}'
    s.sendall(PREFIX.pack(len(header), 0) + header)
    assert b"bad_frame" in read_reply(s)


def test_slices_of_a_shared_dataset_travel_by_offset(sidecar, data, demo_files):
    """Where shared memory works, the dataset can live in it; a request then names an offset, and
    the answers are exactly those of the same rows sent in the socket."""
    import onnxruntime as ort
    from unittest import mock

    x, _ = data
    with Client(sidecar[0]) as c:
        shared = c.shared_array(x.shape, x.dtype)
        if shared is None:  # in-band only: nothing to share
            assert not c._use_shared()
            return
        shared[...] = x
        with mock.patch("service.inference.protocol.SharedBuffer.write", side_effect=AssertionError("copied")):
            batches = [out["probabilities"] for out in
                       c.predict_stream(({"features": shared[i:i + 128]} for i in range(0, 512, 128)), depth=2)]
        # A slice that is not contiguous in the buffer is copied as before, and still right.
        strided = c.predict({"features": np.ascontiguousarray(shared[1:200:2])})["probabilities"]
    ref = ort.InferenceSession(str(demo_files["model"]), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(np.concatenate(batches), ref.run(None, {"features": x[:512]})[0])
    np.testing.assert_array_equal(strided, ref.run(None, {"features": x[1:200:2]})[0])


@pytest.mark.parametrize("at", [-1, 1 << 40, "0", 1.5, True])
def test_an_offset_outside_the_shared_memory_is_refused(sidecar, at):
    import fcntl
    import json
    import os

    from service.inference.protocol import read_frame, send_frame_with_fd

    fd = os.memfd_create("d", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, 1 << 20)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
    s = raw(sidecar[0])
    try:
        send_frame_with_fd(s, {"op": "attach", "slot": 4}, fd)
        if read_frame(s)[0].get("error") == "unknown_op":
            return  # shared memory is off in this run
        header = json.dumps({"op": "predict", "shm": True, "slot": 4, "at": at,
                             "inputs": [{"name": "features", "dtype": "float32", "shape": [1, 16]}]}).encode()
        s.sendall(PREFIX.pack(len(header), 0) + header)
        assert b"bad_frame" in read_reply(s)
        # And one that runs past the end by a single byte.
        header = json.dumps({"op": "predict", "shm": True, "slot": 4, "at": (1 << 20) - 63,
                             "inputs": [{"name": "features", "dtype": "float32", "shape": [1, 16]}]}).encode()
        s.sendall(PREFIX.pack(len(header), 0) + header)
        assert b"bad_frame" in read_reply(s)
    finally:
        s.close()
        os.close(fd)


def test_a_frame_larger_than_the_socket_buffer_arrives_whole():
    """write_frame sends with one sendmsg where it can; what the kernel does not take goes after."""
    from service.inference.protocol import read_frame, write_frame

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = [np.arange(3 * 250_000, dtype=np.float32).reshape(3, -1), np.ones((7, 5), np.int64)]
    sender = threading.Thread(target=write_frame, args=(a, {"op": "x"}, big))
    sender.start()
    header, body = read_frame(b, max_body=1 << 24)
    sender.join()
    assert header == {"op": "x"}
    got = decode_tensors([{"name": "p", "dtype": "float32", "shape": [3, 250_000]},
                          {"name": "q", "dtype": "int64", "shape": [7, 5]}], body)
    np.testing.assert_array_equal(got["p"], big[0])
    np.testing.assert_array_equal(got["q"], big[1])
    a.close()
    b.close()
