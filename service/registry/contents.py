"""What an operator reads of a suite before approving its code: every file of its bundle as stored
(the tree its jobs will run), each with its size and digest, text shown up to a bound.

The files are the partner's, so nothing here trusts them: text is handed to templates that escape
it, a file that is not UTF-8 text (or holds a NUL) is described, never shown, and what is shown is
bounded per file and per bundle, so a page stays readable whatever the bundle holds."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from service.registry import storage
from service.registry.models import SuiteVersion

FILE_SHOWN_BYTES = 64 << 10  # a file's text shown up to this much
BUNDLE_SHOWN_BYTES = 512 << 10  # and a bundle's, over all its files
CHUNK = 1 << 20


class Shown(StrEnum):
    TEXT = "text"  # `text` holds the file (its first FILE_SHOWN_BYTES if `truncated`)
    BINARY = "binary"  # not UTF-8 text: size and digest only
    OMITTED = "omitted"  # text, but the bundle's allowance was spent on the files before it


@dataclass(frozen=True)
class BundleFile:
    path: str  # relative to the bundle's root, with /
    size: int
    sha256: str
    shown: Shown
    text: str = ""
    truncated: bool = False


def _head_text(head: bytes, cut: bool) -> str | None:
    """The bytes as text, or None if they are not UTF-8 text. A head cut short may end inside a
    character: up to three trailing bytes are dropped before deciding."""
    if b"\x00" in head:
        return None
    for trim in range(4 if cut else 1):
        try:
            return head[: len(head) - trim].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def _read(path: Path) -> tuple[int, str, bytes]:
    """Size, SHA-256 and the first FILE_SHOWN_BYTES of a file, in one pass."""
    digest, size, head = hashlib.sha256(), 0, b""
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            if len(head) < FILE_SHOWN_BYTES:
                head += chunk[: FILE_SHOWN_BYTES - len(head)]
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest(), head


def bundle_files(data_dir: Path, suite: SuiteVersion) -> list[BundleFile]:
    """Every regular file of the suite's stored bundle, by path. Empty if the bundle is not stored."""
    root = storage.suite_dir(data_dir, suite.sha256)
    if not root.is_dir():
        return []
    files, left = [], BUNDLE_SHOWN_BYTES
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        size, sha256, head = _read(path)
        rel = path.relative_to(root).as_posix()
        text = _head_text(head, cut=size > len(head))
        if text is None:
            files.append(BundleFile(rel, size, sha256, Shown.BINARY))
        elif left <= 0:
            files.append(BundleFile(rel, size, sha256, Shown.OMITTED))
        else:
            shown = text[:left] if len(head) > left else text
            files.append(BundleFile(rel, size, sha256, Shown.TEXT, shown, truncated=len(shown.encode()) < size))
            left -= len(head)
    return files
