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
filesystem. Errors name the member escaped and cut short (`_show`).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import math
import os
import re
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
from typing import IO, Any, Literal, cast

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from service.errors import EvalgateError
from service.registry import errors
from service.release import metrics
from service.release.catalogue import MetricDecl, parse_declarations

MANIFEST = "suite.yaml"
NAME_RE = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
SEMVER_RE = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]{1,32})?$"
METRIC_RE = r"^[a-z][a-z0-9_]{0,63}$"
# Up to this many bytes, a bundle may unpack to any multiple of its packed size: a tar of a few tiny
# files is mostly headers and padding, and compresses far better than code does.
RATIO_FREE_BYTES = 1 << 20
SHOW_MAX = 80  # characters of a member's name shown in an error
# Unicode categories refused in names: controls (C0, DEL, C1), invisible format characters such as
# bidirectional overrides, and line and paragraph separators.
INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})


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


class RowsDecl(BaseModel):
    """What a rows-mode suite's code writes, one row per dataset row, and which of the service's
    metrics it offers (service.release.metrics)."""

    model_config = {"extra": "forbid"}

    kind: Literal["classification", "regression"]
    # Regression: predictions are clamped into this range, and errors counted up to its width.
    value_range: tuple[float, float] | None = None
    offers: list[str] | None = Field(default=None, description="metric families offered; all if omitted")

    @model_validator(mode="after")
    def _check(self) -> RowsDecl:
        if self.kind == "regression":
            if self.value_range is None:
                raise ValueError("regression rows need value_range: [min, max]")
            lo, hi = self.value_range
            if not (math.isfinite(lo) and math.isfinite(hi) and -1e12 <= lo < hi <= 1e12):
                raise ValueError("value_range must be finite, within ±1e12, min below max")
        elif self.value_range is not None:
            raise ValueError("value_range is for regression rows only")
        known = metrics.families(self.kind)
        unknown = sorted(set(self.offers or []) - set(known))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; the catalogue has {known}")
        return self

    def offered(self) -> list[str]:
        return self.offers or metrics.families(self.kind)


class SuiteManifest(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Field(pattern=NAME_RE)
    version: str = Field(pattern=SEMVER_RE)
    entrypoint: str
    # "metrics": the code reports metrics it declares by kind; "rows": it writes per-row outputs and
    # the service computes the metrics from them and the labels, which the code never sees.
    mode: Literal["metrics", "rows"] = "metrics"
    metrics: dict[str, MetricDecl] = Field(default_factory=dict, description="name -> kind (metrics mode)")
    rows: RowsDecl | None = None
    description: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _mode(self) -> SuiteManifest:
        if self.mode == "metrics" and (not self.metrics or self.rows is not None):
            raise ValueError("a metrics-mode suite declares its metrics (and no rows)")
        if self.mode == "rows" and (self.rows is None or self.metrics):
            raise ValueError("a rows-mode suite declares its rows (the service's catalogue names the metrics)")
        return self

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint(cls, v: str) -> str:
        try:
            _clean_name(v)
        except EvalgateError as e:
            raise ValueError(e.detail) from None
        if not v.endswith(".py"):
            raise ValueError("entrypoint must be a .py file")
        return v

    @field_validator("metrics", mode="before")
    @classmethod
    def _metrics(cls, v: object) -> dict[str, MetricDecl]:
        decls = parse_declarations(v)
        for m in decls:
            if not re.match(METRIC_RE, m):
                raise ValueError(f"metric name {m!r} must match {METRIC_RE}")
        return decls

    def rows_table(self) -> dict[str, Any] | None:
        """The rows declaration as stored with the suite version (JSON)."""
        if self.rows is None:
            return None
        return {"kind": self.rows.kind, "value_range": self.rows.value_range, "offers": self.rows.offered()}

    def metric_table(self) -> dict[str, dict[str, Any]]:
        """The declarations as stored with the suite version (JSON)."""
        return {
            name: d.model_dump(exclude_defaults=True) | {"kind": d.kind} for name, d in sorted(self.metrics.items())
        }


@dataclass
class Bundle:
    manifest: SuiteManifest
    sha256: str  # tree digest
    path: Path


def _show(name: str | bytes, *, escape_all: bool = False) -> str:
    """A member's name for a message: quoted and escaped as repr does (as ascii does with
    `escape_all`), so no control character or undecodable byte reaches a log or a terminal raw; a
    long name keeps its start and its end, about SHOW_MAX characters in all."""
    if isinstance(name, bytes):
        raw = name
    else:
        try:
            raw = name.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = name.encode("utf-8", "backslashreplace")
    text: str | bytes
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw  # shown as b'...\xff...'
    quote = ascii if escape_all else repr
    if len(quote(text)) <= SHOW_MAX:
        return quote(text)
    keep = SHOW_MAX // 2
    while keep > 1 and len(quote(text[:keep])) + len(quote(text[-keep:])) > SHOW_MAX - 3:
        keep -= 1
    return f"{quote(text[:keep])}...{quote(text[-keep:])}"


def _clean_name(name: str, *, is_dir: bool = False) -> str | None:
    """The member's path inside the bundle, or None for a directory entry naming the archive's own
    root (`.`). Refused: names that are not UTF-8 or hold a NUL, a backslash or a control character;
    absolute paths; `..`; empty or `.` components (a single leading `./`, as `tar -C dir .` writes,
    is dropped). A directory may end with one `/`, as zip directories do."""
    shown = _show(name)
    try:
        text = name.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:  # tar hands over undecodable bytes surrogate-escaped
        raise errors.BundleNameNotUtf8(f"member name {shown} is not UTF-8") from None
    if not text or "\x00" in text or "\\" in text:
        raise errors.BundleBadPath(f"bad member name {shown}")
    if any(unicodedata.category(c) in INVISIBLE for c in text):
        raise errors.BundleNameControlCharacter(f"member name {shown} holds a control character")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise errors.BundleAbsolutePath(f"absolute path {shown} in bundle")
    if is_dir and text in (".", "./"):
        return None
    if is_dir and text.endswith("/"):
        text = text[:-1]
    parts = text.removeprefix("./").split("/")
    if ".." in parts:
        raise errors.BundlePathTraversal(f"path {shown} leaves the bundle")
    if "" in parts or "." in parts:
        raise errors.BundleNonCanonicalPath(f"path {shown} has an empty or '.' component")
    return "/".join(parts)


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
            f"bundle unpacks to more than {limits.max_unpacked_bytes} bytes (at member {_show(entry.name)})"
        )
    if size > limits.max_file_bytes:
        raise errors.BundleFileTooLarge(
            f"member {_show(entry.name)} unpacks to more than {limits.max_file_bytes} bytes"
        )
    if entry.packed is not None and size > _ratio_cap(limits, entry.packed):
        raise errors.BundleTooCompressed(
            f"member {_show(entry.name)} unpacks to more than {limits.max_ratio} times its {entry.packed} packed bytes"
        )
    if total > _ratio_cap(limits, packed_total):
        raise errors.BundleTooCompressed(
            f"bundle unpacks to more than {limits.max_ratio} times its {packed_total} bytes"
            f" (at member {_show(entry.name)})"
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
        shown = _show(entry.name)
        name = _clean_name(entry.name, is_dir=entry.is_dir)
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
            raise errors.BundleFileDirCollision(f"member {shown}: {_show(clash)} would be both a file and a directory")
        for path in [*parents, name]:
            first = self.folded.setdefault(unicodedata.normalize("NFC", path).casefold(), path)
            if first != path:
                raise errors.BundleNameCollision(
                    f"member {shown}: {_show(path, escape_all=True)} and {_show(first, escape_all=True)}"
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
            where = "before its first member" if self.member is None else f"at or after member {_show(self.member)}"
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
                shown = _show(m.name)
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
            where = "" if stream.member is None else f" after member {_show(stream.member)}"
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
        raise errors.BundleNameNotUtf8(f"member name {_show(bytes(e.object))} is not UTF-8") from None
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, ValueError) as e:
        raise errors.BundleUnreadable(f"not a readable zip archive: {type(e).__name__}") from None

    def members() -> Iterator[tuple[_Entry, Opener]]:
        for info in zf.infolist():
            name = info.orig_filename  # zipfile cuts `filename` at a NUL; this is the whole name
            shown = _show(name)
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
            raise errors.BundleUnreadable(f"member {_show(entry.name)} differs between two reads of the bundle")
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
                        raise errors.BundleUnreadable(f"member {_show(entry.name)} holds more than its declared size")
                    _check_sizes(limits, entry, written, total, plan.packed_total)
                    out.write(chunk)
        except _CORRUPT as e:
            raise errors.BundleUnreadable(f"corrupt archive member {_show(entry.name)}: {type(e).__name__}") from None


# Every case a bundle is refused with, here and by the manifest's loading (an upload of a suite can
# answer any of them; a test keeps this in step with the `raise`s of this module).
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


def load_manifest_file(path: Path) -> SuiteManifest:
    """The manifest, or BundleBadManifest naming the line (and column) of what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = yaml.safe_load(text)
        return SuiteManifest.model_validate(raw)
    except UnicodeDecodeError:
        raise errors.BundleBadManifest(f"{MANIFEST} is not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise errors.BundleBadManifest(f"{MANIFEST} is not valid YAML{where}: {problem}") from None
    except ValidationError as e:
        lines = _key_lines(text)
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'the top level'}"
            + (f" (line {lines[err['loc'][0]]})" if err["loc"] and err["loc"][0] in lines else "")
            + f": {err['msg']}"
            for err in e.errors()
        )
        raise errors.BundleBadManifest(f"{MANIFEST}: {problems}") from None


def _key_lines(text: str) -> dict[object, int]:
    """The line of each top-level key of a YAML mapping, for messages."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


def load_manifest(root: Path, limits: BundleLimits) -> SuiteManifest:
    path = root / MANIFEST
    if not path.is_file():
        raise errors.BundleNoManifest(f"bundle has no {MANIFEST} at its top level")
    manifest = load_manifest_file(path)
    if len(manifest.metrics) > limits.max_metrics:
        raise errors.BundleBadManifest(f"a suite may declare at most {limits.max_metrics} metrics")
    if not (root / manifest.entrypoint).is_file():
        found = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if p.is_file())[:20]
        raise errors.BundleBadManifest(
            f"entrypoint {manifest.entrypoint!r} is not in the bundle",
            alternatives=[f"entrypoint: {f}" for f in found] or ["add the entrypoint file to the suite directory"],
        )
    return manifest


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
        manifest = load_manifest(tmp, limits)
        digest = tree_digest(tmp)
        final = suites_root / digest
        if final.exists():
            shutil.rmtree(tmp)
        else:
            _make_read_only(tmp)
            os.replace(tmp, final)
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
