"""The inference sidecar: serves one ONNX model on a unix socket to one job, within a row budget.

Runs inside the sidecar container (no network, model mounted read-only). It tells the worker what
the worker needs through files in a volume the job never sees (contract.STATUS_DIR): ready.json once
it serves, usage.json when asked with SIGUSR1. It prints nothing a job could make it print.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import resource
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Iterable
from types import FrameType
from typing import Any, NoReturn

import numpy as np

from .contract import (
    COLLECT_DIR,
    MODEL_PATH,
    READY_NAME,
    RESULT_COPY_NAME,
    STATUS_DIR,
    TRANSFER_DIR,
    USAGE_NAME,
    Env,
    ErrorCode,
    ModelError,
    NotRegularFile,
    open_regular,
)
from .model import Model
from .protocol import (
    MAX_BODY,
    BadHeader,
    FrameReader,
    decode_tensors,
    describe,
    map_shared,
    read_transfer,
    shared_size,
    tensors_nbytes,
    tune,
    write_frame,
)
from .rows import INDEX, Features

SLOTS = (0, 1, 2, 3, 4)  # 0-3: batches in flight; 4: the job's dataset, loaded into shared memory


# Answers that the SDK's own client never provokes: frames that are not the protocol, or ops it does
# not have. The job's usage counts them, and its partner's sanctions count a job that has any
# (service.sanctions, Rule.PROTOCOL_ABUSE). A wrong shape or dtype, or a batch too large, can be an
# honest mistake made through the SDK: not counted.
PROTOCOL_ABUSE = frozenset({ErrorCode.BAD_FRAME, ErrorCode.UNKNOWN_OP})


class Budget:
    """Rows and requests a job may spend. Thread-safe: connections are served concurrently."""

    def __init__(self, max_rows: int, max_requests: int):
        self.max_rows, self.max_requests = max_rows, max_requests
        self.rows = self.requests = self.refused = self.internal_errors = self.protocol_errors = 0
        self.exceeded = False
        self._lock = threading.Lock()

    def spend(self, rows: int, requests: int = 1) -> bool:
        """All or nothing: a request for a span of batches is refused whole if any of it would not fit."""
        with self._lock:
            if self.rows + rows > self.max_rows or self.requests + requests > self.max_requests:
                self.exceeded = True
                self.refused += 1
                return False
            self.rows += rows
            self.requests += requests
            return True

    def note_internal_error(self) -> None:
        with self._lock:
            self.internal_errors += 1

    def note_protocol_error(self) -> None:
        with self._lock:
            self.protocol_errors += 1

    def snapshot(self) -> dict[str, int | bool]:
        with self._lock:
            return {
                "rows": self.rows,
                "requests": self.requests,
                "refused": self.refused,
                "internal_errors": self.internal_errors,
                "protocol_errors": self.protocol_errors,
                "budget_exceeded": self.exceeded,
                "max_rows": self.max_rows,
            }


class RateLimit:
    """At most `per_s` requests a second across all connections. Excess requests wait (the job is
    slowed, not failed), so hammering the sidecar buys nothing."""

    def __init__(self, per_s: float):
        self.interval = 1.0 / per_s if per_s > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


class Allowance:
    """The memory a job's requests may hold in the sidecar at once, across all its connections:
    receive buffers, attached shared memory (counted in full: the job could punch holes in it that
    the sidecar would fill) and outputs on their way back. Sized by the worker so that the model,
    the interpreter and one batch's working memory fit beside it under the container's limit: past
    it, a request is answered `busy` rather than the sidecar being OOM-killed."""

    def __init__(self, total: int):
        self.total, self.used = total, 0
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            if self.used + n > self.total:
                raise ModelError(ErrorCode.BUSY, f"the job holds {self.used} of {self.total} bytes in the sidecar")
            self.used += n

    def give(self, n: int) -> None:
        with self._lock:
            self.used -= n


class Held:
    """What one connection (or one request) holds of the allowance; all given back at once."""

    def __init__(self, allowance: Allowance):
        self.allowance, self.bytes = allowance, 0

    def take(self, n: int) -> None:
        self.allowance.take(n)
        self.bytes += n

    def give(self, n: int) -> None:
        self.allowance.give(n)
        self.bytes -= n

    def release(self) -> None:
        self.allowance.give(self.bytes)
        self.bytes = 0


def make_handler(
    model: Model,
    budget: Budget,
    max_batch: int,
    max_body: int,
    rate: RateLimit,
    shared_memory: bool,
    allowance: Allowance,
    features: Features,
    transfer_dir: str | None = None,
) -> type[socketserver.BaseRequestHandler]:
    class Handler(socketserver.BaseRequestHandler):
        shared: dict[int, tuple[mmap.mmap, int]]  # this connection's shared-memory mappings by slot, with sizes
        reader: FrameReader  # this connection's frames (and its buffer, which a transfer file's batch is read into)
        held: Held  # the receive buffer's and the mappings' share of the allowance

        def handle(self) -> None:
            sock: socket.socket = tune(self.request)
            self.held = Held(allowance)
            reader = FrameReader(sock, max_body, grow=self.held.take)
            self.reader = reader
            self.shared = {}
            try:
                self._loop(sock, reader)
            finally:
                for slot in list(self.shared):
                    self._detach(slot)
                self.held.release()

        def _detach(self, slot: int) -> None:
            old = self.shared.pop(slot, None)
            if old is not None:
                mapping, size = old
                try:
                    mapping.close()
                except BufferError:
                    pass  # a view is still alive; the mapping goes with it
                self.held.give(size)

        def _loop(self, sock: socket.socket, reader: FrameReader) -> None:
            while True:
                try:
                    frame = reader.read()
                except BadHeader as e:  # the frame was read whole: answer, and go on
                    _close_all(reader)
                    if not self._error(sock, e):
                        return
                    continue
                except ModelError as e:
                    # A bad or oversized frame leaves the stream out of step: answer, then close
                    # this connection only.
                    _close_all(reader)
                    self._error(sock, e)
                    return
                except OSError:
                    _close_all(reader)
                    return
                if frame is None:
                    _close_all(reader)
                    return
                header, body = frame
                fds, reader.fds = reader.fds, []
                try:
                    if header.get("op") == "attach":
                        self._serve_attach(sock, header, fds)
                    else:
                        _close(fds)  # descriptors are only accepted with an attach
                        self._serve(sock, header, body)
                except ModelError as e:
                    if not self._error(sock, e):
                        return
                except OSError:
                    return
                except Exception:  # a failure of ours: this request only, and no traceback anywhere
                    budget.note_internal_error()
                    if not self._error(sock, ModelError(ErrorCode.INTERNAL, "the sidecar failed on this request")):
                        return
                finally:
                    del header, body  # no view into the receive buffer outlives its request

        def _error(self, sock: socket.socket, e: ModelError) -> bool:
            if e.code in PROTOCOL_ABUSE:
                budget.note_protocol_error()
            try:
                write_frame(sock, {"ok": False, "error": e.code, "detail": e.detail[:200]})
                return True
            except OSError:
                return False

        def _serve_attach(self, sock: socket.socket, header: dict[str, Any], fds: list[int]) -> None:
            try:
                if not shared_memory:
                    raise ModelError(ErrorCode.UNKNOWN_OP, "shared memory is not available here")
                slot = header.get("slot", 0)
                if len(fds) != 1 or slot not in SLOTS:
                    raise ModelError(ErrorCode.BAD_FRAME, "attach carries exactly one memfd and a slot 0-4")
                size = shared_size(fds[0])
                self._detach(slot)
                self.held.take(size)
                try:
                    self.shared[slot] = (map_shared(fds[0], size), size)
                except (OSError, ValueError):
                    self.held.give(size)
                    raise ModelError(ErrorCode.BAD_FRAME, "the shared memory could not be mapped") from None
            finally:
                _close(fds)
            write_frame(sock, {"ok": True})

        def _serve(self, sock: socket.socket, header: dict[str, Any], body: memoryview) -> None:
            op = header.get("op")
            if op == "metadata":
                write_frame(
                    sock,
                    {
                        "ok": True,
                        "metadata": model.metadata(),
                        "shared_memory": shared_memory,
                        "transfer_dir": transfer_dir,  # None: batches go in the socket (or shared memory)
                        "limits": {"max_body": max_body, "max_batch": max_batch},
                        "inference": model.config,
                    },
                )
            elif op in ("predict", "predict_batched"):
                rate.wait()
                inputs = Held(allowance)  # rows gathered or cast here, held until answered
                try:
                    self._predict(sock, op, header, body, inputs)
                finally:
                    inputs.release()
            else:
                raise ModelError(ErrorCode.UNKNOWN_OP, "operations: metadata, predict, predict_batched, attach")

        def _rows(self, header: dict[str, Any], body: memoryview, held: Held) -> dict[str, np.ndarray]:
            """The feeds of a request that names dataset rows instead of carrying them (rows.py)."""
            name, want = model.only_input()
            spec = header.get("rows")
            index = None
            if isinstance(spec, dict) and "index" in spec:
                index = decode_tensors(header.get("inputs"), body).get(INDEX)
            x = features.array()
            row_bytes = math.prod(x.shape[1:]) * x.dtype.itemsize
            if index is not None:
                held.take(len(index) * row_bytes)  # before the gather is made: checked, then allocated
            rows = features.select(spec, index)
            if rows.dtype != want:
                held.take(len(rows) * row_bytes // x.dtype.itemsize * want.itemsize)
                rows = rows.astype(want)
            return {name: rows}

        def _predict(self, sock: socket.socket, op: str, header: dict[str, Any], body: memoryview, held: Held) -> None:
            if "rows" in header:
                feeds = self._rows(header, body, held)
            elif header.get("shm"):
                slot = header.get("slot", 0)
                attached = self.shared.get(slot) if slot in SLOTS else None
                if attached is None:
                    raise ModelError(ErrorCode.BAD_FRAME, "no shared memory attached at that slot")
                feeds = decode_tensors(
                    header.get("inputs"), memoryview(attached[0]), exact=False, start=header.get("at", 0)
                )
            elif header.get("file"):
                if transfer_dir is None:
                    raise ModelError(ErrorCode.BAD_FRAME, "no transfer files here")
                specs = header.get("inputs")
                batch_bytes = self.reader.scratch(tensors_nbytes(specs))  # the body's buffer, charged as one
                read_transfer(transfer_dir, header.get("slot", 0), batch_bytes)
                feeds = decode_tensors(specs, batch_bytes)
            else:
                feeds = decode_tensors(header.get("inputs"), body)
            rows = model.check(feeds)
            if rows == 0:
                raise ModelError(ErrorCode.EMPTY_BATCH, "a request must carry at least one row")
            batch: object  # the header's "batch" is untrusted JSON until checked
            if op == "predict":  # one batch: all the rows
                batch, requests = rows, 1
            else:
                batch = header.get("batch")
                if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
                    raise ModelError(ErrorCode.BAD_FRAME, "batch must be a positive integer")
                requests = max(1, -(-rows // batch))
            if batch > max_batch:
                raise ModelError(ErrorCode.TOO_LARGE, f"batch of {batch} rows; at most {max_batch}")
            names = model.served(header.get("outputs"))
            if not budget.spend(rows, requests):
                raise ModelError(ErrorCode.BUDGET_EXCEEDED, "the job's model query budget is spent")
            outputs = Held(allowance)  # the answer's arrays, held until they are sent
            try:
                if op == "predict":
                    arrays = model.run(feeds, names)
                    outputs.take(sum(a.nbytes for a in arrays))
                else:
                    arrays = model.run_batched(feeds, rows, batch, rate.wait, MAX_BODY, names, hold=outputs.take)
                write_frame(
                    sock,
                    {"ok": True, "outputs": [describe(n, a) for n, a in zip(names, arrays, strict=True)]},
                    arrays,
                )
            finally:
                outputs.release()

    return Handler


def _close(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _close_all(reader: FrameReader) -> None:
    """Descriptors that came with a frame the sidecar will not serve."""
    fds, reader.fds = reader.fds, []
    _close(fds)


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Serves at most `max_connections` connections at once: one more is answered `busy` and closed.
    A handler's failure never reaches stderr (a job could flood the sidecar's log with tracebacks)."""

    daemon_threads = True
    allow_reuse_address = True
    model: Model
    allowance: Allowance
    max_connections: int = 8

    def server_activate(self) -> None:
        super().server_activate()
        self._lock = threading.Lock()
        self._open: set[int] = set()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self._lock:
            if len(self._open) < self.max_connections:
                self._open.add(id(request))
                return True
        try:  # a small frame to a fresh socket: it never blocks
            request.settimeout(0.1)
            write_frame(request, {"ok": False, "error": ErrorCode.BUSY, "detail": "too many connections to the model"})
        except OSError:
            pass
        return False

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._open.discard(id(request))
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # counted by the handler (Budget.internal_errors); nothing printed


def make_server(
    socket_path: str,
    model_path: str,
    *,
    max_rows: int,
    max_requests: int = 1_000_000,
    threads: int = 1,
    max_batch: int = 65536,
    max_body: int = MAX_BODY,
    max_rate: float = 0.0,
    shared_memory: bool = False,
    output_policy: dict[str, Any] | None = None,
    score_outputs: Iterable[str] = (),
    max_connections: int = 8,
    allowance_bytes: int = 512 << 20,
    dataset_path: str | None = None,
    transfer_dir: str | None = None,
) -> tuple[Server, Budget]:
    budget = Budget(max_rows, max_requests)
    model = Model(model_path, threads, output_policy, score_outputs)
    rate = RateLimit(max_rate)
    allowance = Allowance(allowance_bytes)
    features = Features(dataset_path, take=allowance.take)
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    # The job runs as another uid and gets the directory read-only, so the socket must be 0666.
    # Set through the umask at bind time: gVisor does not allow chmod on a host socket afterwards.
    old_umask = os.umask(0o111)
    try:
        handler = make_handler(
            model, budget, max_batch, max_body, rate, shared_memory, allowance, features, transfer_dir
        )
        server = Server(socket_path, handler)
    finally:
        os.umask(old_umask)
    server.model = model
    server.allowance = allowance
    server.max_connections = max_connections
    return server, budget


def write_status(directory: str, name: str, data: dict[str, Any]) -> None:
    """A status file for the worker, replaced whole (the worker never reads half of one)."""
    tmp = os.path.join(directory, f".{name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, os.path.join(directory, name))


def copy_result(source: str, max_bytes: int, directory: str) -> str:
    """Copy the job's result file (after the job stopped) into the status directory for the worker,
    and say how it went: "copied", or why not. The file is the job's: never a link followed, nothing
    but a regular file read, never more than `max_bytes` (and never all in memory at once). Anything
    but "copied" leaves the file to the worker, which reads it through the Docker API and says
    exactly what is wrong with it."""
    try:
        fd, size = open_regular(source)
    except FileNotFoundError:
        return "absent"
    except NotRegularFile:
        return "not a regular file"
    except OSError:
        return "unreadable"
    tmp, dest = os.path.join(directory, f".{RESULT_COPY_NAME}.tmp"), os.path.join(directory, RESULT_COPY_NAME)
    try:
        if size > max_bytes:
            return "too large"
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            copied = 0
            while chunk := os.read(fd, min(1 << 20, max_bytes + 1 - copied) or 1):
                copied += len(chunk)
                if copied > max_bytes:  # it grew after the check: not ours to judge
                    return "too large"
                rest = memoryview(chunk)
                while rest:  # a regular file may take less than asked (at a size limit, then raise)
                    rest = rest[os.write(out, rest) :]
        finally:
            os.close(out)
        os.replace(tmp, dest)
        return "copied"
    except OSError:
        return "unreadable"
    finally:
        os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)


def report_usage(
    server: Server, budget: Budget, directory: str, result: tuple[str, int] | None = None, drain_s: float = 20.0
) -> None:
    """The job's query usage, once its connections have ended (a request read before the job stopped
    is charged before the count is taken), and its result copied (`result`: its path here and the
    most to copy). The worker asks only after the job container stopped; usage.json comes last, so
    once it is there the copy is complete."""
    deadline = time.monotonic() + drain_s
    while server.open_connections and time.monotonic() < deadline:
        time.sleep(0.005)
    usage: dict[str, Any] = {
        **budget.snapshot(),
        "connections_open": server.open_connections,
        "inference": server.model.config,
    }
    if result is not None:
        usage["result"] = copy_result(*result, directory)
    usage["memory_peak"] = memory_peak()
    write_status(directory, USAGE_NAME, usage)


# The container's own memory statistics, as the engine reports them (cgroup v1, then v2).
CGROUP_PEAK_FILES = ("/sys/fs/cgroup/memory/memory.max_usage_in_bytes", "/sys/fs/cgroup/memory.peak")


def memory_peak(files: Iterable[str] = CGROUP_PEAK_FILES) -> int:
    """The most memory the sidecar has used, for the worker's facts about the job: its container's
    own figure where the container can read it (runc), else the peak resident size of this process
    (gVisor shows no cgroup files inside a sandbox). Read here, when the worker asks for the usage,
    because asking the engine (`docker stats`) waits for its statistics collector's next tick, up
    to a second on a busy host, on every job's path. No decision rests on it: an out-of-memory kill
    is the engine's OOMKilled flag."""
    for path in files:
        try:
            with open(path) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            continue
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def main() -> int:
    env = os.environ
    status_dir = env.get(Env.STATUS_DIR, STATUS_DIR)
    server, budget = make_server(
        env[Env.SOCKET],
        env.get(Env.MODEL, MODEL_PATH),
        max_rows=int(env[Env.QUERY_BUDGET_ROWS]),
        max_requests=int(env.get(Env.MAX_REQUESTS, "1000000")),
        threads=max(1, int(float(env.get(Env.THREADS, "1")))),
        max_batch=int(env.get(Env.MAX_BATCH, "65536")),
        max_body=int(env.get(Env.MAX_BODY, str(MAX_BODY))),
        max_rate=float(env.get(Env.MAX_REQUESTS_PER_S, "0")),
        shared_memory=env.get(Env.SHARED_MEMORY) == "1",
        output_policy=json.loads(env.get(Env.OUTPUT_POLICY, '{"kind": "full"}')),
        score_outputs=[n for n in env.get(Env.SCORE_OUTPUTS, "").split(",") if n],
        max_connections=int(env.get(Env.MAX_CONNECTIONS, "8")),
        allowance_bytes=int(env.get(Env.ALLOWANCE_BYTES, str(512 << 20))),
        dataset_path=env.get(Env.DATASET),
        transfer_dir=TRANSFER_DIR if env.get(Env.TRANSFER) == "1" else None,
    )

    def stop(signum: int, frame: FrameType | None) -> NoReturn:
        raise SystemExit(0)

    result_name = env.get(Env.RESULT, "")
    result = None
    if result_name and "/" not in result_name and result_name not in (".", ".."):
        result = (os.path.join(COLLECT_DIR, result_name), int(env.get(Env.RESULT_MAX_BYTES, "0")))

    def usage(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=report_usage, args=(server, budget, status_dir, result), daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGUSR1, usage)
    write_status(status_dir, READY_NAME, {"inference": server.model.config})
    server.serve_forever(poll_interval=0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
