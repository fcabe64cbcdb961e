"""After registration: a version's license terms, who used it, and retiring it knowingly.

- **License terms** (`LicenseRead`: a short text and an SPDX id or a URL) are set at registration or
  by an operator later, with a reason, on the audit log. Every job's reader sees the terms of its
  model and dataset versions as they are now (`JobRead.licenses`); a release signs the terms it was
  made under into its attestation (release.service), so a later change never rewrites a signed one.
- **Usage**: which partners used a version, how often, and how many of their jobs were released.
- **Purge**: a retired model version's weights are deleted from the blob store (once no job on it is
  still to end), with a reason, on the audit log. Until then the artifacts of released jobs are kept,
  so they can be re-run (service.reproductions); after it a reproduction answers `could_not_run`.
  The row stays: its digest is still what every release made on it names.
- **Retirement** of a model or dataset version with released jobs needs a confirmation: the first request is
  refused 409 `retirement_unconfirmed`, listing the released jobs that could no longer be re-run and a
  token derived from that list; repeating it with `confirm` = the token retires the version. A job
  released in between changes the list and so the token, and the next refusal lists it. A retired
  version takes no new jobs (`model_retired`, `dataset_retired`), and its released jobs reproduce as
  `could_not_run` / `asset_retired`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ValidationError
from sqlalchemy.orm import Session

from service.auth.models import Principal
from service.canonical import digest
from service.jobs import repository as jobs_repo
from service.ledger import service as ledger
from service.policies import errors as policy_errors
from service.registry import errors, storage
from service.registry import repository as registry_repo
from service.registry import service as registry
from service.registry.models import DatasetVersion, ModelVersion
from service.registry.schemas import AssetUsage, LicenseRead, UsageRead

Kind = Literal["model", "dataset"]
RETIRED = "retired"
LISTED = 200  # released jobs named in a refusal; the token covers all of them


def license_from_form(terms: str | None, spdx: str | None, url: str | None) -> LicenseRead | None:
    """Registration's form fields as terms (None when none are given)."""
    if terms is None and spdx is None and url is None:
        return None
    try:
        return LicenseRead(terms=terms or "", spdx=spdx or None, url=url or None)
    except ValidationError as e:
        raise errors.InvalidLicense(
            "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in e.errors())
        ) from None


def set_license(
    session: Session, kind: Kind, ref: str, terms: LicenseRead, *, reason: str, actor: str
) -> ModelVersion | DatasetVersion:
    """Set the terms of a model or dataset version (operators), on the audit log with the old ones."""
    reason = reason.strip()
    if not reason:
        raise policy_errors.ReasonRequired("say why (`reason`): it is recorded with the change")
    row: ModelVersion | DatasetVersion = (
        registry.resolve_model(session, ref) if kind == "model" else registry.resolve_dataset(session, ref)
    )
    new = terms.model_dump()
    ledger.append(
        session,
        actor=actor,
        action=f"{kind}.license_set",
        subject=f"{kind}:{row.ref}",
        data={"old": row.license, "new": new, "reason": reason},
    )
    row.license = new
    session.flush()
    return row


def usage(session: Session, kind: Kind, ref: str) -> UsageRead:
    """Which partners used a version, with their jobs and releases on it (operators)."""
    if kind == "model":
        model = registry.resolve_model(session, ref)
        rows = jobs_repo.usage_by_partner(session, model_version_id=model.id)
        asset = f"model:{model.ref}"
    else:
        dataset = registry.resolve_dataset(session, ref)
        rows = jobs_repo.usage_by_partner(session, dataset_version_id=dataset.id)
        asset = f"dataset:{dataset.ref}"
    names = {p.id: p.name for p in (session.get(Principal, pid) for pid, *_ in rows) if p is not None}
    return UsageRead(
        asset=asset,
        partners=[
            AssetUsage(partner=names.get(pid, str(pid)), jobs=n, released=r, first_used_at=first, last_used_at=last)
            for pid, n, r, first, last in rows
        ],
    )


def confirmation(ref: str, released: list[str]) -> str:
    """The token that confirms retiring `ref` knowing these released jobs (a function of the list)."""
    return digest({"retire": ref, "released": released})[:32]


def _confirmed(ref: str, released: list[str], confirm: str | None) -> str | None:
    """Refuse to retire `ref` unless `confirm` is the token of exactly these released jobs; the token
    (None when there are none)."""
    if not released:
        return None
    token = confirmation(ref, released)
    if confirm != token:
        more = f" ({len(released) - LISTED} more not listed)" if len(released) > LISTED else ""
        raise errors.RetirementUnconfirmed(
            f"retiring {ref} leaves {len(released)} released jobs that can no longer be re-run{more}; "
            f'repeat with "confirm": "{token}" to retire it anyway',
            alternatives=[f"job:{j}" for j in released[:LISTED]] + [f"confirm:{token}"],
        )
    return token


def _set_status(
    session: Session,
    kind: Kind,
    row: ModelVersion | DatasetVersion,
    status: str,
    released: list[str],
    confirm: str | None,
    actor: str,
) -> None:
    """Move `row` to `status`; a confirmed retirement is recorded once this request has retired it (a
    concurrent one may have come first: then it was not this one's)."""
    token = _confirmed(row.ref, released, confirm) if status == RETIRED and row.status != RETIRED else None
    if registry.transition(session, row, kind, status, actor) and token is not None:
        ledger.append(
            session,
            actor=actor,
            action=f"{kind}.retirement_confirmed",
            subject=f"{kind}:{row.ref}",
            data={"released_jobs": released, "confirmation": token},
        )


def set_model_status(session: Session, ref: str, status: str, actor: str, confirm: str | None = None) -> ModelVersion:
    """Move a model version along its lifecycle; retiring one with released jobs needs `confirm`."""
    row = registry.resolve_model(session, ref)
    released = jobs_repo.released_on_model(session, row.id) if status == RETIRED and row.status != RETIRED else []
    _set_status(session, "model", row, status, released, confirm, actor)
    return row


def set_dataset_status(
    session: Session, ref: str, status: str, actor: str, confirm: str | None = None
) -> DatasetVersion:
    """Move a dataset version along the same lifecycle; retiring one with released jobs needs `confirm`.
    Its released jobs keep their results, but can no longer be reproduced (service.reproductions)."""
    row = registry.resolve_dataset(session, ref)
    released = jobs_repo.released_on_dataset(session, row.id) if status == RETIRED and row.status != RETIRED else []
    _set_status(session, "dataset", row, status, released, confirm, actor)
    return row


def purge_model(session: Session, data_dir: Path, ref: str, *, reason: str, actor: str) -> bool:
    """Delete a retired model version's weights (operators); False when they were already gone. The
    file stays while another registered version has the same bytes."""
    reason = reason.strip()
    if not reason:
        raise policy_errors.ReasonRequired("say why (`reason`): it is recorded with the purge")
    row = registry.resolve_model(session, ref)
    if row.status != RETIRED:
        raise errors.ModelNotRetired(
            f"model {row.ref} is {row.status}; only a retired version's weights are purged",
            alternatives=[f"evalgate models retire {row.ref}"],
        )
    if (unfinished := jobs_repo.unfinished_on_model(session, row.id)) > 0:
        raise errors.ModelInUse(
            f"{unfinished} jobs on model {row.ref} have not ended", alternatives=["purge it once they have ended"]
        )
    path = storage.blob_path(data_dir, row.sha256)
    shared = [m.ref for m in registry_repo.models(session) if m.sha256 == row.sha256 and m.id != row.id]
    existed = path.exists()
    if existed and not shared:
        path.unlink()
    ledger.append(
        session,
        actor=actor,
        action="model.purged",
        subject=f"model:{row.ref}",
        data={"sha256": row.sha256, "reason": reason, "deleted": existed and not shared, "kept_for": shared},
    )
    return existed and not shared
