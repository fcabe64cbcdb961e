"""Content-addressed files under the data directory. Written to a temp file, then renamed, so a
failed upload leaves nothing behind."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from service.errors import PayloadTooLarge

CHUNK = 1 << 20


def blob_path(data_dir: Path, sha256: str) -> Path:
    return data_dir / "blobs" / "sha256" / sha256


def suite_dir(data_dir: Path, sha256: str) -> Path:
    return data_dir / "suites" / sha256


def store_stream(
    data_dir: Path, stream: BinaryIO, max_bytes: int, too_large: type[PayloadTooLarge]
) -> tuple[str, Path, int]:
    """Copy a stream into the blob store, refusing it past max_bytes. Returns (sha256, path, size)."""
    root = data_dir / "blobs" / "sha256"
    root.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise too_large(f"the file is larger than {max_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        sha = digest.hexdigest()
        final = root / sha
        os.chmod(tmp, 0o444)
        os.replace(tmp, final)
        return sha, final, size
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_capped(stream: BinaryIO, max_bytes: int, too_large: type[PayloadTooLarge]) -> bytes:
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise too_large(f"the file is larger than {max_bytes} bytes")
    return data
