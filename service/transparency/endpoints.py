"""HTTP for the transparency log (researchers and operators) and for a job's attestation (whoever
may see the job's release). Why partners do not read the log: SECURITY.md, "The transparency log"."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from service.auth.dependencies import AnyCaller, require_role
from service.auth.roles import Role
from service.auth.service import Caller
from service.deps import SessionDep, SettingsDep
from service.errors import raises
from service.jobs.dependencies import VisibleJob
from service.jobs.views import to_read
from service.release import service as release_service
from service.release.dependencies import SignerDep
from service.transparency import errors, merkle
from service.transparency import service as tlog
from service.transparency.schemas import (
    AttestationBundle,
    CheckpointRead,
    ConsistencyRead,
    EntriesRead,
    EntryRead,
    InclusionRead,
)

router = APIRouter(tags=["transparency"])
LogReader = Annotated[Caller, Depends(require_role(Role.RESEARCHER, Role.OPERATOR))]
b64 = tlog.b64


def _origin(settings: SettingsDep) -> str:
    assert settings.log_origin is not None  # derived by Settings
    return settings.log_origin


@router.get("/v1/log/checkpoint", response_model=CheckpointRead)
def read_checkpoint(caller: LogReader, session: SessionDep, settings: SettingsDep, signer: SignerDep) -> CheckpointRead:
    """The log's latest checkpoint, signed."""
    cp = tlog.checkpoint(session, _origin(settings))
    return CheckpointRead(
        checkpoint=tlog.signed(signer, cp),
        origin=cp.origin,
        size=cp.size,
        root_hash=b64(cp.root),
        verifier_key=tlog.verifier_key(signer, cp.origin),
    )


@router.get("/v1/log/entries", response_model=EntriesRead)
@raises(errors.LogRangeInvalid)
def read_entries(
    caller: LogReader, session: SessionDep, start: Annotated[int, Query(ge=0)], end: Annotated[int, Query(ge=0)]
) -> EntriesRead:
    """The log's entries [start, end), at most 1000."""
    return EntriesRead(
        entries=[
            EntryRead(index=e.idx, kind=e.kind, data=e.data, leaf_hash=b64(merkle.leaf_hash(e.data.encode())))
            for e in tlog.entries(session, start, end)
        ]
    )


@router.get("/v1/log/proofs/inclusion", response_model=InclusionRead)
@raises(errors.LogRangeInvalid)
def read_inclusion(
    caller: LogReader,
    session: SessionDep,
    index: Annotated[int, Query(ge=0)],
    tree_size: Annotated[int, Query(ge=1)],
) -> InclusionRead:
    """The inclusion proof of entry `index` in the tree of `tree_size`."""
    proof = tlog.inclusion_proof(session, index, tree_size)
    leaf = tlog.entries(session, index, index + 1)[0]
    return InclusionRead(
        index=index,
        tree_size=tree_size,
        leaf_hash=b64(merkle.leaf_hash(leaf.data.encode())),
        proof=[b64(h) for h in proof],
    )


@router.get("/v1/log/proofs/consistency", response_model=ConsistencyRead)
@raises(errors.LogRangeInvalid)
def read_consistency(
    caller: LogReader,
    session: SessionDep,
    old_size: Annotated[int, Query(ge=0)],
    new_size: Annotated[int, Query(ge=0)],
) -> ConsistencyRead:
    """The consistency proof from the tree of `old_size` to the tree of `new_size`."""
    proof = tlog.consistency_proof(session, old_size, new_size)
    return ConsistencyRead(old_size=old_size, new_size=new_size, proof=[b64(h) for h in proof])


@router.get("/v1/jobs/{job_id}/attestation", response_model=AttestationBundle, tags=["jobs"])
@raises(errors.AttestationNotFound, errors.LogRangeInvalid)
def read_attestation(
    job: VisibleJob,
    caller: AnyCaller,
    session: SessionDep,
    settings: SettingsDep,
    signer: SignerDep,
    since: Annotated[int | None, Query(ge=0, description="a tree size you saved: adds a consistency proof")] = None,
) -> AttestationBundle:
    """The job's release as one bundle for `evalgate verify`: metrics document, DSSE envelope and,
    for researchers and operators, its inclusion proof and a signed checkpoint."""
    # Whatever the caller may see of the job's release, and when: a partner's at its padded time.
    visible = to_read(session, job, caller, settings.timing_buckets_s).result is not None
    result = release_service.existing(session, job.id) if visible else None
    if result is None or result.envelope is None or result.leaf_index is None:
        raise errors.AttestationNotFound(
            f"job {job.id} has no attested release to show",
            alternatives=["wait for the job's release", f"GET /v1/jobs/{job.id} for its state"],
        )
    # The log's positions count every partner's releases, in the order they really ended: not for partners.
    with_log = caller.role != Role.PARTNER
    raw = tlog.bundle(session, signer, _origin(settings), result, with_log=with_log, since=since if with_log else None)
    return AttestationBundle.model_validate(raw)
