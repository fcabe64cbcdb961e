"""Framing for the per-job inference socket. Shared by the sidecar server and the job SDK client, so
this module imports only the standard library and numpy.

A frame is an 8-byte prefix (header length, body length; big-endian u32), a UTF-8 JSON header, then
the body: the raw C-order bytes of each tensor the header lists, back to back. Tensors are decoded
with np.frombuffer, i.e. without copying.

Operations (header "op"): "metadata" (input and output names, dtypes and shapes, whether shared
memory works, the frame limits); "predict" (one batch: named inputs in the body, or in shared
memory at "slot" and byte offset "at", or with "file": in the transfer file of "slot", gVisor
only); "predict_batched" (the same, plus "batch": the sidecar runs
the rows batch by batch and answers once, charged one request per batch); "attach" (hands over a
memfd for a slot, in the frame's SCM_RIGHTS). Every answer is {"ok": true, ...} with the outputs in
the body, or {"ok": false, "error": code, "detail": text}; answers come in request order.
"""

from __future__ import annotations

import fcntl
import json
import math
import mmap
import os
import socket
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from .contract import ErrorCode, ModelError, NotRegularFile, open_regular

if TYPE_CHECKING:
    pass

PREFIX = struct.Struct(">II")
MAX_HEADER = 64 << 10
MAX_BODY = 64 << 20
DTYPES = frozenset({"float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"})
ORT_TO_NUMPY = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}

SOCKET_BUFFER = 8 << 20  # large kernel buffers: a batch crosses in few context switches


def tune(sock: socket.socket) -> socket.socket:
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        except OSError:
            pass  # capped by the kernel (net.core.*mem_max): still correct, just slower
    return sock


def _recv_into(sock: socket.socket, view: memoryview) -> bool:
    """Fill view from the socket. False on a clean end of stream before the first byte."""
    n, got = len(view), 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            if got == 0:
                return False
            raise ModelError(ErrorCode.BAD_FRAME, "connection closed inside a frame")
        got += k
    return True


class BadHeader(ModelError):
    """A whole frame arrived but its header is not a JSON object: the stream is still in step."""


class FrameReader:
    """Reads frames from one connection into one reused buffer: no page faults or zero-fill per
    request, and the model reads warm memory. A frame's tensors are views into that buffer, valid
    until the next read on this connection (the server answers a connection's requests in order)."""

    def __init__(self, sock: socket.socket, max_body: int = MAX_BODY, grow: Callable[[int], None] | None = None):
        """`grow(n)` is told before the buffer grows by n bytes, and may refuse by raising ModelError
        (the sidecar charges it to the job's memory allowance)."""
        self.sock, self.max_body, self._grow = sock, max_body, grow
        self._prefix = memoryview(bytearray(PREFIX.size))
        self._buf = np.empty(0, dtype=np.uint8)

    fds: list[int] = []  # file descriptors that came with the last frame (the caller owns them)

    def _recv_prefix(self) -> bool:
        """The prefix is read with recvmsg: a frame may carry one file descriptor (SCM_RIGHTS), and
        a plain read would make the kernel drop it."""
        data, fds, _flags, _addr = socket.recv_fds(self.sock, PREFIX.size, 1)
        self.fds = list(fds)
        if not data:
            return False
        self._prefix[: len(data)] = data
        return len(data) == PREFIX.size or _recv_into(self.sock, self._prefix[len(data) :]) or _short()

    @property
    def capacity(self) -> int:
        return len(self._buf)

    def _buffer(self, n: int) -> memoryview:
        if n > len(self._buf):
            size = min(max(n, 2 * len(self._buf)), max(n, self.max_body))
            if self._grow is not None:
                self._grow(size - len(self._buf))
            self._buf = np.empty(0, dtype=np.uint8)  # the old buffer goes before the new one comes
            self._buf = np.empty(size, dtype=np.uint8)
        return memoryview(self._buf)[:n]  # type: ignore[arg-type]  # numpy declares __buffer__ only for 3.12+

    def scratch(self, n: int) -> memoryview:
        """The buffer's first n bytes, for the current frame's own use (a transfer file's batch); the
        frame's body, if it had one, is gone. Grown (and charged) as for a body."""
        if n > self.max_body:
            raise ModelError(ErrorCode.TOO_LARGE, f"tensors of {n} bytes")
        return self._buffer(n)

    def read(self) -> tuple[dict[str, Any], memoryview] | None:
        """One frame, or None on a clean end of stream. Raises ModelError for a bad or oversized frame."""
        if not self._recv_prefix():
            return None
        header_len, body_len = PREFIX.unpack(self._prefix)
        if header_len > MAX_HEADER or body_len > self.max_body:
            raise ModelError(ErrorCode.TOO_LARGE, f"frame of {header_len}+{body_len} bytes")
        raw = bytearray(header_len)
        if header_len and not _recv_into(self.sock, memoryview(raw)):
            raise ModelError(ErrorCode.BAD_FRAME, "connection closed inside a frame")
        body = self._buffer(body_len)
        if body_len and not _recv_into(self.sock, body):
            raise ModelError(ErrorCode.BAD_FRAME, "connection closed inside a frame")
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise BadHeader(ErrorCode.BAD_FRAME, "header is not UTF-8 JSON") from None
        if not isinstance(header, dict):
            raise BadHeader(ErrorCode.BAD_FRAME, "header is not a JSON object")
        return header, body


def read_frame(sock: socket.socket, max_body: int = MAX_BODY) -> tuple[dict[str, Any], memoryview] | None:
    """One frame in a buffer of its own (safe to keep): for replies, which are small."""
    return FrameReader(sock, max_body).read()


def _short() -> NoReturn:
    raise ModelError(ErrorCode.BAD_FRAME, "connection closed inside a frame")


# Shared memory: the client writes a batch into a memfd it shares once per connection, and sends only
# the header. The sidecar maps it read-only, and only if it is a memfd sealed against shrinking (a
# mapping whose file can shrink would let the client crash the sidecar with SIGBUS) and fully backed:
# pages the client wrote are charged to the client's memory, but the sidecar touching a hole would
# allocate a page charged to the sidecar's. A client may still punch holes after the check, so the
# sidecar also counts every mapped byte against the job's memory allowance (see server.Allowance).
MAX_SHARED = MAX_BODY * 2


def shared_size(fd: int) -> int:
    """The size of a memfd the sidecar may map, or ModelError saying why not."""
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)  # EINVAL for anything but a memfd
        st = os.fstat(fd)
    except OSError:
        raise ModelError(ErrorCode.BAD_FRAME, "shared memory must be a memfd") from None
    if not seals & fcntl.F_SEAL_SHRINK:
        raise ModelError(ErrorCode.BAD_FRAME, "shared memory must be sealed against shrinking")
    if st.st_size <= 0 or st.st_size > MAX_SHARED:
        raise ModelError(ErrorCode.TOO_LARGE, f"shared memory must be 1 to {MAX_SHARED} bytes")
    if st.st_blocks * 512 < st.st_size:
        raise ModelError(ErrorCode.BAD_FRAME, "shared memory must be fully written (it has holes)")
    return st.st_size


def map_shared(fd: int, size: int) -> mmap.mmap:
    # MAP_POPULATE: map every (already written) page now, once, rather than on first touch in a run.
    return mmap.mmap(fd, size, mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0), mmap.PROT_READ)


class SharedBuffer:
    """Client side: a growable memfd sealed against shrinking, mapped read-write."""

    def __init__(self) -> None:
        self.fd = -1
        self.map: mmap.mmap | None = None

    def ensure(self, n: int) -> bool:
        """Make room for n bytes. True when a new memfd was made (it must be sent to the server)."""
        if self.map is not None and len(self.map) >= n:
            return False
        self.close()
        size = max(1 << 20, 1 << (n - 1).bit_length())
        self.fd = os.memfd_create("evalgate-batch", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(self.fd, size)
        # Backed in full now (by this side's memory): the sidecar refuses a memfd with holes.
        os.posix_fallocate(self.fd, 0, size)
        fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
        self.map = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        return True

    def write(self, arrays: list[np.ndarray]) -> None:
        assert self.map is not None  # the caller made room with ensure() first
        view = np.frombuffer(self.map, dtype=np.uint8)
        offset = 0
        for a in arrays:
            raw = a.reshape(-1).view(np.uint8)
            view[offset : offset + raw.size] = raw
            offset += raw.size
        del view

    def close(self) -> None:
        if self.map is not None:
            try:
                self.map.close()
            except BufferError:
                pass  # a view still lives; the mapping goes with the last of them
            self.map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# Transfer files (gVisor): it cannot pass a memfd from one sandbox to another, and every byte through
# the socket is copied by both sandboxes' kernels. A host tmpfs volume is shared instead: the job
# writes a batch into its slot's file there and names the slot; the sidecar opens the file (never
# through a link, never anything but a regular file), reads the declared bytes into its own buffer
# (never maps it: the job could truncate a mapping under it) and runs the model on its copy. What the
# file holds is as untrusted as a socket's bytes, and decoded the same way.
TRANSFER_SLOTS = (0, 1, 2, 3)


def transfer_path(directory: str, slot: int) -> str:
    return os.path.join(directory, f"slot-{slot}")


class TransferFile:
    """Client side: one slot's file in the transfer volume, made on first use (mode 0640: the
    volume's group is the sidecar's) and rewritten for each batch."""

    def __init__(self, directory: str, slot: int) -> None:
        self.path = transfer_path(directory, slot)
        self.fd = -1

    def write(self, arrays: Sequence[np.ndarray]) -> None:
        """The arrays' bytes, back to back from offset 0. OSError if they do not fit (ENOSPC)."""
        if self.fd < 0:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
        parts = [memoryview(np.ascontiguousarray(a)).cast("B") for a in arrays]  # type: ignore[arg-type]  # see _buffer
        offset = 0
        for part in parts:
            while part.nbytes:
                k = os.pwrite(self.fd, part, offset)
                part, offset = part[k:], offset + k

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_transfer(directory: str, slot: object, into: memoryview) -> None:
    """Sidecar side: fill `into` from the start of the slot's file, or ModelError (bad_frame)."""
    if isinstance(slot, bool) or slot not in TRANSFER_SLOTS:
        raise ModelError(ErrorCode.BAD_FRAME, f"a transfer slot is one of {TRANSFER_SLOTS}")
    assert isinstance(slot, int)
    try:
        fd, _size = open_regular(transfer_path(directory, slot))
    except NotRegularFile:
        raise ModelError(ErrorCode.BAD_FRAME, "a transfer file must be a regular file") from None
    except OSError:
        raise ModelError(ErrorCode.BAD_FRAME, "no transfer file the sidecar may read at that slot") from None
    try:
        got = 0
        while got < len(into):
            k = os.preadv(fd, [into[got:]], got)
            if k <= 0:
                raise ModelError(ErrorCode.BAD_FRAME, "the transfer file is shorter than the tensors it declares")
            got += k
    except OSError:
        raise ModelError(ErrorCode.BAD_FRAME, "the transfer file could not be read") from None
    finally:
        os.close(fd)


def send_frame_with_fd(sock: socket.socket, header: dict[str, Any], fd: int) -> None:
    raw = json.dumps(header, separators=(",", ":")).encode()
    socket.send_fds(sock, [PREFIX.pack(len(raw), 0) + raw], [fd])


def frame_parts(header: dict[str, Any], tensors: Sequence[np.ndarray] = ()) -> list[memoryview]:
    """A frame as buffers to send back to back: prefix and header, then each tensor's bytes."""
    raw = json.dumps(header, separators=(",", ":")).encode()
    parts = [memoryview(np.ascontiguousarray(t)).cast("B") for t in tensors]  # type: ignore[arg-type]  # see _buffer
    return [memoryview(PREFIX.pack(len(raw), sum(p.nbytes for p in parts)) + raw), *parts]


def write_frame(sock: socket.socket, header: dict[str, Any], tensors: Sequence[np.ndarray] = ()) -> None:
    parts = frame_parts(header, tensors)
    # One system call for the usual frame; whatever the kernel did not take goes after it.
    sent = sock.sendmsg(parts)
    for part in parts:
        if sent >= part.nbytes:
            sent -= part.nbytes
            continue
        sock.sendall(part[sent:])
        sent = 0


_DTYPE_NAMES: dict[np.dtype, str] = {}


def describe(name: str, array: np.ndarray) -> dict[str, Any]:
    dt = array.dtype
    dtype = _DTYPE_NAMES.get(dt)
    if dtype is None:  # numpy computes a dtype's name anew on every access, and it shows per request
        dtype = _DTYPE_NAMES.setdefault(dt, dt.name)
    return {"name": name, "dtype": dtype, "shape": list(array.shape)}


def _tensor_specs(specs: object) -> Iterator[tuple[str, np.dtype[Any], list[int], int]]:
    """Each {name, dtype, shape} of a request, checked: name, dtype, shape and element count."""
    if not isinstance(specs, list) or not specs:
        raise ModelError(ErrorCode.BAD_FRAME, "tensors must be a non-empty list")
    for spec in specs:
        if not isinstance(spec, dict):
            raise ModelError(ErrorCode.BAD_FRAME, "tensor spec is not an object")
        name, dtype, shape = spec.get("name"), spec.get("dtype"), spec.get("shape")
        if (
            not isinstance(name, str)
            or dtype not in DTYPES
            or not isinstance(shape, list)
            or len(shape) > 8
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in shape)
        ):
            raise ModelError(
                ErrorCode.BAD_FRAME, "tensor spec needs name, a known dtype and a shape of non-negative ints"
            )
        # math.prod is exact: numpy's int64 product wraps, and a per-call cost showed per request.
        yield name, np.dtype(dtype), shape, math.prod(shape)


def tensors_nbytes(specs: object) -> int:
    """The bytes the tensors a request declares take, back to back (the specs checked)."""
    return sum(count * dt.itemsize for _name, dt, _shape, count in _tensor_specs(specs))


def decode_tensors(specs: object, body: memoryview, exact: bool = True, start: object = 0) -> dict[str, np.ndarray]:
    """Zero-copy views into body for each {name, dtype, shape} in specs, from byte `start`. With
    exact=False (shared memory) the body may be longer than the tensors."""
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= len(body):
        raise ModelError(ErrorCode.BAD_FRAME, "offset outside the shared memory")
    out: dict[str, np.ndarray] = {}
    offset = start
    for name, dt, shape, count in _tensor_specs(specs):
        if name in out:
            raise ModelError(ErrorCode.BAD_FRAME, f"tensor {name!r} given twice")
        nbytes = count * dt.itemsize
        if offset + nbytes > len(body):
            raise ModelError(ErrorCode.BAD_FRAME, "body shorter than the tensors it declares")
        out[name] = np.frombuffer(body, dtype=dt, count=count, offset=offset).reshape(shape)
        offset += nbytes
    if exact and offset != len(body):
        raise ModelError(ErrorCode.BAD_FRAME, "body longer than the tensors it declares")
    return out
