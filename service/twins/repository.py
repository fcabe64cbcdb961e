"""Every query of the twins domain."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.twins.models import Twin, TwinKind


def twin(session: Session, kind: TwinKind, asset_id: int) -> Twin | None:
    return session.execute(select(Twin).where(Twin.kind == kind, Twin.asset_id == asset_id)).scalar_one_or_none()


def blob_in_use(session: Session, sha256: str) -> bool:
    return session.execute(select(Twin.id).where(Twin.sha256 == sha256).limit(1)).first() is not None
