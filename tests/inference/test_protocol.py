"""The sidecar protocol against a real onnxruntime server on a real unix socket."""

import contextlib
import socket
import struct
import threading

import numpy as np
import pytest

from service.inference.client import Client
from service.inference.contract import BudgetExceeded, ModelError
from service.inference.protocol import PREFIX, decode_tensors
from service.inference.server import make_server


@contextlib.contextmanager
def serving(path, model, **limits):
    """A real sidecar server on a real unix socket, in a thread: yields (socket path, budget)."""
    server, budget = make_server(str(path), str(model), **limits)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield str(path), budget
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(params=[True, False], ids=["shared-memory", "in-band"])
def sidecar(request, tmp_path, demo_files):
    with serving(
        tmp_path / "model.sock",
        demo_files["model"],
        max_rows=1000,
        max_batch=512,
        max_body=1 << 20,
        shared_memory=request.param,
    ) as served:
        yield served


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
    ref = ort.InferenceSession(str(demo_files["model"]), providers=["CPUExecutionProvider"]).run(
        None, {"features": x[:100]}
    )[0]
    np.testing.assert_array_equal(out, ref)
    assert sidecar[1].snapshot()["rows"] == 100


@pytest.mark.parametrize(
    "inputs, code",
    [
        ({"nope": np.zeros((2, 16), np.float32)}, "unknown_input"),
        ({"features": np.zeros((2, 16), np.float64)}, "dtype_mismatch"),
        ({"features": np.zeros((2, 15), np.float32)}, "shape_mismatch"),
        ({"features": np.zeros((600, 16), np.float32)}, "too_large"),
    ],
)
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
            c.predict({"features": x[i % len(x) : i % len(x) + 250]})
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
    header_len, _ = struct.unpack(">II", s.recv(8, socket.MSG_WAITALL))
    return s.recv(header_len, socket.MSG_WAITALL)


@pytest.mark.parametrize(
    "frame, code",
    [
        (PREFIX.pack(10 << 20, 0), b"too_large"),
        (PREFIX.pack(0, 64 << 20), b"too_large"),
        (PREFIX.pack(4, 0) + b"\xff\xfe\xfd\xfc", b"bad_frame"),
        (PREFIX.pack(2, 0) + b"[]", b"bad_frame"),
        (PREFIX.pack(16, 0) + b'{"op":"weights"}', b"unknown_op"),
        (PREFIX.pack(47, 0) + b'{"op":"predict","inputs":[{"name":"features"}]}', b"bad_frame"),
    ],
)
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
    with pytest.raises(ModelError):
        decode_tensors([{"name": "a", "dtype": "float32", "shape": [2, 4]}], body)
    with pytest.raises(ModelError):
        decode_tensors([{"name": "a", "dtype": "float32", "shape": [1, 3]}], body)
    with pytest.raises(ModelError):
        decode_tensors([{"name": "a", "dtype": "object", "shape": [1]}], body)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-memory", "in-band"])
def test_stream_answers_in_order_and_matches_single_requests(tmp_path, demo_files, data, shared):
    with serving(
        tmp_path / "big.sock", demo_files["model"], max_rows=100_000, max_batch=4096, shared_memory=shared
    ) as (path, budget):
        x = np.resize(data[0], (6000, 16)).astype(np.float32)  # 2000-row batches: 128 KB, over the shared-memory floor
        with Client(path) as c:
            streamed = [
                o["probabilities"]
                for o in c.predict_stream(({"features": x[i : i + 2000]} for i in range(0, 6000, 2000)), depth=2)
            ]
            assert bool(c._shared) == shared  # the big batches really went through shared memory
        with Client(path, shared_memory=False) as c:
            single = [c.predict({"features": x[i : i + 2000]})["probabilities"] for i in range(0, 6000, 2000)]
        for a, b in zip(streamed, single, strict=True):
            np.testing.assert_array_equal(a, b)
        assert budget.snapshot()["rows"] == 12_000


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
    os.posix_fallocate(sealed, 0, 1 << 20)  # fully backed: a memfd with holes is refused too
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


@pytest.mark.parametrize("at", [-1, 1 << 40, "0", 1.5, True])
def test_an_offset_outside_the_shared_memory_is_refused(sidecar, at):
    import fcntl
    import json
    import os

    from service.inference.protocol import read_frame, send_frame_with_fd

    fd = os.memfd_create("d", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, 1 << 20)
    os.posix_fallocate(fd, 0, 1 << 20)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
    s = raw(sidecar[0])
    try:
        send_frame_with_fd(s, {"op": "attach", "slot": 4}, fd)
        attached = read_frame(s)[0]
        if attached.get("error") == "unknown_op":
            return  # shared memory is off in this run
        assert attached == {"ok": True}
        header = json.dumps(
            {
                "op": "predict",
                "shm": True,
                "slot": 4,
                "at": at,
                "inputs": [{"name": "features", "dtype": "float32", "shape": [1, 16]}],
            }
        ).encode()
        s.sendall(PREFIX.pack(len(header), 0) + header)
        assert b"bad_frame" in read_reply(s)
        # And one that runs past the end by a single byte.
        header = json.dumps(
            {
                "op": "predict",
                "shm": True,
                "slot": 4,
                "at": (1 << 20) - 63,
                "inputs": [{"name": "features", "dtype": "float32", "shape": [1, 16]}],
            }
        ).encode()
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
    got = decode_tensors(
        [{"name": "p", "dtype": "float32", "shape": [3, 250_000]}, {"name": "q", "dtype": "int64", "shape": [7, 5]}],
        body,
    )
    np.testing.assert_array_equal(got["p"], big[0])
    np.testing.assert_array_equal(got["q"], big[1])
    a.close()
    b.close()


# -- predict_batched: the sidecar walks a span of rows in batches ---------------------------------


def _reference(demo_files, x, batch):
    import onnxruntime as ort

    ref = ort.InferenceSession(str(demo_files["model"]), providers=["CPUExecutionProvider"])
    return np.concatenate([ref.run(None, {"features": x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def _count_requests(client):
    """Wraps the client's sender to count the requests that cross the socket."""
    sent = []
    real = client._send

    def send(inputs, slot, pending, op):
        sent.append(op["op"])
        real(inputs, slot, pending, op)

    client._send = send
    return sent


def test_batched_equals_batch_by_batch_and_is_charged_as_such(sidecar, data, demo_files):
    x, _ = data  # 600 rows: nine batches of 64 and a tail of 24
    with Client(sidecar[0]) as c:
        sent = _count_requests(c)
        out = c.predict_batched({"features": x}, 64)["probabilities"]
    np.testing.assert_array_equal(out, _reference(demo_files, x, 64))
    assert sent == ["predict_batched"]  # one request crossed the socket
    snap = sidecar[1].snapshot()
    assert snap["rows"] == 600 and snap["requests"] == 10  # ...charged as the ten batches it ran


def test_long_inputs_are_cut_into_spans_of_whole_batches(sidecar, data, demo_files, monkeypatch):
    import service.inference.client as client_mod

    x, _ = data
    monkeypatch.setattr(client_mod, "SPAN_BYTES", 100 * 16 * 4)  # about 100 rows of input a request
    with Client(sidecar[0]) as c:
        sent = _count_requests(c)
        out = c.predict_batched({"features": x[:550]}, 32)["probabilities"]
    np.testing.assert_array_equal(out, _reference(demo_files, x[:550], 32))
    assert len(sent) == 6  # spans of 96 rows (three batches of 32): 5 whole, then 70
    assert sidecar[1].snapshot()["requests"] == 18  # batches: 5 × 3 + 3 (32 + 32 + 6)


def test_a_span_over_the_budget_is_refused_whole(sidecar, data):
    x, _ = data
    with Client(sidecar[0]) as c:
        c.predict({"features": x[:500]})
        c.predict({"features": x[:400]})  # 900 of 1000 rows spent
        with pytest.raises(BudgetExceeded):
            c.predict_batched({"features": x[:200]}, 50)
        snap = sidecar[1].snapshot()
        assert snap["rows"] == 900 and snap["requests"] == 2  # nothing of the refused span was spent
        assert c.predict_batched({"features": x[:100]}, 50)["probabilities"].shape == (100, 3)
    assert sidecar[1].snapshot()["rows"] == 1000


def test_a_span_counts_one_request_per_batch_against_the_request_budget(tmp_path, demo_files, data):
    with serving(tmp_path / "req.sock", demo_files["model"], max_rows=10_000, max_requests=5) as (path, budget):
        with Client(path) as c:
            with pytest.raises(BudgetExceeded):
                c.predict_batched({"features": data[0][:60]}, 10)  # six batches: six requests
            assert c.predict_batched({"features": data[0][:50]}, 10)["probabilities"].shape == (50, 3)
        assert budget.snapshot()["requests"] == 5


@pytest.mark.parametrize(
    "batch, code",
    [
        (0, b"bad_frame"),
        (-3, b"bad_frame"),
        (True, b"bad_frame"),
        ("64", b"bad_frame"),
        (None, b"bad_frame"),
        (513, b"too_large"),
    ],
)
def test_a_bad_batch_size_is_refused_and_the_connection_goes_on(sidecar, batch, code, data):
    import json

    from service.inference.protocol import read_frame, write_frame

    x = data[0][:8]
    header = {"op": "predict_batched", "inputs": [{"name": "features", "dtype": "float32", "shape": [8, 16]}]}
    s = raw(sidecar[0])
    try:
        write_frame(s, {**header, "batch": batch}, [x])
        assert code in read_reply(s)
        write_frame(s, {**header, "batch": 4}, [x])
        reply, _ = read_frame(s)
        assert reply["ok"] and reply["outputs"][0]["shape"] == [8, 3], json.dumps(reply)
    finally:
        s.close()
    assert sidecar[1].snapshot()["rows"] == 8  # the refused requests spent nothing


def _scalar_model(path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["features"], ["total"], keepdims=0)],
        "sum",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, [])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_run_batched_paces_each_batch_bounds_its_output_and_wants_rows(tmp_path, demo_files, data):
    from service.inference.model import Model

    x = data[0][:100]
    model = Model(str(demo_files["model"]), threads=1)
    paced = []
    out = model.run_batched({"features": x}, 100, 30, lambda: paced.append(1), max_bytes=1 << 20)
    assert out[0].shape == (100, 3) and len(paced) == 3  # four batches: the first waited as the request
    with pytest.raises(ModelError) as e:
        model.run_batched({"features": x}, 100, 30, lambda: None, max_bytes=500)  # 30 × 3 × 4 bytes a batch
    assert e.value.code == "too_large"
    scalar = Model(str(_scalar_model(tmp_path / "sum.onnx")), threads=1)
    with pytest.raises(ModelError) as e:
        scalar.run_batched({"features": x}, 100, 30, lambda: None, max_bytes=1 << 20)
    assert e.value.code == "shape_mismatch"


def _echo_model(path, width):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "echo",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", width])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_large_requests_and_answers_in_flight_do_not_deadlock(tmp_path):
    """Answers as large as the requests, in-band, two in flight: each is far past the socket
    buffers, so the sidecar blocks writing answer k while the client writes request k+1. The client
    reads answers while its send is stuck, so both go on."""
    width = 4096  # 16 KB a row: a 600-row request or answer is 9.8 MB, past the 8 MB socket buffers
    x = np.random.default_rng(0).standard_normal((2400, width)).astype(np.float32)
    with (
        serving(
            tmp_path / "echo.sock",
            _echo_model(tmp_path / "echo.onnx", width),
            max_rows=10_000,
            max_body=16 << 20,
            shared_memory=False,
        ) as (path, _),
        Client(path, timeout=20) as c,
    ):
        out = [o["y"] for o in c.predict_stream(({"x": x[i : i + 600]} for i in range(0, 2400, 600)), depth=2)]
        span = c.predict_batched({"x": x}, 100)["y"]  # in-band spans of 16 MB, answers as large
    np.testing.assert_array_equal(np.concatenate(out), x)
    np.testing.assert_array_equal(span, x)


@pytest.mark.parametrize(
    "policy, check",
    [
        ({"kind": "full"}, lambda out, ref: np.array_equal(out, ref)),
        ({"kind": "rounded", "digits": 2}, lambda out, ref: np.array_equal(out, np.round(ref, 2))),
        (
            {"kind": "top_k", "k": 1},
            lambda out, ref: np.all((out > 0).sum(axis=1) == 1) and np.allclose(out.max(axis=1), ref.max(axis=1)),
        ),
        ({"kind": "labels"}, lambda out, ref: out.dtype == np.int64 and np.array_equal(out, ref.argmax(axis=1))),
    ],
    ids=["full", "rounded", "top_k", "labels"],
)
def test_the_output_policy_is_what_a_job_can_see(tmp_path, demo_files, data, policy, check):
    """The operator's output policy, enforced by the sidecar: nothing finer ever crosses the socket."""
    import onnxruntime as ort

    x, _ = data
    ref = ort.InferenceSession(str(demo_files["model"]), providers=["CPUExecutionProvider"]).run(
        None, {"features": x[:200]}
    )[0]
    with (
        serving(
            tmp_path / "policy.sock",
            demo_files["model"],
            max_rows=10_000,
            output_policy=policy,
            score_outputs=["probabilities"],
        ) as (path, _),
        Client(path) as c,
    ):
        meta = c.metadata()
        out = c.predict({"features": x[:200]})["probabilities"]
        batched = c.predict_batched({"features": x[:200]}, 64)["probabilities"]
    assert check(out, ref) and np.array_equal(out, batched)
    assert meta["output_policy"] == policy
    if policy["kind"] == "labels":
        assert meta["outputs"][0] == {"name": "probabilities", "dtype": "int64", "shape": [None]}


def test_a_zipmap_output_is_served_as_a_tensor_in_label_order(tmp_path):
    from skl2onnx import to_onnx
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    x, y = make_classification(n_samples=200, n_features=5, n_informative=3, n_classes=3, random_state=0)
    x = x.astype(np.float32)
    model = LogisticRegression(max_iter=500).fit(x, y)
    path = tmp_path / "zipmap.onnx"
    path.write_bytes(to_onnx(model, x[:1], target_opset=17).SerializeToString())
    with serving(tmp_path / "zip.sock", path, max_rows=1000) as (sock, _), Client(sock) as c:
        meta = c.metadata()
        outs = c.predict({"X": x[:50]})
    assert {"name": "output_probability", "dtype": "float32", "shape": [None, None], "zipmap": True} in meta["outputs"]
    np.testing.assert_allclose(outs["output_probability"], model.predict_proba(x[:50]), atol=1e-5)
    assert outs["output_label"].tolist() == model.predict(x[:50]).tolist()


def test_a_shape_whose_size_overflows_64_bits_is_a_bad_frame_not_an_empty_tensor():
    """2**30 × 2**30 × 16 elements: numpy's int64 product of the shape wraps to 0, which would have
    passed the length check and failed later, inside the sidecar, as an internal error."""
    from service.inference.contract import ErrorCode, ModelError
    from service.inference.protocol import decode_tensors

    spec = [{"name": "x", "dtype": "uint8", "shape": [2**30, 2**30, 16]}]
    with pytest.raises(ModelError) as e:
        decode_tensors(spec, memoryview(b""))
    assert e.value.code == ErrorCode.BAD_FRAME
