"""Client side of the inference socket, used by the job SDK (and by tests and benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .protocol import BUDGET_EXCEEDED, ProtocolError, decode_tensors, describe, read_frame, write_frame


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
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
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
    def __init__(self, path: str, timeout: float | None = 300.0, wait_s: float = 60.0):
        self.path, self.timeout = path, timeout
        self.sock = connect(path, timeout, wait_s)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, header: dict, tensors=()) -> tuple[dict, memoryview]:
        write_frame(self.sock, header, tensors)
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
        return self._call({"op": "metadata"})[0]["metadata"]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = list(inputs)
        arrays = [np.ascontiguousarray(inputs[n]) for n in names]
        reply, body = self._call({"op": "predict", "inputs": [describe(n, a) for n, a in zip(names, arrays)]}, arrays)
        return decode_tensors(reply["outputs"], body)


class Pipeline:
    """Several requests in flight, one per connection: while the sidecar runs the model on one
    batch, the next batch is already crossing the socket. Results come back in order."""

    def __init__(self, path: str, inflight: int = 2, timeout: float | None = 300.0):
        self.clients = [Client(path, timeout) for _ in range(max(1, inflight))]
        self._free = list(self.clients)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=len(self.clients), thread_name_prefix="evalgate-predict")

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            client = self._free.pop()
        try:
            return client.predict(feeds)
        finally:
            with self._lock:
                self._free.append(client)

    def map(self, batches: Iterable[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
        pending = []
        for feeds in batches:
            pending.append(self._pool.submit(self._run, feeds))
            if len(pending) >= len(self.clients):
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for c in self.clients:
            c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
