"""Client side of the inference socket, used by the job SDK (and by tests and benchmarks)."""

from __future__ import annotations

import socket

import numpy as np

from .protocol import BUDGET_EXCEEDED, ProtocolError, decode_tensors, describe, read_frame, write_frame


class ModelError(Exception):
    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


class BudgetExceeded(ModelError):
    pass


class Client:
    def __init__(self, path: str, timeout: float | None = 300.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)

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
