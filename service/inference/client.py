"""Client side of the inference socket, used by the job SDK (and by tests and benchmarks)."""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np

from .protocol import (BUDGET_EXCEEDED, ProtocolError, SharedBuffer, decode_tensors, describe, read_frame,
                       send_frame_with_fd, tune, write_frame)

SHARED_MIN_BYTES = 64 << 10  # below this a copy through the socket is cheaper than the bookkeeping
MAX_SLOTS = 4
DATA_SLOT = 4  # a buffer the job fills once (its dataset); requests point into it


class ModelError(Exception):
    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


class BudgetExceeded(ModelError):
    pass


def connect(path: str, timeout: float | None, wait_s: float) -> socket.socket:
    """Connect, waiting up to wait_s for the sidecar to create its socket (the job container may
    start before the sidecar is listening)."""
    deadline = time.monotonic() + wait_s
    delay = 0.005
    while True:
        sock = tune(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() >= deadline:
                raise ModelError("unavailable", "the model sidecar did not come up") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


class Client:
    def __init__(self, path: str, timeout: float | None = 300.0, wait_s: float = 60.0, shared_memory: bool = True):
        self.path, self.timeout = path, timeout
        self.sock = connect(path, timeout, wait_s)
        self._want_shared = shared_memory
        self._shared_ok: bool | None = None
        self._shared: dict[int, SharedBuffer] = {}

    def close(self) -> None:
        for buf in self._shared.values():
            buf.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, header: dict, tensors=()) -> tuple[dict, memoryview]:
        write_frame(self.sock, header, tensors)
        return self._reply()

    def _reply(self) -> tuple[dict, memoryview]:
        try:
            frame = read_frame(self.sock)
        except ProtocolError as e:
            raise ModelError(e.code, e.detail) from None
        if frame is None:
            raise ModelError("closed", "the sidecar closed the connection")
        reply, body = frame
        if not reply.get("ok"):
            cls = BudgetExceeded if reply.get("error") == BUDGET_EXCEEDED else ModelError
            raise cls(str(reply.get("error")), str(reply.get("detail", "")))
        return reply, body

    def metadata(self) -> dict:
        reply = self._call({"op": "metadata"})[0]
        self._shared_ok = bool(reply.get("shared_memory")) and self._want_shared
        return reply["metadata"]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return next(self.predict_stream([inputs], depth=1))

    def predict_stream(self, batches: Iterable[dict[str, np.ndarray]], depth: int = 2) -> Iterator[dict[str, np.ndarray]]:
        """Predict batch after batch with up to `depth` requests queued on this connection: while
        the sidecar runs the model on one, the next is already waiting for it. Answers come in order.
        Each queued request has its own shared-memory slot, reused only after its answer arrived."""
        depth = max(1, min(depth, MAX_SLOTS))
        pending: deque[str] = deque()  # "attach" or "predict", in the order their replies will come
        outstanding = 0
        slot = 0
        for feeds in batches:
            while outstanding >= depth:
                out = self._drain(pending)
                if out is not None:
                    outstanding -= 1
                    yield out
            self._send(feeds, slot, pending)
            outstanding += 1
            slot = (slot + 1) % depth
        while pending:
            out = self._drain(pending)
            if out is not None:
                yield out

    def shared_array(self, shape: tuple[int, ...], dtype) -> np.ndarray | None:
        """An array in memory the sidecar maps too, or None where that is not possible (gVisor).
        Predicting on slices of it sends only their offset: no byte is copied."""
        if not self._use_shared():
            return None
        buf = self._shared.setdefault(DATA_SLOT, SharedBuffer())
        arr = buf.array(shape, dtype)
        send_frame_with_fd(self.sock, {"op": "attach", "slot": DATA_SLOT}, buf.fd)
        self._reply()
        return arr

    def _send(self, inputs: dict[str, np.ndarray], slot: int, pending: deque) -> None:
        names = list(inputs)
        arrays = [np.ascontiguousarray(inputs[n]) for n in names]
        header = {"op": "predict", "inputs": [describe(n, a) for n, a in zip(names, arrays)]}
        total = sum(a.nbytes for a in arrays)
        data = self._shared.get(DATA_SLOT)
        at = data.offset_of(arrays) if data is not None else None
        if at is not None:  # already in shared memory: send where, not what
            write_frame(self.sock, {**header, "shm": True, "slot": DATA_SLOT, "at": at})
        elif total >= SHARED_MIN_BYTES and self._use_shared():
            buf = self._shared.setdefault(slot, SharedBuffer())
            if buf.ensure(total):  # a new memfd for this slot: hand it over once
                send_frame_with_fd(self.sock, {"op": "attach", "slot": slot}, buf.fd)
                pending.append("attach")
            buf.write(arrays)
            write_frame(self.sock, {**header, "shm": True, "slot": slot})
        else:
            write_frame(self.sock, header, arrays)
        pending.append("predict")

    def _drain(self, pending: deque) -> dict[str, np.ndarray] | None:
        kind = pending.popleft()
        reply, body = self._reply()
        return None if kind == "attach" else decode_tensors(reply["outputs"], body)

    def _use_shared(self) -> bool:
        if self._shared_ok is None:
            self.metadata()
        return bool(self._shared_ok)


