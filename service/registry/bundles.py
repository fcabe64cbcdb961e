"""Suite bundles: safe extraction of partner-supplied tar.gz or zip archives.

Everything is checked from the archive's own metadata before a byte is written, and checked again
while writing: a bundle may contain only regular files and directories with relative, clean names.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
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


class BundleLimits(BaseModel):
    max_files: int
    max_unpacked_bytes: int
    max_metrics: int


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


def _clean_name(name: str) -> str:
    """Return the normalized relative name or raise: no absolute paths, no '..', no odd characters."""
    if not name or "\x00" in name or "\\" in name:
        raise errors.BundleBadPath(f"bad member name {name!r}")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise errors.BundleAbsolutePath(f"absolute path {name!r} in bundle")
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise errors.BundlePathTraversal(f"path {name!r} leaves the bundle")
    if not parts:
        raise errors.BundleBadPath(f"bad member name {name!r}")
    return "/".join(parts)


def tree_digest(root: Path) -> str:
    """SHA-256 over (path, content digest) of every regular file, sorted: the same code gives the
    same digest whether it came as zip or tar.gz."""
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(root).as_posix()
        lines.append(f"{rel}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


# An archive member: its name, whether it is a directory, its declared size, and how to open it.
Member = tuple[str, bool, int, Callable[..., IO[bytes]]]


def _members_tar(data: bytes) -> Iterator[Member]:
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")  # noqa: SIM115 - closed by the `with` below
    except (tarfile.TarError, OSError, EOFError) as e:
        raise errors.BundleUnreadable(f"not a readable tar archive: {type(e).__name__}") from None
    with tar:
        try:
            for m in tar:
                if m.issym() or m.islnk():
                    raise errors.BundleLink(f"link {m.name!r} in bundle")
                if m.ischr() or m.isblk() or m.isfifo() or m.isdev():
                    raise errors.BundleSpecialFile(f"device or fifo {m.name!r} in bundle")
                if not (m.isreg() or m.isdir()):
                    raise errors.BundleSpecialFile(f"unsupported member type for {m.name!r}")
                # Opened only when regular (directories never are), so extractfile gives a file.
                yield m.name, m.isdir(), m.size, (lambda m=m: cast(IO[bytes], tar.extractfile(m)))
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise errors.BundleUnreadable(f"corrupt tar archive: {type(e).__name__}") from None


def _members_zip(data: bytes) -> Iterator[Member]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError) as e:
        raise errors.BundleUnreadable(f"not a readable zip archive: {type(e).__name__}") from None
    with zf:
        for info in zf.infolist():
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the archiver recorded no Unix type
            if kind == stat.S_IFLNK:
                raise errors.BundleLink(f"link {info.filename!r} in bundle")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise errors.BundleSpecialFile(f"device or fifo {info.filename!r} in bundle")
            if info.flag_bits & 0x1:
                raise errors.BundleEncrypted("encrypted zip members are not accepted")
            yield info.filename, info.is_dir(), info.file_size, (lambda info=info: zf.open(info))


def extract_bundle(data: bytes, suites_root: Path, limits: BundleLimits) -> Bundle:
    if data[:4] == b"PK\x03\x04":
        members = _members_zip(data)
    elif data[:2] == b"\x1f\x8b":
        members = _members_tar(data)
    else:
        raise errors.BundleUnknownFormat("bundle must be a .tar.gz or a .zip archive")

    suites_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=suites_root, prefix=".extract-"))
    try:
        files = 0
        total = 0
        seen: set[str] = set()
        for raw_name, is_dir, declared_size, opener in members:
            name = _clean_name(raw_name)
            if name in seen:
                raise errors.BundleDuplicateMember(f"member {name!r} appears twice")
            seen.add(name)
            target = tmp / name
            if is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            files += 1
            if files > limits.max_files:
                raise errors.BundleTooManyFiles(f"bundle has more than {limits.max_files} files")
            if total + declared_size > limits.max_unpacked_bytes:
                raise errors.BundleTooLargeUnpacked(f"bundle unpacks to more than {limits.max_unpacked_bytes} bytes")
            target.parent.mkdir(parents=True, exist_ok=True)
            # O_EXCL|O_NOFOLLOW: never write through something already there.
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            try:
                with os.fdopen(fd, "wb") as out, opener() as src:
                    while chunk := src.read(1 << 16):
                        total += len(chunk)  # count real bytes too: declared sizes can lie
                        if total > limits.max_unpacked_bytes:
                            raise errors.BundleTooLargeUnpacked(
                                f"bundle unpacks to more than {limits.max_unpacked_bytes} bytes"
                            )
                        out.write(chunk)
            except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError) as e:
                raise errors.BundleUnreadable(f"corrupt archive member {name!r}: {type(e).__name__}") from None
        manifest = load_manifest(tmp, limits)
        digest = tree_digest(tmp)
        final = suites_root / digest
        if final.exists():
            shutil.rmtree(tmp)
        else:
            _make_read_only(tmp)
            os.replace(tmp, final)
        return Bundle(manifest=manifest, sha256=digest, path=final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_manifest_file(path: Path) -> SuiteManifest:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return SuiteManifest.model_validate(raw)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise errors.BundleBadManifest(f"{MANIFEST} is not valid YAML: {type(e).__name__}") from None
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise errors.BundleBadManifest(f"{MANIFEST}: {problems}") from None


def load_manifest(root: Path, limits: BundleLimits) -> SuiteManifest:
    path = root / MANIFEST
    if not path.is_file():
        raise errors.BundleNoManifest(f"bundle has no {MANIFEST} at its top level")
    manifest = load_manifest_file(path)
    if len(manifest.metrics) > limits.max_metrics:
        raise errors.BundleBadManifest(f"a suite may declare at most {limits.max_metrics} metrics")
    if not (root / manifest.entrypoint).is_file():
        raise errors.BundleBadManifest(f"entrypoint {manifest.entrypoint!r} is not in the bundle")
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
    suites_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=suites_root, prefix=".install-"))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
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
    import gzip

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
