"""Transfer files (the by-value path under gVisor, which cannot share a memfd between sandboxes): the
job writes a batch into its slot's file in a shared volume and names the slot; the sidecar reads the
declared bytes into its own buffer. Against a real onnxruntime server on a real unix socket: the
answers and the charges are those of the same batch sent in the socket, and a slot's file that is
not what the protocol says (a link, a FIFO, a directory, too short, absent) is a bad frame, never a
read of anything else, never a hang, and the connection goes on."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from service.inference.client import Client
from service.inference.protocol import PREFIX, read_frame, transfer_path
from service.inference.server import make_server


@contextmanager
def serving(tmp_path: Path, model: Path, transfer_dir: Path | None, **limits: object) -> Iterator[tuple[str, object]]:
    path = str(tmp_path / "model.sock")
    server, budget = make_server(
        path,
        str(model),
        max_rows=limits.pop("max_rows", 1_000_000),  # type: ignore[arg-type]
        max_batch=4096,
        shared_memory=False,
        transfer_dir=None if transfer_dir is None else str(transfer_dir),
        **limits,  # type: ignore[arg-type]
    )
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield path, budget
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def x(demo_files: dict[str, Path]) -> np.ndarray:
    with np.load(demo_files["data"]) as npz:
        # 6000 rows of 16 float32: 2000-row batches are 128 KB, over the floor for a side channel
        return np.resize(npz["x"], (6000, 16)).astype(np.float32)


def test_big_batches_go_through_the_file_and_are_answered_and_charged_as_in_the_socket(
    tmp_path: Path, demo_files: dict[str, Path], x: np.ndarray
) -> None:
    transfer = tmp_path / "transfer"
    transfer.mkdir()
    with serving(tmp_path, demo_files["model"], transfer) as (path, budget):
        with Client(path) as c:
            streamed = [
                o["probabilities"]
                for o in c.predict_stream(({"features": x[i : i + 2000]} for i in range(0, 6000, 2000)), depth=2)
            ]
            batched = c.predict_batched({"features": x}, 500)["probabilities"]
            assert sorted(c._transfers) == [0, 1]  # both slots of the stream were used
        assert sorted(os.listdir(transfer)) == ["slot-0", "slot-1"]
        by_file = budget.snapshot()  # type: ignore[attr-defined]
    with serving(tmp_path, demo_files["model"], None) as (path, budget):
        with Client(path) as c:
            assert c.metadata() and c._transfer_dir is None
            single = [c.predict({"features": x[i : i + 2000]})["probabilities"] for i in range(0, 6000, 2000)]
            in_band = c.predict_batched({"features": x}, 500)["probabilities"]
        by_socket = budget.snapshot()  # type: ignore[attr-defined]
    for a, b in zip(streamed, single, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(batched, in_band)
    assert (by_file["rows"], by_file["requests"]) == (by_socket["rows"], by_socket["requests"]) == (12_000, 15)


def test_a_batch_that_cannot_be_written_there_goes_in_the_socket(
    tmp_path: Path, demo_files: dict[str, Path], x: np.ndarray
) -> None:
    missing = tmp_path / "no-such-volume"  # as a full or vanished volume: the write fails
    with serving(tmp_path, demo_files["model"], missing) as (path, budget):
        with Client(path) as c:
            out = c.predict_batched({"features": x[:2000]}, 500)["probabilities"]
            assert c._transfer_dir == str(missing)
        with Client(path, shared_memory=False) as c:  # no side channel asked for: the socket
            ref = c.predict_batched({"features": x[:2000]}, 500)["probabilities"]
    np.testing.assert_array_equal(out, ref)
    assert budget.snapshot()["rows"] == 4000  # type: ignore[attr-defined]


def _ask(path: str, header: dict[str, object]) -> dict[str, object]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)  # a sidecar waiting on a FIFO would show here as a timeout
    s.connect(path)
    try:
        raw = json.dumps(header).encode()
        s.sendall(PREFIX.pack(len(raw), 0) + raw)
        frame = read_frame(s)
        assert frame is not None
        return frame[0]
    finally:
        s.close()


def _file_request(slot: object = 0, rows: int = 1000) -> dict[str, object]:
    spec = [{"name": "features", "dtype": "float32", "shape": [rows, 16]}]
    return {"op": "predict", "file": True, "slot": slot, "inputs": spec}


@pytest.mark.parametrize(
    "make",
    [
        lambda slot, model: None,  # nothing there
        lambda slot, model: slot.symlink_to(model),  # a link to the sidecar's own model file
        lambda slot, model: os.mkfifo(slot),  # a FIFO: opening it must not wait for a writer
        lambda slot, model: slot.mkdir(),
        lambda slot, model: slot.write_bytes(b"\0" * (1000 * 16 * 4 - 1)),  # one byte short of what it declares
    ],
    ids=["absent", "symlink-to-the-model", "fifo", "directory", "short"],
)
def test_a_slot_file_that_is_not_a_batch_is_a_bad_frame(
    tmp_path: Path, demo_files: dict[str, Path], x: np.ndarray, make
) -> None:  # type: ignore[no-untyped-def]
    transfer = tmp_path / "transfer"
    transfer.mkdir()
    make(Path(transfer_path(str(transfer), 0)), demo_files["model"])
    with serving(tmp_path, demo_files["model"], transfer) as (path, budget):
        for _ in range(2):  # answered, and answered again: the connection's stream stays in step
            reply = _ask(path, _file_request())
            assert (reply["ok"], reply["error"]) == (False, "bad_frame")
        assert budget.snapshot()["rows"] == 0 and budget.snapshot()["protocol_errors"] == 2  # type: ignore[attr-defined]
        with Client(path, shared_memory=False) as c:  # the sidecar still serves
            assert c.predict({"features": x[:3]})["probabilities"].shape == (3, 3)


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (_file_request(slot=-1), "bad_frame"),
        (_file_request(slot=4), "bad_frame"),
        (_file_request(slot="0"), "bad_frame"),
        (_file_request(slot=True), "bad_frame"),
        (_file_request(rows=1 << 22), "too_large"),  # 256 MiB declared: more than a frame may carry
    ],
    ids=["negative-slot", "slot-past-the-last", "slot-as-text", "slot-as-bool", "over-the-frame-limit"],
)
def test_bad_slots_and_sizes_are_refused_before_any_read(
    tmp_path: Path, demo_files: dict[str, Path], request_: dict[str, object], error: str
) -> None:
    transfer = tmp_path / "transfer"
    transfer.mkdir()
    for slot in range(4):
        Path(transfer_path(str(transfer), slot)).write_bytes(b"\0" * (1 << 20))
    with serving(tmp_path, demo_files["model"], transfer) as (path, budget):
        assert _ask(path, request_)["error"] == error
        assert budget.snapshot()["rows"] == 0  # type: ignore[attr-defined]


def test_without_a_transfer_volume_a_file_request_is_a_bad_frame(tmp_path: Path, demo_files: dict[str, Path]) -> None:
    with serving(tmp_path, demo_files["model"], None) as (path, _budget):
        assert _ask(path, _file_request())["error"] == "bad_frame"
