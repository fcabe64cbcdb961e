"""Model, dataset and suite versions: registration, lookup, lifecycle, approval."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.config import Settings
from service.errors import Conflict, Forbidden, InvalidInput, NotFound
from service.inference.model_info import InvalidModel, describe_model
from service.ledger import service as ledger
from service.registry import bundles, storage
from service.registry.models import MODEL_STATUSES, DatasetVersion, ModelVersion, SuiteVersion

VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,31}$")
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "builtin_suites"


def _check_name(name: str, version: str) -> None:
    if not re.match(bundles.NAME_RE, name):
        raise InvalidInput("name must be 1-64 of a-z 0-9 _ . -", code="invalid_name")
    if not VERSION_RE.match(version):
        raise InvalidInput("version must be 1-32 of A-Z a-z 0-9 . _ + -", code="invalid_version")


def parse_ref(ref: str, kind: str) -> tuple[str, str]:
    name, sep, version = ref.partition("@")
    if not sep or not name or not version:
        raise InvalidInput(f"{kind} must be given as name@version, got {ref!r}", code="invalid_reference")
    return name, version


def _resolve(session: Session, model, ref: str, kind: str):
    name, version = parse_ref(ref, kind)
    row = session.execute(select(model).where(model.name == name, model.version == version)).scalar_one_or_none()
    if row is None:
        versions = session.execute(select(model.version).where(model.name == name)).scalars().all()
        raise NotFound(
            f"unknown {kind} {ref}",
            code=f"unknown_{kind}_version",
            alternatives=[f"{name}@{v}" for v in sorted(versions)],
        )
    return row


def resolve_model(session: Session, ref: str) -> ModelVersion:
    return _resolve(session, ModelVersion, ref, "model")


def resolve_dataset(session: Session, ref: str) -> DatasetVersion:
    return _resolve(session, DatasetVersion, ref, "dataset")


def resolve_suite(session: Session, ref: str) -> SuiteVersion:
    return _resolve(session, SuiteVersion, ref, "suite")


def _existing(session: Session, model, name: str, version: str):
    return session.execute(select(model).where(model.name == name, model.version == version)).scalar_one_or_none()


def _discard_unreferenced(session: Session, path: Path, sha: str) -> None:
    """A refused upload leaves nothing behind, unless a registered version has the same bytes."""
    for model in (ModelVersion, DatasetVersion):
        if session.execute(select(model.id).where(model.sha256 == sha)).first():
            return
    path.unlink(missing_ok=True)


def _taken(kind: str, ref: str) -> Conflict:
    return Conflict(
        f"{kind} {ref} is already registered with different content",
        code="version_taken",
        alternatives=["register the new content under a new version"],
    )


def register_model(
    session: Session, settings: Settings, *, name: str, version: str, stream: BinaryIO, actor: str
) -> tuple[ModelVersion, bool]:
    """Returns (row, created). The same name@version with the same bytes is accepted again as a no-op."""
    _check_name(name, version)
    sha, path, size = storage.store_stream(settings.data_dir, stream, settings.model_max_bytes, "model")
    existing = _existing(session, ModelVersion, name, version)
    if existing is not None:
        if existing.sha256 != sha:
            raise _taken("model", f"{name}@{version}")
        return existing, False
    try:
        signature = describe_model(path)
    except InvalidModel as e:
        _discard_unreferenced(session, path, sha)
        raise InvalidInput(str(e), code="invalid_model") from None
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
        raise InvalidInput(f"unknown status {status!r}", code="invalid_status", alternatives=list(MODEL_STATUSES))
    if MODEL_STATUSES.index(status) < MODEL_STATUSES.index(row.status):
        raise Conflict(f"model {ref} is {row.status}; its lifecycle only moves forward", code="invalid_transition")
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
                raise InvalidInput("dataset .npz must hold exactly the arrays x and y", code="invalid_dataset")
            x, y = npz["x"], npz["y"]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise InvalidInput(
            f"dataset is not a readable .npz without pickles: {type(e).__name__}", code="invalid_dataset"
        ) from None
    if x.ndim != 2 or x.dtype.kind not in "fiu":
        raise InvalidInput("x must be a 2-D numeric array", code="invalid_dataset")
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(x):
        raise InvalidInput("y must be a 1-D integer array with one label per row of x", code="invalid_dataset")
    if len(y) == 0 or y.min() < 0:
        raise InvalidInput("y must be non-empty with labels 0..k-1", code="invalid_dataset")
    return int(x.shape[0]), int(x.shape[1]), int(y.max()) + 1


def register_dataset(
    session: Session, settings: Settings, *, name: str, version: str, visibility: str, stream: BinaryIO, actor: str
) -> tuple[DatasetVersion, bool]:
    _check_name(name, version)
    if visibility not in ("private", "public"):
        raise InvalidInput("visibility must be private or public", code="invalid_visibility")
    sha, path, size = storage.store_stream(settings.data_dir, stream, settings.dataset_max_bytes, "dataset")
    existing = _existing(session, DatasetVersion, name, version)
    if existing is not None:
        if existing.sha256 != sha:
            raise _taken("dataset", f"{name}@{version}")
        return existing, False
    try:
        rows, features, classes = inspect_dataset(path)
    except InvalidInput:
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
    existing = _existing(session, SuiteVersion, m.name, m.version)
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
    session: Session, settings: Settings, *, stream: BinaryIO, owner_id: int, role: str, actor: str
) -> tuple[SuiteVersion, bool]:
    data = storage.read_capped(stream, settings.bundle_max_bytes, "bundle")
    bundle = bundles.extract_bundle(data, settings.data_dir / "suites", _limits(settings))
    approved = role == "operator" or not settings.custom_suites_require_approval
    return _record_suite(session, bundle, builtin=False, approved=approved, owner_id=owner_id, actor=actor)


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


def visible_suite(session: Session, ref: str, principal_id: int, role: str) -> SuiteVersion:
    """A partner may use built-in suites and its own uploads; another partner's suite is 'unknown'."""
    row = resolve_suite(session, ref)
    if role == "partner" and not row.builtin and row.owner_id != principal_id:
        raise NotFound(f"unknown suite {ref}", code="unknown_suite_version")
    return row


def usable_model(session: Session, ref: str) -> ModelVersion:
    row = resolve_model(session, ref)
    if row.status == "retired":
        newer = (
            session.execute(select(ModelVersion).where(ModelVersion.name == row.name, ModelVersion.status == "active"))
            .scalars()
            .all()
        )
        raise Forbidden(f"model {ref} is retired", code="model_retired", alternatives=[m.ref for m in newer])
    return row
