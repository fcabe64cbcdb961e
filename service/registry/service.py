"""Model, dataset and suite versions: registration, lookup, lifecycle, approval."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
from sqlalchemy.orm import Session

from service.auth.roles import Role
from service.config import Settings
from service.inference.model_info import InvalidModel, describe_model
from service.ledger import service as ledger
from service.registry import bundles, errors, storage
from service.registry import repository as repo
from service.registry.models import MODEL_STATUSES, DatasetVersion, ModelVersion, SuiteVersion

VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,31}$")
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "builtin_suites"
UNKNOWN = {"model": errors.UnknownModelVersion, "dataset": errors.UnknownDatasetVersion}


def _check_name(name: str, version: str) -> None:
    if not re.match(bundles.NAME_RE, name):
        raise errors.InvalidName("name must be 1-64 of a-z 0-9 _ . -")
    if not VERSION_RE.match(version):
        raise errors.InvalidVersion("version must be 1-32 of A-Z a-z 0-9 . _ + -")


def parse_ref(ref: str, kind: str) -> tuple[str, str]:
    name, sep, version = ref.partition("@")
    if not sep or not name or not version:
        raise errors.InvalidReference(f"{kind} must be given as name@version, got {ref!r}")
    return name, version


def _resolve(session: Session, model: type[repo.VersionedT], ref: str, kind: str) -> repo.VersionedT:
    name, version = parse_ref(ref, kind)
    row = repo.by_name_version(session, model, name, version)
    if row is None:
        raise UNKNOWN[kind](
            f"unknown {kind} {ref}", alternatives=[f"{name}@{v}" for v in repo.versions_of(session, model, name)]
        )
    return row


def resolve_model(session: Session, ref: str) -> ModelVersion:
    return _resolve(session, ModelVersion, ref, "model")


def resolve_dataset(session: Session, ref: str) -> DatasetVersion:
    return _resolve(session, DatasetVersion, ref, "dataset")


def _discard_unreferenced(session: Session, path: Path, sha: str) -> None:
    """A refused upload leaves nothing behind, unless a registered version has the same bytes."""
    if not repo.blob_in_use(session, sha):
        path.unlink(missing_ok=True)


def _taken(kind: str, ref: str) -> errors.VersionTaken:
    return errors.VersionTaken(
        f"{kind} {ref} is already registered with different content",
        alternatives=["register the new content under a new version"],
    )


def register_model(
    session: Session, settings: Settings, *, name: str, version: str, stream: BinaryIO, actor: str
) -> tuple[ModelVersion, bool]:
    """Returns (row, created). The same name@version with the same bytes is accepted again as a no-op."""
    _check_name(name, version)
    sha, path, size = storage.store_stream(settings.data_dir, stream, settings.model_max_bytes, errors.ModelTooLarge)
    existing = repo.by_name_version(session, ModelVersion, name, version)
    if existing is not None:
        if existing.sha256 != sha:
            raise _taken("model", f"{name}@{version}")
        return existing, False
    try:
        signature = describe_model(path)
    except InvalidModel as e:
        _discard_unreferenced(session, path, sha)
        raise errors.InvalidModel(str(e)) from None
    row = ModelVersion(name=name, version=version, sha256=sha, size_bytes=size, status="active", signature=signature)
    session.add(row)
    session.flush()
    ledger.append(
        session,
        actor=actor,
        action="model.registered",
        subject=f"model:{row.ref}",
        data={"sha256": sha, "size_bytes": size},
    )
    return row, True


def set_model_status(session: Session, ref: str, status: str, actor: str) -> ModelVersion:
    row = resolve_model(session, ref)
    if status not in MODEL_STATUSES:
        raise errors.InvalidStatus(f"unknown status {status!r}", alternatives=list(MODEL_STATUSES))
    if MODEL_STATUSES.index(status) < MODEL_STATUSES.index(row.status):
        raise errors.InvalidTransition(f"model {ref} is {row.status}; its lifecycle only moves forward")
    if status != row.status:
        ledger.append(
            session, actor=actor, action="model.status", subject=f"model:{ref}", data={"from": row.status, "to": status}
        )
        row.status = status
    return row


def inspect_dataset(path: Path) -> tuple[int, int, int]:
    """(rows, features, classes) of an .npz with float features `x` (n, d) and integer labels `y` (n,)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if set(npz.files) != {"x", "y"}:
                raise errors.InvalidDataset("dataset .npz must hold exactly the arrays x and y")
            x, y = npz["x"], npz["y"]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise errors.InvalidDataset(f"dataset is not a readable .npz without pickles: {type(e).__name__}") from None
    if x.ndim != 2 or x.dtype.kind not in "fiu":
        raise errors.InvalidDataset("x must be a 2-D numeric array")
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(x):
        raise errors.InvalidDataset("y must be a 1-D integer array with one label per row of x")
    if len(y) == 0 or y.min() < 0:
        raise errors.InvalidDataset("y must be non-empty with labels 0..k-1")
    return int(x.shape[0]), int(x.shape[1]), int(y.max()) + 1


def register_dataset(
    session: Session, settings: Settings, *, name: str, version: str, visibility: str, stream: BinaryIO, actor: str
) -> tuple[DatasetVersion, bool]:
    _check_name(name, version)
    if visibility not in ("private", "public"):
        raise errors.InvalidVisibility("visibility must be private or public")
    sha, path, size = storage.store_stream(
        settings.data_dir, stream, settings.dataset_max_bytes, errors.DatasetTooLarge
    )
    existing = repo.by_name_version(session, DatasetVersion, name, version)
    if existing is not None:
        if existing.sha256 != sha:
            raise _taken("dataset", f"{name}@{version}")
        return existing, False
    try:
        rows, features, classes = inspect_dataset(path)
    except errors.InvalidDataset:
        _discard_unreferenced(session, path, sha)
        raise
    row = DatasetVersion(
        name=name,
        version=version,
        sha256=sha,
        size_bytes=size,
        rows=rows,
        features=features,
        classes=classes,
        visibility=visibility,
    )
    session.add(row)
    session.flush()
    ledger.append(
        session,
        actor=actor,
        action="dataset.registered",
        subject=f"dataset:{row.ref}",
        data={"sha256": sha, "rows": rows, "visibility": visibility},
    )
    return row, True


def _limits(settings: Settings) -> bundles.BundleLimits:
    return bundles.BundleLimits(
        max_files=settings.bundle_max_files,
        max_unpacked_bytes=settings.bundle_max_unpacked_bytes,
        max_metrics=settings.max_metrics,
    )


def _record_suite(
    session: Session, bundle: bundles.Bundle, *, builtin: bool, approved: bool, owner_id: int | None, actor: str
) -> tuple[SuiteVersion, bool]:
    m = bundle.manifest
    existing = repo.by_name_version(session, SuiteVersion, m.name, m.version)
    if existing is not None:
        if existing.sha256 != bundle.sha256:
            raise _taken("suite", f"{m.name}@{m.version}")
        return existing, False
    row = SuiteVersion(
        name=m.name,
        version=m.version,
        sha256=bundle.sha256,
        entrypoint=m.entrypoint,
        metrics=m.metric_table(),
        builtin=builtin,
        approved=approved,
        owner_id=owner_id,
    )
    session.add(row)
    session.flush()
    ledger.append(
        session,
        actor=actor,
        action="suite.registered",
        subject=f"suite:{row.ref}",
        data={"sha256": bundle.sha256, "builtin": builtin, "approved": approved, "metrics": m.metric_table()},
    )
    return row, True


def upload_suite(
    session: Session, settings: Settings, *, stream: BinaryIO, owner_id: int, role: Role, actor: str
) -> tuple[SuiteVersion, bool]:
    data = storage.read_capped(stream, settings.bundle_max_bytes, errors.BundleTooLarge)
    bundle = bundles.extract_bundle(data, settings.data_dir / "suites", _limits(settings))
    approved = role == Role.OPERATOR or not settings.custom_suites_require_approval
    return _record_suite(session, bundle, builtin=False, approved=approved, owner_id=owner_id, actor=actor)


def builtin_ref(name: str) -> str:
    """name@version of the built-in suite shipped as `name` in this release."""
    manifest = bundles.load_manifest_file(BUILTIN_DIR / name / bundles.MANIFEST)
    return f"{manifest.name}@{manifest.version}"


def ensure_builtin_suites(session: Session, settings: Settings) -> list[SuiteVersion]:
    """Install and register the suites shipped with the service (trusted by the operator)."""
    rows = []
    for src in sorted(p for p in BUILTIN_DIR.iterdir() if (p / bundles.MANIFEST).is_file()):
        bundle = bundles.install_directory(src, settings.data_dir / "suites", _limits(settings))
        row, _ = _record_suite(session, bundle, builtin=True, approved=True, owner_id=None, actor="system")
        rows.append(row)
    return rows


def approve_suite(session: Session, ref: str, actor: str) -> SuiteVersion:
    row = resolve_suite(session, ref)
    if not row.approved:
        row.approved = True
        ledger.append(
            session, actor=actor, action="suite.approved", subject=f"suite:{ref}", data={"sha256": row.sha256}
        )
    return row


def visible_suite(session: Session, ref: str, principal_id: int, role: Role) -> SuiteVersion:
    """A partner may use built-in suites and its own uploads. Another partner's suite is 'unknown',
    and the versions offered instead are only those the caller may use."""
    name, version = parse_ref(ref, "suite")
    usable = repo.suites_usable_by(session, principal_id if role == Role.PARTNER else None, name=name)
    for row in usable:
        if row.version == version:
            return row
    raise errors.UnknownSuiteVersion(f"unknown suite {ref}", alternatives=[s.ref for s in usable])


def resolve_suite(session: Session, ref: str) -> SuiteVersion:
    """Any suite version by name@version (operators)."""
    return visible_suite(session, ref, 0, Role.OPERATOR)


def usable_model(session: Session, ref: str) -> ModelVersion:
    row = resolve_model(session, ref)
    if row.status == "retired":
        newer = repo.active_models_named(session, row.name)
        raise errors.ModelRetired(f"model {ref} is retired", alternatives=[m.ref for m in newer])
    return row
