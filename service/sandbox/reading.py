"""What the worker reads of a job's sandbox, trusting none of it: the sidecar's status files, the
sidecar's copy of the job's result, one file through the Docker archive API, and capped logs. Every
file is opened without following a link, read only if it is a regular file, and never past its cap."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
from docker.errors import APIError, NotFound

from service.inference.contract import NotRegularFile, open_regular

if TYPE_CHECKING:
    from docker.models.containers import Container

NO_RESULT = "no result file"

# Go's os.FileMode type bits, as the Docker API reports them in the path stat header.
_GO_TYPE_BITS = (1 << 31) | (1 << 27) | (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (1 << 19)


def read_status(path: Path, max_bytes: int = 16 << 10) -> dict[str, Any] | None:
    """A status file the sidecar wrote (ready.json, usage.json), or None while there is none."""
    try:  # the sidecar's own directory, but the worker trusts nothing in it
        fd, _size = open_regular(path)
    except (OSError, NotRegularFile):
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            parsed = json.loads(f.read(max_bytes + 1))
    except (OSError, ValueError):
        return None
    return parsed if isinstance(parsed, dict) else None


def read_copied_result(path: Path, max_bytes: int) -> tuple[bytes | None, str | None]:
    """The job's result as the sidecar copied it into its status directory: checked again here
    (regular, within the cap). The bytes, or None and the problem."""
    try:
        fd, _size = open_regular(path)
    except NotRegularFile:
        return None, "result is not a regular file"
    except OSError:
        return None, NO_RESULT
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        return None, "result larger than the cap"
    return data, None


def read_archived_file(container: Container, path: str, max_bytes: int) -> tuple[bytes | None, str | None]:
    """One regular file of a container, through the Docker API.

    The stat header is checked before any content is read; the tar member type is checked again,
    so a symlink, FIFO, device or directory never gets read, and size is capped before reading."""
    try:
        stream, header = container.get_archive(path)
    except NotFound:
        return None, NO_RESULT
    mode = int(header.get("mode", 0))
    if mode & _GO_TYPE_BITS or header.get("linkTarget"):
        _drain_close(stream)
        return None, "result is not a regular file"
    if int(header.get("size", 0)) > max_bytes:
        _drain_close(stream)
        return None, "result larger than the cap"
    buf = io.BytesIO()
    for chunk in stream:
        buf.write(chunk)
        if buf.tell() > max_bytes + 64 * 1024:
            return None, "result larger than the cap"
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        members = tar.getmembers()
        if len(members) != 1 or not members[0].isreg():
            return None, "result is not a single regular file"
        if members[0].size > max_bytes:
            return None, "result larger than the cap"
        extracted = tar.extractfile(members[0])
        assert extracted is not None  # a regular file (checked above) always extracts
        return extracted.read(max_bytes + 1), None


def tail(container: Container, cap: int, stdout: bool = True, stderr: bool = True) -> str:
    """At most `cap` bytes of the container's output (both streams, or one), for operators only
    unless the job ran on a twin."""
    out = bytearray()
    try:
        for chunk in container.logs(stdout=stdout, stderr=stderr, stream=True, follow=False):
            out += chunk
            if len(out) >= cap:
                out = out[:cap] + b"\n[truncated]"
                break
    except (APIError, requests.exceptions.RequestException):
        pass
    return out.decode(errors="replace")


def _drain_close(stream: object) -> None:
    close = getattr(stream, "close", None)
    if close:
        close()
