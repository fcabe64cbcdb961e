"""Client side of the inference socket, used by the job SDK (and by tests and benchmarks)."""

from __future__ import annotations

import os
import select
import socket
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from . import rows as dataset_rows
from .contract import ErrorCode, ModelError, channel_error
from .protocol import (
    MAX_BODY,
    SharedBuffer,
    TransferFile,
    decode_tensors,
    describe,
    frame_parts,
    read_frame,
    send_frame_with_fd,
    tune,
    write_frame,
)

if TYPE_CHECKING:
    pass

SHARED_MIN_BYTES = 64 << 10  # below this a copy through the socket is cheaper than the bookkeeping
SPAN_BYTES = 16 << 20  # the most input one batched request copies, and the most output it asks back
SPAN_UNKNOWN_BATCHES = 16  # batches a request spans when the model's output row size is not declared
MAX_SLOTS = 4
CONNECT_RETRY_S = 0.005


def connect(path: str, timeout: float | None, wait_s: float) -> socket.socket:
    """Connect, waiting up to wait_s for the sidecar to create its socket (the job container may
    start before the sidecar is listening)."""
    deadline = time.monotonic() + wait_s
    while True:
        sock = tune(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() >= deadline:
                raise ModelError(ErrorCode.UNAVAILABLE, "the model sidecar did not come up") from None
            # A fixed short wait, not a growing one: the job starts beside the sidecar, and each
            # try is one system call; a backoff would add up to its last wait to every job's start.
            time.sleep(CONNECT_RETRY_S)


class Client:
    def __init__(self, path: str, timeout: float | None = 300.0, wait_s: float = 60.0, shared_memory: bool = True):
        self.path, self.timeout = path, timeout
        self.sock = connect(path, timeout, wait_s)
        self._want_shared = shared_memory
        self._shared_ok: bool | None = None
        self._shared: dict[int, SharedBuffer] = {}
        self._transfer_dir: str | None = None  # the sidecar's transfer volume (gVisor), from its metadata
        self._transfers: dict[int, TransferFile] = {}
        self._early: deque[tuple[dict[str, Any], memoryview]] = deque()  # answers read while sending (see _write)
        self._metadata: dict[str, Any] | None = None
        self._max_body = MAX_BODY  # the sidecar's frame limit, from its metadata
        self._max_batch: int | None = None  # the most rows the sidecar runs at once, from its metadata
        self._row_bytes: dict[tuple[str, ...] | None, tuple[int, bool]] = {}

    def close(self) -> None:
        for buf in self._shared.values():
            buf.close()
        for file in self._transfers.values():
            file.close()
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, header: dict[str, Any], tensors: Sequence[np.ndarray] = ()) -> tuple[dict[str, Any], memoryview]:
        write_frame(self.sock, header, tensors)
        return self._reply()

    def _reply(self) -> tuple[dict[str, Any], memoryview]:
        """The next answer (one read ahead by _write first), raised as an error if it is one."""
        reply, body = self._early.popleft() if self._early else self._read()
        if not reply.get("ok"):
            raise channel_error(str(reply.get("error")), str(reply.get("detail", "")))
        return reply, body

    def _read(self) -> tuple[dict[str, Any], memoryview]:
        frame = read_frame(self.sock)  # a bad frame raises ModelError
        if frame is None:
            raise ModelError(ErrorCode.CLOSED, "the sidecar closed the connection")
        return frame

    def _write(self, header: dict[str, Any], arrays: list[np.ndarray], owed: int) -> None:
        """Send one frame with `owed` answers still to come. The sidecar answers a connection's
        requests one at a time and blocks while the socket takes no more of an answer; were we
        blocked sending it a large request at that moment, neither would ever move. So while the
        socket takes no more of this frame, answers that arrive are read and kept for _reply."""
        owed -= len(self._early)
        if owed <= 0:
            write_frame(self.sock, header, arrays)  # the sidecar has nothing to send us: plain blocking send
            return
        poller = select.poll()
        for part in frame_parts(header, arrays):
            while part.nbytes:
                poller.register(self.sock, select.POLLOUT | (select.POLLIN if owed > 0 else 0))
                events = poller.poll(None if self.timeout is None else self.timeout * 1000)
                if not events:
                    raise ModelError(ErrorCode.TIMEOUT, "the sidecar took neither the request nor gave an answer")
                mask = events[0][1]
                if owed > 0 and mask & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    self._early.append(self._read())  # a whole answer: the sidecar is writing it now
                    owed -= 1
                if mask & select.POLLOUT:
                    try:
                        part = part[self.sock.send(part, socket.MSG_DONTWAIT) :]
                    except BlockingIOError:
                        pass

    def metadata(self) -> dict[str, Any]:
        reply = self._call({"op": "metadata"})[0]
        self._shared_ok = bool(reply.get("shared_memory")) and self._want_shared
        transfer_dir = reply.get("transfer_dir")
        self._transfer_dir = transfer_dir if isinstance(transfer_dir, str) and self._want_shared else None
        self._metadata = reply["metadata"]
        limits = reply.get("limits", {})
        self._max_body = int(limits.get("max_body", MAX_BODY))
        self._max_batch = int(limits["max_batch"])
        metadata: dict[str, Any] = reply["metadata"]
        return metadata

    @property
    def max_batch(self) -> int:
        """The most rows the sidecar runs in one batch."""
        if self._max_batch is None:
            self.metadata()
        assert self._max_batch is not None
        return self._max_batch

    def predict(self, inputs: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """One batch: all the rows of `inputs`. `outputs`: the outputs wanted (default: every one served)."""
        return next(self._stream([inputs], 1, _op("predict", outputs)))

    def predict_stream(
        self, batches: Iterable[dict[str, np.ndarray]], depth: int = 2
    ) -> Iterator[dict[str, np.ndarray]]:
        """Predict batch after batch with up to `depth` requests queued on this connection: while
        the sidecar runs the model on one, the next is already waiting for it. Answers come in order.
        Each queued request has its own shared-memory slot, reused only after its answer arrived."""
        return self._stream(batches, depth, _op("predict", None))

    def predict_batched(
        self, inputs: dict[str, np.ndarray], batch_size: int, depth: int = 2, outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """All rows of `inputs` in batches of `batch_size`, batched by the sidecar: one request
        carries a span of many batches, and the sidecar runs them one by one, each exactly as
        predict() would. Same outputs and the same budget (rows, and one request per batch) as
        predicting batch by batch, without a round trip per batch. Inputs go in spans of at most
        SPAN_BYTES; rows of the job's dataset are better named than sent (predict_rows)."""
        names = list(inputs)
        arrays = {n: np.ascontiguousarray(inputs[n]) for n in names}
        rows = len(arrays[names[0]]) if names and arrays[names[0]].ndim else 0
        if rows == 0 or any(a.ndim == 0 or len(a) != rows for a in arrays.values()):
            return self.predict(arrays, outputs)  # the sidecar says what is wrong, or answers the empty batch
        span = self._span_rows(sum(a.nbytes for a in arrays.values()) // rows, batch_size, outputs)
        spans = ({n: a[i : i + span] for n, a in arrays.items()} for i in range(0, rows, span))
        outs = list(self._stream(spans, depth, {**_op("predict_batched", outputs), "batch": batch_size}))
        return outs[0] if len(outs) == 1 else {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

    def predict_rows(
        self,
        rows: range | np.ndarray,
        batch_size: int,
        depth: int = 2,
        outputs: list[str] | None = None,
        copied_row_bytes: int = 0,
    ) -> dict[str, np.ndarray]:
        """Rows of the job's dataset, named instead of sent (rows.py): answers and charges exactly as
        predict_batched() on the same rows. A range is one request however long, unless the sidecar
        must copy its rows (`copied_row_bytes`: their size there, when its dtype is not the model's);
        an index goes in requests of whole batches within SPAN_BYTES (8 bytes a row, plus the copy)."""
        n = len(rows)
        if n == 0:
            raise ModelError(ErrorCode.EMPTY_BATCH, "no rows to predict")
        per_row = copied_row_bytes + (0 if isinstance(rows, range) and rows.step == 1 else 8 + copied_row_bytes)
        span = self._span_rows(per_row, batch_size, outputs)
        spans = (rows[i : i + span] for i in range(0, n, span))
        op = {**_op("predict_batched", outputs), "batch": batch_size}
        outs = list(self._stream((_RowsRequest(r) for r in spans), depth, op))
        return outs[0] if len(outs) == 1 else {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

    def _span_rows(self, copied: int, batch_size: int, outputs: list[str] | None) -> int:
        """Rows per request: whole batches, within SPAN_BYTES of copied input (`copied` bytes a row)
        and of output."""
        out_row, declared = self._output_row_bytes(outputs)
        span_bytes = min(SPAN_BYTES, self._max_body)  # what one frame may carry, either way
        batches = span_bytes // max(copied, out_row, 1) // batch_size
        if not declared:  # the output's size is unknown: a few batches a request
            batches = min(batches, SPAN_UNKNOWN_BATCHES)
        return max(1, batches) * batch_size

    def _output_row_bytes(self, outputs: list[str] | None) -> tuple[int, bool]:
        """Bytes of output a row gives (of `outputs`, or all), and whether the model declares it;
        worked out once per set of outputs (a job asks the same many times)."""
        key = None if outputs is None else tuple(outputs)
        known = self._row_bytes.get(key)
        if known is not None:
            return known
        out_row, declared = 0, True
        for o in (self._metadata or self.metadata())["outputs"]:
            if outputs is not None and o["name"] not in outputs:
                continue
            dims = o["shape"][1:]
            if not o["shape"] or not all(isinstance(d, int) for d in dims):
                declared = False
                break
            out_row += int(np.prod(dims, dtype=np.int64)) * np.dtype(o["dtype"]).itemsize
        self._row_bytes[key] = (out_row, declared)
        return out_row, declared

    def _stream(
        self, requests: Iterable[dict[str, np.ndarray] | _RowsRequest], depth: int, op: dict[str, Any]
    ) -> Iterator[dict[str, np.ndarray]]:
        depth = max(1, min(depth, MAX_SLOTS))
        pending: deque[str] = deque()  # "attach" or "predict", in the order their replies will come
        outstanding = 0
        slot = 0
        for feeds in requests:
            while outstanding >= depth:
                out = self._drain(pending)
                if out is not None:
                    outstanding -= 1
                    yield out
            self._send(feeds, slot, pending, op)
            outstanding += 1
            slot = (slot + 1) % depth
        while pending:
            out = self._drain(pending)
            if out is not None:
                yield out

    def _send(
        self, inputs: dict[str, np.ndarray] | _RowsRequest, slot: int, pending: deque[str], op: dict[str, Any]
    ) -> None:
        if isinstance(inputs, _RowsRequest):  # dataset rows: name them
            fields, index = dataset_rows.header(inputs.rows)
            if index is None:
                self._write({**op, **fields}, [], owed=len(pending))
            else:
                self._write({**op, **fields, "inputs": [describe(dataset_rows.INDEX, index)]}, [index], len(pending))
            pending.append("predict")
            return
        names = list(inputs)
        arrays = [np.ascontiguousarray(inputs[n]) for n in names]
        header = {**op, "inputs": [describe(n, a) for n, a in zip(names, arrays, strict=True)]}
        total = sum(a.nbytes for a in arrays)
        if total >= SHARED_MIN_BYTES and self._use_shared():
            buf = self._shared.setdefault(slot, SharedBuffer())
            if buf.ensure(total):  # a new memfd for this slot: hand it over once
                send_frame_with_fd(self.sock, {"op": "attach", "slot": slot}, buf.fd)
                pending.append("attach")
            buf.write(arrays)
            write_frame(self.sock, {**header, "shm": True, "slot": slot})
        elif total >= SHARED_MIN_BYTES and self._transfer(slot, arrays):
            write_frame(self.sock, {**header, "file": True, "slot": slot})
        else:
            self._write(header, arrays, owed=len(pending))
        pending.append("predict")

    def _drain(self, pending: deque[str]) -> dict[str, np.ndarray] | None:
        kind = pending.popleft()
        reply, body = self._reply()
        return None if kind == "attach" else decode_tensors(reply["outputs"], body)

    def _transfer(self, slot: int, arrays: list[np.ndarray]) -> bool:
        """Write a batch into the slot's transfer file (gVisor); False if there is none, or the
        batch does not fit there (it then goes in the socket)."""
        if self._shared_ok is None:
            self.metadata()
        if self._transfer_dir is None:
            return False
        file = self._transfers.setdefault(slot, TransferFile(self._transfer_dir, slot))
        try:
            file.write(arrays)
        except OSError:  # the volume is full (or gone): this batch goes in the socket, and its room is given back
            try:
                os.ftruncate(file.fd, 0)
            except OSError:
                pass
            return False
        return True

    def _use_shared(self) -> bool:
        if self._shared_ok is None:
            self.metadata()
        return bool(self._shared_ok)


class _RowsRequest:
    """One request naming dataset rows (a range, or an index array)."""

    __slots__ = ("rows",)

    def __init__(self, rows: range | np.ndarray):
        self.rows = rows


def _op(op: str, outputs: list[str] | None) -> dict[str, Any]:
    return {"op": op} if outputs is None else {"op": op, "outputs": list(outputs)}
