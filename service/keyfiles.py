"""A deployment's server secrets (HMAC keys) as files beside its signing key: made once, whole or not
at all, and then only read."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

SIZE = 32


def server_secret(path: Path) -> bytes:
    """The secret at `path`, made (0600, 32 random bytes) on first use. Written to a temporary file,
    flushed to disk and then linked into place: a full disk or a crash leaves no short secret behind
    (the next use makes it again), and of two processes making it at once both use the first one's."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(SIZE))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # fails if it exists: never replaces a secret in use
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    value = path.read_bytes()
    if len(value) < SIZE:
        raise ValueError(f"{path} holds fewer than {SIZE} bytes")
    return value
