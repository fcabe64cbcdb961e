"""Every query of the registry domain."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.registry.models import DatasetVersion, ModelVersion, SuiteVersion

Versioned = type[ModelVersion] | type[DatasetVersion] | type[SuiteVersion]
VersionedT = TypeVar("VersionedT", ModelVersion, DatasetVersion, SuiteVersion)


def by_name_version(session: Session, model: type[VersionedT], name: str, version: str) -> VersionedT | None:
    return session.execute(select(model).where(model.name == name, model.version == version)).scalar_one_or_none()


def insert_unless_taken(session: Session, row: VersionedT, taken: Callable[[], VersionedT | None]) -> VersionedT | None:
    """Insert a new version: None when it was inserted, else the version that `taken` finds, which a
    concurrent registration of the same name@version committed first (the unique constraint decides,
    on SQLite as on Postgres). Any other integrity error propagates."""
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        winner = taken()
        if winner is None:
            raise
        return winner
    return None


def set_status_if(
    session: Session, model: type[ModelVersion] | type[DatasetVersion], row_id: int, expected: str, status: str
) -> bool:
    """Compare-and-set a version's lifecycle status: False when it is no longer `expected` (a
    concurrent change came first). A plain UPDATE ... WHERE, as `SELECT ... FOR UPDATE` holds nothing on SQLite."""
    done = session.execute(
        update(model)
        .where(model.id == row_id, model.status == expected)
        .values(status=status)
        .execution_options(synchronize_session=False)
    )
    return bool(cast(Any, done).rowcount == 1)  # an UPDATE's result (a CursorResult)


def names_of(session: Session, model: Versioned) -> list[str]:
    return sorted(session.execute(select(model.name).distinct()).scalars())


def versions_of(session: Session, model: Versioned, name: str) -> list[str]:
    return sorted(session.execute(select(model.version).where(model.name == name)).scalars())


def blob_in_use(session: Session, sha256: str) -> bool:
    """Whether a registered model or dataset version (or a dataset's features-only copy) has these bytes."""
    columns = (ModelVersion.sha256, DatasetVersion.sha256, DatasetVersion.features_sha256)
    return any(session.execute(select(c).where(c == sha256).limit(1)).first() for c in columns)


def models(session: Session) -> list[ModelVersion]:
    return list(session.execute(select(ModelVersion).order_by(ModelVersion.name, ModelVersion.version)).scalars())


def active_models_named(session: Session, name: str) -> list[ModelVersion]:
    q = select(ModelVersion).where(ModelVersion.name == name, ModelVersion.status == "active")
    return list(session.execute(q.order_by(ModelVersion.version)).scalars())


def active_datasets_named(session: Session, name: str) -> list[DatasetVersion]:
    q = select(DatasetVersion).where(DatasetVersion.name == name, DatasetVersion.status == "active")
    return list(session.execute(q.order_by(DatasetVersion.version)).scalars())


def datasets(session: Session, *, exclude_id: int | None = None) -> list[DatasetVersion]:
    q = select(DatasetVersion).order_by(DatasetVersion.name, DatasetVersion.version)
    if exclude_id is not None:
        q = q.where(DatasetVersion.id != exclude_id)
    return list(session.execute(q).scalars())


def datasets_by_id(session: Session, ids: list[int]) -> dict[int, DatasetVersion]:
    if not ids:
        return {}
    rows = session.execute(select(DatasetVersion).where(DatasetVersion.id.in_(ids))).scalars()
    return {d.id: d for d in rows}


def suites_usable_by(session: Session, principal_id: int | None, name: str | None = None) -> list[SuiteVersion]:
    """Built-in and published suites and the principal's own uploads (every suite when principal_id
    is None), all versions or those of one name."""
    q = select(SuiteVersion).order_by(SuiteVersion.name, SuiteVersion.namespace, SuiteVersion.version)
    if name is not None:
        q = q.where(SuiteVersion.name == name)
    if principal_id is not None:
        q = q.where(
            SuiteVersion.builtin.is_(True) | SuiteVersion.published.is_(True) | (SuiteVersion.owner_id == principal_id)
        )
    return list(session.execute(q).scalars())


def suites_not_approved(session: Session) -> list[SuiteVersion]:
    """Uploaded suite versions no operator has approved yet, oldest first."""
    q = select(SuiteVersion).where(SuiteVersion.approved.is_(False)).order_by(SuiteVersion.created_at, SuiteVersion.id)
    return list(session.execute(q).scalars())


def suite(session: Session, namespace: str, name: str, version: str) -> SuiteVersion | None:
    q = select(SuiteVersion).where(
        SuiteVersion.namespace == namespace, SuiteVersion.name == name, SuiteVersion.version == version
    )
    return session.execute(q).scalar_one_or_none()


def own_suite_namespace(session: Session, principal_id: int, name: str) -> str | None:
    """The namespace of the principal's own suites of this name, if it has uploaded any."""
    q = select(SuiteVersion.namespace).where(SuiteVersion.owner_id == principal_id, SuiteVersion.name == name)
    return session.execute(q.limit(1)).scalar_one_or_none()


def builtin_suite_named(session: Session, name: str) -> bool:
    q = select(SuiteVersion.id).where(SuiteVersion.builtin.is_(True), SuiteVersion.name == name)
    return session.execute(q.limit(1)).first() is not None


def suite_with_digest(session: Session, sha256: str) -> SuiteVersion | None:
    return session.execute(select(SuiteVersion).where(SuiteVersion.sha256 == sha256).limit(1)).scalar_one_or_none()


def models_by_id(session: Session, ids: list[int]) -> dict[int, ModelVersion]:
    if not ids:
        return {}
    return {m.id: m for m in session.execute(select(ModelVersion).where(ModelVersion.id.in_(ids))).scalars()}
