"""Suite bundles: safe extraction of partner-supplied tar.gz or zip archives.

Extraction reads the archive twice. The first pass reads only its metadata and checks every bound
before a byte is written: member types (regular files and directories only), names, the number of
files and directories, depth, path and name lengths, declared sizes and compression ratios. The
second pass writes, counting the bytes again, because declared sizes can lie. A .tar.gz is inflated
in both passes through a reader that stops at the bound, so a small archive holding a huge tar is cut
while it is read, not after.

A name is bytes that must decode as UTF-8: a tar's raw name bytes (PAX and GNU long names too), and
a zip member's name bytes whether or not it sets the UTF-8 flag (never read as CP437). Paths that
differ only in case or Unicode normalisation are refused, so a bundle means the same tree on every
filesystem (the rules of one name are in service/registry/paths.py; the manifest's, in
service/registry/manifest.py).
"""

from __future__ import annotations

import errno
import functools
import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from pydantic import BaseModel

from service.errors import EvalgateError
from service.registry import errors
from service.registry.manifest import SuiteManifest, load_manifest
from service.registry.paths import clean_name, show

# Up to this many bytes, a bundle may unpack to any multiple of its packed size: a tar of a few tiny
# files is mostly headers and padding, and compresses far better than code does.
RATIO_FREE_BYTES = 1 << 20


class BundleLimits(BaseModel):
    """Bounds on one bundle; the service takes them from the EVALGATE_BUNDLE_* settings."""

    max_files: int
    max_unpacked_bytes: int
    max_metrics: int
    max_dirs: int  # named by a member or implied by a path
    max_depth: int  # components of a path
    max_path_bytes: int  # UTF-8 bytes of a path
    max_name_bytes: int  # UTF-8 bytes of one component
    max_file_bytes: int
    max_ratio: int  # unpacked over packed size (beyond RATIO_FREE_BYTES), of a zip member and of the bundle


@dataclass
class Bundle:
    manifest: SuiteManifest
    sha256: str  # tree digest
    path: Path


def tree_digest(root: Path) -> str:
    """SHA-256 over (path, content digest) of every regular file, sorted: the same code gives the
    same digest whether it came as zip or tar.gz."""
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(root).as_posix()
        lines.append(f"{rel}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


@dataclass(frozen=True)
class _Entry:
    """An archive member as its metadata declares it."""

    name: str  # as the archive names it (tar: undecodable bytes surrogate-escaped)
    is_dir: bool
    size: int  # unpacked bytes; 0 for a directory
    packed: int | None  # compressed bytes of a zip member; None in a tar, whose gzip stream is bounded whole


Opener = Callable[[], IO[bytes]]
# Reads the archive front to back; called twice, once to check and once to write.
Members = Callable[[], Iterator[tuple[_Entry, Opener]]]


def _ratio_cap(limits: BundleLimits, packed: int) -> int:
    return limits.max_ratio * packed + RATIO_FREE_BYTES


def _check_sizes(limits: BundleLimits, entry: _Entry, size: int, total: int, packed_total: int) -> None:
    """Refuse a file of `size` bytes that brings the bundle to `total`: run on the declared sizes
    before anything is written, and again on the bytes as they are written."""
    if total > limits.max_unpacked_bytes:
        raise errors.BundleTooLargeUnpacked(
            f"bundle unpacks to more than {limits.max_unpacked_bytes} bytes (at member {show(entry.name)})"
        )
    if size > limits.max_file_bytes:
        raise errors.BundleFileTooLarge(f"member {show(entry.name)} unpacks to more than {limits.max_file_bytes} bytes")
    if entry.packed is not None and size > _ratio_cap(limits, entry.packed):
        raise errors.BundleTooCompressed(
            f"member {show(entry.name)} unpacks to more than {limits.max_ratio} times its {entry.packed} packed bytes"
        )
    if total > _ratio_cap(limits, packed_total):
        raise errors.BundleTooCompressed(
            f"bundle unpacks to more than {limits.max_ratio} times its {packed_total} bytes"
            f" (at member {show(entry.name)})"
        )


class _Plan:
    """Pass one: every bound checked from the archive's metadata, before a byte is written."""

    def __init__(self, limits: BundleLimits, packed_total: int):
        self.limits = limits
        self.packed_total = packed_total
        self.entries: list[tuple[_Entry, str | None]] = []  # each member and its clean path
        self.files: set[str] = set()
        self.dirs: dict[str, bool] = {}  # path -> named by a member (True) or only implied by a path (False)
        self.folded: dict[str, str] = {}  # NFC-normalised, case-folded path -> the path first seen
        self.declared = 0

    def add(self, entry: _Entry) -> None:
        lim = self.limits
        shown = show(entry.name)
        name = clean_name(entry.name, is_dir=entry.is_dir)
        self.entries.append((entry, name))
        if name is None:
            return
        parts = name.split("/")
        if any(len(p.encode()) > lim.max_name_bytes for p in parts):
            raise errors.BundleNameTooLong(f"member {shown} has a name longer than {lim.max_name_bytes} bytes")
        if len(name.encode()) > lim.max_path_bytes:
            raise errors.BundlePathTooLong(f"member {shown} has a path longer than {lim.max_path_bytes} bytes")
        if len(parts) > lim.max_depth:
            raise errors.BundleTooDeep(f"member {shown} is {len(parts)} levels deep; the limit is {lim.max_depth}")
        if (entry.is_dir and self.dirs.get(name)) or (not entry.is_dir and name in self.files):
            raise errors.BundleDuplicateMember(f"member {shown} appears twice")
        parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
        clash = next((p for p in parents if p in self.files), None)
        if clash is None and (name in self.files if entry.is_dir else name in self.dirs):
            clash = name
        if clash is not None:
            raise errors.BundleFileDirCollision(f"member {shown}: {show(clash)} would be both a file and a directory")
        for path in [*parents, name]:
            first = self.folded.setdefault(unicodedata.normalize("NFC", path).casefold(), path)
            if first != path:
                raise errors.BundleNameCollision(
                    f"member {shown}: {show(path, escape_all=True)} and {show(first, escape_all=True)}"
                    " differ only in case or Unicode normalisation"
                )
        for p in parents:
            self.dirs.setdefault(p, False)
        if entry.is_dir:
            self.dirs[name] = True
        else:
            self.files.add(name)
        if len(self.dirs) > lim.max_dirs:
            raise errors.BundleTooManyDirs(f"bundle has more than {lim.max_dirs} directories (at member {shown})")
        if len(self.files) > lim.max_files:
            raise errors.BundleTooManyFiles(f"bundle has more than {lim.max_files} files (at member {shown})")
        if not entry.is_dir:
            if entry.size < 0:
                raise errors.BundleUnreadable(f"member {shown} declares a negative size")
            self.declared += entry.size
            _check_sizes(lim, entry, entry.size, self.declared, self.packed_total)


class _BoundedGunzip(io.RawIOBase):
    """The tar stream inside a .tar.gz, cut as soon as it inflates past its bound, not after: the
    members' bytes, a header (and PAX or GNU long-name records) per member, and end padding; and
    no more than the ratio allows."""

    def __init__(self, data: bytes, limits: BundleLimits):
        super().__init__()
        self._gz = gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb")
        headers = (limits.max_files + limits.max_dirs + 2) * (4 * tarfile.BLOCKSIZE + 2 * limits.max_path_bytes)
        self._size_cap = limits.max_unpacked_bytes + headers + tarfile.RECORDSIZE
        self._ratio_cap = _ratio_cap(limits, len(data))
        self._max_ratio = limits.max_ratio
        self._inflated = 0
        self.member: str | None = None  # the member last read, named when the stream is cut

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        cap = min(self._size_cap, self._ratio_cap)
        want = cap - self._inflated + 1 if size < 0 else min(size, cap - self._inflated + 1)
        chunk = self._gz.read(want)  # GzipFile inflates no more than it is asked for
        self._inflated += len(chunk)
        if self._inflated > cap:
            where = "before its first member" if self.member is None else f"at or after member {show(self.member)}"
            if self._ratio_cap < self._size_cap:
                raise errors.BundleTooCompressed(
                    f"the gzip stream inflates to more than {self._max_ratio} times the bundle's size, {where}"
                )
            raise errors.BundleTooLargeUnpacked(f"the tar stream inflates to more than {self._size_cap} bytes, {where}")
        return chunk


def _tar_opener(tar: tarfile.TarFile, m: tarfile.TarInfo) -> Opener:
    # Opened only when regular (directories never are), so extractfile gives a file.
    return lambda: cast(IO[bytes], tar.extractfile(m))


def _tar_stream(data: bytes, limits: BundleLimits) -> Iterator[tuple[_Entry, Opener]]:
    stream = _BoundedGunzip(data, limits)
    try:
        # "r|": one pass, front to back, through the bounded stream. Names come as raw bytes,
        # surrogate-escaped where they are not UTF-8, so that _clean_name can refuse them.
        tar = tarfile.open(fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise errors.BundleUnreadable(f"not a readable tar archive: {type(e).__name__}") from None
    with tar:
        try:
            for m in tar:
                stream.member = m.name
                shown = show(m.name)
                if m.issym() or m.islnk():
                    raise errors.BundleLink(f"link {shown} in bundle")
                if m.ischr() or m.isblk() or m.isfifo() or m.isdev():
                    raise errors.BundleSpecialFile(f"device or fifo {shown} in bundle")
                if m.issparse():  # its holes would unpack to zeros the gzip stream never held
                    raise errors.BundleSpecialFile(f"sparse file {shown} in bundle")
                if not (m.isreg() or m.isdir()):
                    raise errors.BundleSpecialFile(f"unsupported member type for {shown}")
                yield _Entry(m.name, m.isdir(), 0 if m.isdir() else m.size, None), _tar_opener(tar, m)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            where = "" if stream.member is None else f" after member {show(stream.member)}"
            raise errors.BundleUnreadable(f"corrupt tar archive{where}: {type(e).__name__}") from None


@contextmanager
def _tar_members(data: bytes, limits: BundleLimits) -> Iterator[Members]:
    yield lambda: _tar_stream(data, limits)


@contextmanager
def _zip_members(data: bytes) -> Iterator[Members]:
    try:
        # metadata_encoding: a name without the UTF-8 flag is decoded as strict UTF-8 too, never as CP437.
        zf = zipfile.ZipFile(io.BytesIO(data), metadata_encoding="utf-8")
    except UnicodeDecodeError as e:
        raise errors.BundleNameNotUtf8(f"member name {show(bytes(e.object))} is not UTF-8") from None
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, ValueError) as e:
        raise errors.BundleUnreadable(f"not a readable zip archive: {type(e).__name__}") from None

    def members() -> Iterator[tuple[_Entry, Opener]]:
        for info in zf.infolist():
            name = info.orig_filename  # zipfile cuts `filename` at a NUL; this is the whole name
            shown = show(name)
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the archiver recorded no Unix type
            if kind == stat.S_IFLNK:
                raise errors.BundleLink(f"link {shown} in bundle")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise errors.BundleSpecialFile(f"device or fifo {shown} in bundle")
            if info.flag_bits & 0x1:
                raise errors.BundleEncrypted(f"zip member {shown} is encrypted; encrypted members are not accepted")
            is_dir = name.endswith("/")
            if not is_dir and info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise errors.BundleUnreadable(f"zip member {shown} is neither stored nor deflated")
            entry = _Entry(name, is_dir, 0 if is_dir else info.file_size, info.compress_size)
            yield entry, functools.partial(zf.open, info)

    with zf:
        yield members


# What reading a member may raise when the archive is corrupt (never a disk error while writing).
_CORRUPT = (
    zipfile.BadZipFile,
    tarfile.TarError,
    gzip.BadGzipFile,
    zlib.error,
    EOFError,
    NotImplementedError,
    UnicodeDecodeError,
)


def _write(tmp: Path, plan: _Plan, members: Iterator[tuple[_Entry, Opener]]) -> None:
    """Pass two: write what pass one allowed, counting the bytes again (declared sizes can lie)."""
    limits, total = plan.limits, 0
    for i, (entry, opener) in enumerate(members):
        if i >= len(plan.entries) or plan.entries[i][0] != entry:
            raise errors.BundleUnreadable(f"member {show(entry.name)} differs between two reads of the bundle")
        name = plan.entries[i][1]
        if name is None:
            continue
        target = tmp / name
        if entry.is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL|O_NOFOLLOW: never write through something already there.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        written = 0
        try:
            with os.fdopen(fd, "wb") as out, opener() as src:
                while chunk := src.read(1 << 16):
                    written += len(chunk)
                    total += len(chunk)
                    if written > entry.size:
                        raise errors.BundleUnreadable(f"member {show(entry.name)} holds more than its declared size")
                    _check_sizes(limits, entry, written, total, plan.packed_total)
                    out.write(chunk)
        except _CORRUPT as e:
            raise errors.BundleUnreadable(f"corrupt archive member {show(entry.name)}: {type(e).__name__}") from None


# Every case a bundle is refused with, here, by its paths (paths.py) and by its manifest (manifest.py):
# an upload of a suite can answer any of them; a test keeps this in step with those modules' `raise`s.
REFUSALS: tuple[type[EvalgateError], ...] = (
    errors.BundleUnknownFormat,
    errors.BundleUnreadable,
    errors.BundleEncrypted,
    errors.BundleBadPath,
    errors.BundleAbsolutePath,
    errors.BundlePathTraversal,
    errors.BundleNonCanonicalPath,
    errors.BundleNameNotUtf8,
    errors.BundleNameControlCharacter,
    errors.BundleNameTooLong,
    errors.BundlePathTooLong,
    errors.BundleTooDeep,
    errors.BundleLink,
    errors.BundleSpecialFile,
    errors.BundleDuplicateMember,
    errors.BundleFileDirCollision,
    errors.BundleNameCollision,
    errors.BundleTooManyFiles,
    errors.BundleTooManyDirs,
    errors.BundleFileTooLarge,
    errors.BundleTooLargeUnpacked,
    errors.BundleTooCompressed,
    errors.BundleNoManifest,
    errors.BundleBadManifest,
)


def extract_bundle(data: bytes, suites_root: Path, limits: BundleLimits) -> Bundle:
    """Check the bundle from its metadata, then write it under `suites_root/<tree digest>`, read-only.
    A refused bundle leaves nothing behind."""
    opened: AbstractContextManager[Members]
    if data[:4] == b"PK\x03\x04":
        opened = _zip_members(data)
    elif data[:2] == b"\x1f\x8b":
        opened = _tar_members(data, limits)
    else:
        raise errors.BundleUnknownFormat("bundle must be a .tar.gz or a .zip archive")

    with opened as members:
        plan = _Plan(limits, len(data))
        for entry, _ in members():
            plan.add(entry)
        return _install(suites_root, limits, ".extract-", lambda tmp: _write(tmp, plan, members()))


def remove_tree(root: Path) -> None:
    """Remove an installed suite directory (read-only by then)."""
    for p in [root, *root.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            os.chmod(p, 0o755)
    shutil.rmtree(root, ignore_errors=True)


def _make_read_only(root: Path) -> None:
    for p in root.rglob("*"):
        os.chmod(p, 0o555 if p.is_dir() else 0o444)
    os.chmod(root, 0o555)


def install_directory(src: Path, suites_root: Path, limits: BundleLimits) -> Bundle:
    """Install a trusted suite shipped as a directory (the built-in suites)."""
    return _install(
        suites_root,
        limits,
        ".install-",
        lambda tmp: shutil.copytree(
            src, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        ),
    )


def _install(suites_root: Path, limits: BundleLimits, prefix: str, fill: Callable[[Path], object]) -> Bundle:
    """Fill a fresh directory beside the store, check its manifest, and move it to its digest's
    place (read-only), or drop it when that content is stored already. Nothing half-made stays."""
    suites_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=suites_root, prefix=prefix))
    try:
        fill(tmp)
        manifest = load_manifest(tmp, limits.max_metrics)
        digest = tree_digest(tmp)
        final = suites_root / digest
        if final.exists():
            shutil.rmtree(tmp)
        else:
            _make_read_only(tmp)
            try:
                os.replace(tmp, final)
            except OSError as e:  # a concurrent upload of the same content moved its tree there first
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not final.is_dir():
                    raise
                remove_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Bundle(manifest=manifest, sha256=digest, path=final)


def pack_directory(src: Path) -> bytes:
    """A suite directory as a reproducible .tar.gz: regular files only, sorted, no owners or times.
    Links and special files are refused here, as the server would refuse them."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for path in sorted(src.rglob("*")):
            rel = path.relative_to(src).as_posix()
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                raise errors.BundleLink(f"{rel} is a link or special file; bundles hold regular files only")
            if path.is_dir():
                continue
            data = path.read_bytes()
            info = tarfile.TarInfo(rel)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
