"""Dataset rows by reference (service/inference/rows.py): a real sidecar server in a thread, on a
real socket, with the demo dataset. Rows named are answered and charged exactly as the same rows
sent by value; names outside the dataset are refused and cost nothing."""

from __future__ import annotations

import socket
import struct
import threading
import zipfile

import numpy as np
import pytest

from service.inference import rows
from service.inference.client import Client
from service.inference.contract import ModelError
from service.inference.protocol import describe, write_frame
from service.inference.server import make_server


@pytest.fixture
def served(tmp_path, demo_files):  # type: ignore[no-untyped-def]
    server, budget = make_server(
        str(tmp_path / "rows.sock"),
        str(demo_files["model"]),
        max_rows=100_000,
        max_batch=512,
        dataset_path=str(demo_files["data"]),
    )
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield str(tmp_path / "rows.sock"), budget
    finally:
        server.shutdown()
        server.server_close()


def test_what_an_array_of_dataset_rows_knows_about_itself(demo_files):
    x = rows.load(str(demo_files["data"]))
    n = len(x)
    assert rows.reference(x) == range(n)
    assert rows.reference(x[10:20]) == range(10, 20) and rows.reference(x[10:20][2:5]) == range(12, 15)
    assert rows.reference(x[::3]) == range(0, n, 3)
    idx = np.array([5, 1, 5, 599])
    np.testing.assert_array_equal(rows.reference(x[idx]), idx)
    np.testing.assert_array_equal(rows.reference(x[100:200][[0, 50]]), [100, 150])
    mask = np.zeros(n, bool)
    mask[[3, 7]] = True
    np.testing.assert_array_equal(rows.reference(x[mask]), [3, 7])
    np.testing.assert_array_equal(rows.reference(x[10:20, :]), np.arange(10, 20))
    # Anything else is not (only) dataset rows: it goes by value.
    for other in (x[:, :3], x[5], x.copy(), x * 2, x.astype(np.float64), x[10:10], np.asarray(x) + 0):
        assert rows.reference(other) is None
    with pytest.raises(ValueError, match="read-only"):
        x[0, 0] = 1.0  # the rows named are exactly the rows held


def test_rows_named_are_answered_and_charged_as_the_same_rows_sent(served, demo_files):
    path, budget = served
    x = rows.load(str(demo_files["data"]))
    idx = np.random.default_rng(1).permutation(len(x))[:250]
    with Client(path, shared_memory=False) as c:
        for picked, batch in ((x[100:500], 64), (x[idx], 50), (x[::7], 16)):
            before = budget.snapshot()
            named = c.predict_rows(rows.reference(picked), batch)["probabilities"]
            mid = budget.snapshot()
            sent = c.predict_batched({"features": np.array(picked)}, batch)["probabilities"]
            after = budget.snapshot()
            np.testing.assert_array_equal(named, sent)
            assert mid["rows"] - before["rows"] == after["rows"] - mid["rows"] == len(picked)
            assert mid["requests"] - before["requests"] == after["requests"] - mid["requests"]


def test_a_range_goes_as_one_request_that_carries_no_rows(served, demo_files, monkeypatch):
    import service.inference.client as client_mod

    path, _ = served
    x = rows.load(str(demo_files["data"]))
    frames: list[tuple[dict, int]] = []
    real = client_mod.write_frame

    def counting(sock, header, tensors=()):  # type: ignore[no-untyped-def]
        frames.append((header, sum(t.nbytes for t in tensors)))
        return real(sock, header, tensors)

    monkeypatch.setattr(client_mod, "write_frame", counting)
    with Client(path, shared_memory=False) as c:
        c.metadata()
        frames.clear()
        out = c.predict_rows(rows.reference(x), 128)["probabilities"]
    assert len(out) == len(x)
    assert [(h["op"], h["rows"], n) for h, n in frames] == [("predict_batched", {"start": 0, "stop": len(x)}, 0)]


@pytest.mark.parametrize(
    "spec, index",
    [
        ({"start": -1, "stop": 10}, None),
        ({"start": 0, "stop": 10**9}, None),
        ({"start": 10, "stop": 5}, None),
        ({"start": "0", "stop": 5}, None),
        ({"start": True, "stop": 5}, None),
        ({"index": "rows"}, np.array([0, 600], dtype=np.int64)),
        ({"index": "rows"}, np.array([-1], dtype=np.int64)),
        ({"index": "rows"}, np.array([1, 2], dtype=np.int32)),
        ("0:10", None),
    ],
)
def test_names_outside_the_dataset_are_refused_and_cost_nothing(served, spec, index):
    path, budget = served
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    header = {"op": "predict_batched", "batch": 64, "rows": spec}
    tensors = [] if index is None else [index]
    if index is not None:
        header["inputs"] = [describe("rows", index)]
    write_frame(s, header, tensors)
    length, _ = struct.unpack(">II", s.recv(8, socket.MSG_WAITALL))
    reply = s.recv(length, socket.MSG_WAITALL)
    s.close()
    assert b"bad_frame" in reply and budget.snapshot()["rows"] == 0


def test_a_sidecar_without_the_dataset_refuses_rows(tmp_path, demo_files):
    server, _ = make_server(str(tmp_path / "no.sock"), str(demo_files["model"]), max_rows=1000)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with Client(str(tmp_path / "no.sock")) as c, pytest.raises(ModelError, match="no dataset"):
            c.predict_rows(range(0, 10), 10)
    finally:
        server.shutdown()
        server.server_close()


def test_a_compressed_dataset_is_read_once_into_the_allowance(tmp_path, demo_files):
    with np.load(demo_files["data"]) as npz:
        x, y = npz["x"], npz["y"]
    packed = tmp_path / "packed.npz"
    np.savez_compressed(packed, x=x, y=y)
    with zipfile.ZipFile(packed) as zf:
        assert zf.getinfo("x.npy").compress_type != zipfile.ZIP_STORED
    taken: list[int] = []
    features = rows.Features(str(packed), take=taken.append)
    np.testing.assert_array_equal(features.select({"start": 3, "stop": 9}, None), x[3:9])
    assert taken == [x.nbytes]  # read once, charged once
    stored = rows.Features(str(demo_files["data"]), take=taken.append).array()
    assert isinstance(stored.base, np.memmap) and taken == [x.nbytes]  # mapped: nothing charged


def test_a_gather_larger_than_the_allowance_is_busy_not_an_oom(tmp_path, demo_files):
    server, budget = make_server(
        str(tmp_path / "tight.sock"),
        str(demo_files["model"]),
        max_rows=10**9,
        max_batch=512,
        dataset_path=str(demo_files["data"]),
        allowance_bytes=64 << 10,
    )
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        # The index (4,000 rows: 32 KB) fits the 64 KB allowance; the rows it gathers (16 features of
        # float32: 256 KB) do not, and are refused before they are gathered.
        with Client(str(tmp_path / "tight.sock"), shared_memory=False) as c, pytest.raises(ModelError, match="busy"):
            c.predict_rows(np.zeros(4000, dtype=np.int64), 512)
        assert budget.snapshot()["rows"] == 0
    finally:
        server.shutdown()
        server.server_close()
