"""What both sides of the sandbox wall agree on: paths, environment names, the status files the
sidecar writes for the worker, exit codes, the channel's error codes and its error type.

Standard library only. The worker's sandbox runner (service.sandbox) imports it as
`service.inference.contract`; inside both images it is `evalgate_inference.contract`, beside the
protocol and the channel client, so the sidecar server and the job SDK read the same names.
"""

from __future__ import annotations

import os
import stat
from enum import IntEnum, StrEnum
from typing import Any

# -- paths inside the containers ---------------------------------------------------------------------
SOCKET_DIR = "/run/evalgate"  # a per-job volume: the sidecar's socket, read-only in the job
SOCKET_PATH = f"{SOCKET_DIR}/model.sock"
# A per-job volume mounted in the sidecar only: what the sidecar tells the worker (that it serves, and
# the job's query usage) travels here, out of reach of the job, never through a log it could flood.
STATUS_DIR = "/run/evalgate-status"
READY_NAME = "ready.json"  # written once the model is loaded and the socket listens
USAGE_NAME = "usage.json"  # written when the worker asks (SIGUSR1), after the job's connections ended
# The job's result file, copied by the sidecar before it writes usage.json: the worker reads it here
# rather than through the Docker API's archive call (tens of ms, and it holds the container's lock).
RESULT_COPY_NAME = "result.copy"
MODEL_PATH = "/model/model.onnx"  # mounted into the sidecar only
DATASET_PATH = "/data/dataset.npz"  # mounted read-only into the job and the sidecar (rows by reference)
SUITE_DIR = "/suite"  # the partner's code, read-only
OUTPUT_DIR = "/output"  # the job's one writable volume besides /tmp
RESULT_NAME = "result.json"  # metrics mode: the job's metrics
RESULT_PATH = f"{OUTPUT_DIR}/{RESULT_NAME}"
ROWS_NAME = "rows.npz"  # rows mode: one output row per dataset row (probabilities, label or value)
ROWS_PATH = f"{OUTPUT_DIR}/{ROWS_NAME}"
# gVisor only (it cannot pass a memfd between two sandboxes): a per-job tmpfs volume, the job's and
# writable by it, read-only in the sidecar. A batch sent by value is written to a file there and
# named in the request (protocol.transfer_path), instead of crossing in the socket.
TRANSFER_DIR = "/run/evalgate-transfer"
COLLECT_DIR = "/collect"  # where the sidecar holds the job's output volume (read-only) until collected

# -- users (uid:gid) the containers run as; the job's owns nothing in either image ---------------------
SIDECAR_USER = "10001:10001"
JOB_USER = "10002:10002"


class Env(StrEnum):
    """Environment names. Values reach a container by these names, never in argv."""

    SOCKET = "EVALGATE_SOCKET"
    # job
    ENTRYPOINT = "EVALGATE_ENTRYPOINT"
    SUITE_DIR = "EVALGATE_SUITE_DIR"
    DATASET = "EVALGATE_DATASET"
    OUTPUT = "EVALGATE_OUTPUT"
    SEED = "EVALGATE_SEED"
    METRICS = "EVALGATE_METRICS"
    # rows mode: what to write, from which model output
    ROWS = "EVALGATE_ROWS"  # "classification" or "regression"
    MODEL_OUTPUT = "EVALGATE_MODEL_OUTPUT"  # the output to read
    OUTPUT_ROLE = "EVALGATE_OUTPUT_ROLE"  # what it gives: probabilities, logits, labels or values
    CLASSES = "EVALGATE_CLASSES"
    # sidecar
    MODEL = "EVALGATE_MODEL"
    QUERY_BUDGET_ROWS = "EVALGATE_QUERY_BUDGET_ROWS"
    MAX_REQUESTS = "EVALGATE_MAX_REQUESTS"
    MAX_BATCH = "EVALGATE_MAX_BATCH"
    MAX_BODY = "EVALGATE_MAX_BODY"
    MAX_REQUESTS_PER_S = "EVALGATE_MAX_REQUESTS_PER_S"
    SHARED_MEMORY = "EVALGATE_SHARED_MEMORY"
    STATUS_DIR = "EVALGATE_STATUS_DIR"
    MAX_CONNECTIONS = "EVALGATE_MAX_CONNECTIONS"  # connections a job may hold open at once
    ALLOWANCE_BYTES = "EVALGATE_ALLOWANCE_BYTES"  # memory the job's requests may hold in the sidecar
    THREADS = "EVALGATE_THREADS"
    OUTPUT_POLICY = "EVALGATE_OUTPUT_POLICY"  # JSON: what a job may see of the score outputs
    SCORE_OUTPUTS = "EVALGATE_SCORE_OUTPUTS"  # the outputs the policy applies to, comma-separated
    TRANSFER = "EVALGATE_TRANSFER"  # "1": TRANSFER_DIR is mounted, requests may name a file there
    RESULT = "EVALGATE_RESULT"  # the job's result file in COLLECT_DIR, copied for the worker at the end
    RESULT_MAX_BYTES = "EVALGATE_RESULT_MAX_BYTES"  # the most of it copied; a larger one is left to the worker


class NotRegularFile(Exception):
    """A path that was opened is not a regular file (a FIFO, a directory, a device, a socket)."""


def open_regular(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Open for reading a file that someone else controls (the job's result, a transfer file, a
    status file): never through a link (O_NOFOLLOW), never waiting on a FIFO (O_NONBLOCK opens it at
    once, and it is refused here), only a regular file. The descriptor, which the caller closes,
    and the file's size when opened; OSError if it cannot be opened, NotRegularFile if it is
    anything but a regular file (its descriptor already closed). Reading it within a cap is the
    caller's: the size can change after this."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotRegularFile(os.fspath(path))
    return fd, st.st_size


class Exit(IntEnum):
    """Exit codes of the job container's runner (anything else is a crash)."""

    OK = 0
    BUDGET = 3  # the model query budget ran out and the suite did not handle BudgetExceeded
    NO_MODEL = 4  # the sidecar never answered: the runner stopped before starting the partner's code
    MEMORY = 5  # an allocation failed (MemoryError): gVisor may refuse one at the limit rather than kill


class ErrorCode(StrEnum):
    """Errors the sidecar answers with. None of them stops the sidecar."""

    BAD_FRAME = "bad_frame"
    TOO_LARGE = "too_large"
    UNKNOWN_OP = "unknown_op"
    UNKNOWN_INPUT = "unknown_input"
    UNKNOWN_OUTPUT = "unknown_output"
    DTYPE_MISMATCH = "dtype_mismatch"
    SHAPE_MISMATCH = "shape_mismatch"
    BUDGET_EXCEEDED = "budget_exceeded"
    INFERENCE_FAILED = "inference_failed"
    EMPTY_BATCH = "empty_batch"  # a predict of no rows: refused, not charged
    BUSY = "busy"  # the job's connections or memory allowance in the sidecar are all in use
    INTERNAL = "internal"  # the sidecar failed on this request; the connection goes on
    # Seen by the client only: the connection, not an answer.
    UNAVAILABLE = "unavailable"
    CLOSED = "closed"
    TIMEOUT = "timeout"


class ModelError(Exception):
    """An error on the model channel, on either side: `code` is an ErrorCode value, `detail` text
    safe to show the job (it never describes the model's graph or weights)."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


class BudgetExceeded(ModelError):
    """The job's model query budget (rows or requests) is spent."""


def channel_error(code: str, detail: str = "") -> ModelError:
    """The error type for a code the sidecar answered with."""
    return BudgetExceeded(code, detail) if code == ErrorCode.BUDGET_EXCEEDED else ModelError(code, detail)


def parse_output_policy(raw: object) -> dict[str, Any]:
    """What a job may see of a model's score outputs (its operator's choice, against extraction):
    {"kind": "full"}, {"kind": "rounded", "digits": d} (1-6), {"kind": "top_k", "k": k} (the k best
    classes per row, the others 0), or {"kind": "labels"} (each score output served as its argmax)."""
    if not isinstance(raw, dict) or raw.get("kind") not in ("full", "rounded", "top_k", "labels"):
        raise ValueError("output policy kind must be full, rounded, top_k or labels")
    kind = raw["kind"]
    if kind == "rounded":
        digits = raw.get("digits")
        if isinstance(digits, bool) or not isinstance(digits, int) or not 1 <= digits <= 6:
            raise ValueError("a rounded output policy needs digits 1-6")
        return {"kind": kind, "digits": digits}
    if kind == "top_k":
        k = raw.get("k")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000:
            raise ValueError("a top_k output policy needs k of 1 or more")
        return {"kind": kind, "k": k}
    return {"kind": kind}
