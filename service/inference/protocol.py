"""Framing for the per-job inference socket. Shared by the sidecar server and the job SDK client, so
this module imports only the standard library and numpy.

A frame is an 8-byte prefix (header length, body length; big-endian u32), a UTF-8 JSON header, then
the body: the raw C-order bytes of each tensor the header lists, back to back. Tensors are decoded
with np.frombuffer, i.e. without copying.
"""

from __future__ import annotations

import json
import socket
import struct

import numpy as np

PREFIX = struct.Struct(">II")
MAX_HEADER = 64 << 10
MAX_BODY = 64 << 20
DTYPES = frozenset({"float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"})
ORT_TO_NUMPY = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}

# Error codes a client may receive. None of them closes the sidecar.
BAD_FRAME = "bad_frame"
TOO_LARGE = "too_large"
UNKNOWN_OP = "unknown_op"
UNKNOWN_INPUT = "unknown_input"
DTYPE_MISMATCH = "dtype_mismatch"
SHAPE_MISMATCH = "shape_mismatch"
BUDGET_EXCEEDED = "budget_exceeded"
INFERENCE_FAILED = "inference_failed"


class ProtocolError(Exception):
    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


def _recv_exact(sock: socket.socket, n: int) -> bytearray | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            return None if got == 0 else _short()
        got += k
    return buf


def _short():
    raise ProtocolError(BAD_FRAME, "connection closed inside a frame")


def read_frame(sock: socket.socket, max_body: int = MAX_BODY) -> tuple[dict, memoryview] | None:
    """Read one frame; None on a clean end of stream. Raises ProtocolError for a bad or oversized frame."""
    prefix = _recv_exact(sock, PREFIX.size)
    if prefix is None:
        return None
    header_len, body_len = PREFIX.unpack(prefix)
    if header_len > MAX_HEADER or body_len > max_body:
        raise ProtocolError(TOO_LARGE, f"frame of {header_len}+{body_len} bytes")
    raw_header = _recv_exact(sock, header_len) if header_len else bytearray()
    body = _recv_exact(sock, body_len) if body_len else bytearray()
    if raw_header is None or body is None:
        _short()
    try:
        header = json.loads(bytes(raw_header).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError(BAD_FRAME, "header is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise ProtocolError(BAD_FRAME, "header is not a JSON object")
    return header, memoryview(body)


def write_frame(sock: socket.socket, header: dict, tensors: list[np.ndarray] = ()) -> None:
    raw = json.dumps(header, separators=(",", ":")).encode()
    chunks = [np.ascontiguousarray(t) for t in tensors]
    body_len = sum(c.nbytes for c in chunks)
    sock.sendall(PREFIX.pack(len(raw), body_len) + raw)
    for c in chunks:
        sock.sendall(memoryview(c).cast("B"))


def describe(name: str, array: np.ndarray) -> dict:
    return {"name": name, "dtype": array.dtype.name, "shape": list(array.shape)}


def decode_tensors(specs: object, body: memoryview) -> dict[str, np.ndarray]:
    """Zero-copy views into body for each {name, dtype, shape} in specs."""
    if not isinstance(specs, list) or not specs:
        raise ProtocolError(BAD_FRAME, "tensors must be a non-empty list")
    out: dict[str, np.ndarray] = {}
    offset = 0
    for spec in specs:
        if not isinstance(spec, dict):
            raise ProtocolError(BAD_FRAME, "tensor spec is not an object")
        name, dtype, shape = spec.get("name"), spec.get("dtype"), spec.get("shape")
        if not isinstance(name, str) or dtype not in DTYPES or not isinstance(shape, list) or len(shape) > 8 or \
                not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in shape):
            raise ProtocolError(BAD_FRAME, "tensor spec needs name, a known dtype and a shape of non-negative ints")
        if name in out:
            raise ProtocolError(BAD_FRAME, f"tensor {name!r} given twice")
        dt = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        nbytes = count * dt.itemsize
        if offset + nbytes > len(body):
            raise ProtocolError(BAD_FRAME, "body shorter than the tensors it declares")
        out[name] = np.frombuffer(body, dtype=dt, count=count, offset=offset).reshape(shape)
        offset += nbytes
    if offset != len(body):
        raise ProtocolError(BAD_FRAME, "body longer than the tensors it declares")
    return out
