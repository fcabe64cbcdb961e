"""The transparency log in the database: append a leaf in the caller's transaction, sign
checkpoints, build proofs, and the attestation bundle of a release."""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy.orm import Session

from service.release.models import Result
from service.release.signing import Signer
from service.transparency import merkle, note, statement, verify
from service.transparency import repository as repo
from service.transparency.errors import LogRangeInvalid
from service.transparency.models import LogLeaf, LogNode

MAX_ENTRIES = 1000
BUNDLE_TYPE = "application/vnd.evalgate.attestation-bundle.v1+json"


def b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


def append(session: Session, kind: str, data: bytes) -> int:
    """Append one leaf in the caller's transaction (a rollback leaves no trace); its index."""
    index = repo.claim_next_index(session)
    leaf = merkle.leaf_hash(data)
    siblings: set[tuple[int, int]] = set()
    level, i = 0, index
    while i & 1:
        siblings.add((level, i - 1))
        level, i = level + 1, i >> 1
    known = repo.nodes(session, siblings)
    session.add(LogLeaf(idx=index, kind=kind, data=data.decode()))
    for lv, ix, h in merkle.new_nodes(index, leaf, lambda lv, ix: known[(lv, ix)]):
        session.add(LogNode(level=lv, idx=ix, hash=h))
    session.flush()
    return index


def _hashes(session: Session, ranges: list[merkle.Range]) -> list[bytes]:
    keys = {k for lo, hi in ranges for k in merkle.perfect_nodes(lo, hi)}
    found = repo.nodes(session, keys)
    return [merkle.range_hash(lo, hi, lambda lv, ix: found[(lv, ix)]) for lo, hi in ranges]


def size(session: Session) -> int:
    return repo.size(session)


def _size_at_most_log(session: Session, n: int) -> int:
    current = repo.size(session)
    if n > current:
        raise LogRangeInvalid(f"the log has {current} entries, not {n}", alternatives=[f"tree size <= {current}"])
    return current


def root(session: Session, tree_size: int) -> bytes:
    _size_at_most_log(session, tree_size)
    return _hashes(session, [(0, tree_size)])[0]


def inclusion_proof(session: Session, index: int, tree_size: int) -> list[bytes]:
    _size_at_most_log(session, tree_size)
    if index >= tree_size:
        raise LogRangeInvalid(f"entry {index} is not in a tree of {tree_size}", alternatives=[f"index < {tree_size}"])
    return _hashes(session, merkle.inclusion_ranges(index, tree_size))


def consistency_proof(session: Session, old: int, new: int) -> list[bytes]:
    """RFC 9162's proof from `old` to `new`; empty when old is 0 or equals new (nothing to prove)."""
    _size_at_most_log(session, new)
    if old > new:
        raise LogRangeInvalid(f"old size {old} is above new size {new}", alternatives=[f"old <= {new}"])
    if old == 0 or old == new:
        return []
    return _hashes(session, merkle.consistency_ranges(old, new))


def entries(session: Session, start: int, end: int) -> list[LogLeaf]:
    current = repo.size(session)
    if not start <= end <= current or end - start > MAX_ENTRIES:
        raise LogRangeInvalid(
            f"entries [{start}, {end}) are not a range of at most {MAX_ENTRIES} in a log of {current}",
            alternatives=[f"0 <= start <= end <= {current}, end - start <= {MAX_ENTRIES}"],
        )
    return repo.leaves(session, start, end)


def checkpoint(session: Session, origin: str, tree_size: int | None = None) -> note.Checkpoint:
    """The log's checkpoint at `tree_size` (default: as it is now), unsigned."""
    n = repo.size(session) if tree_size is None else tree_size
    return note.Checkpoint(origin, n, root(session, n))


def signed(signer: Signer, checkpoint: note.Checkpoint) -> str:
    """The checkpoint as a signed note (Ed25519 is deterministic: one size, one note)."""
    return note.sign(checkpoint.text(), checkpoint.origin, signer.public_key_raw, signer.sign_bytes)


def verifier_key(signer: Signer, origin: str) -> str:
    return note.verifier_key(origin, signer.public_key_raw)


def bundle(
    session: Session, signer: Signer, origin: str, result: Result, *, with_log: bool, since: int | None = None
) -> dict[str, Any]:
    """Everything `evalgate verify` needs for one release: the released metrics document, the DSSE
    envelope and, `with_log`, its inclusion proof against a signed checkpoint of the log as it is now
    (and a consistency proof from `since`, a size the reader saved)."""
    assert result.envelope is not None and result.leaf_index is not None
    log = None
    if with_log:
        cp = checkpoint(session, origin)
        log = {
            "leaf_index": result.leaf_index,
            "inclusion_proof": [b64(h) for h in inclusion_proof(session, result.leaf_index, cp.size)],
            "checkpoint": signed(signer, cp),
            "consistency": None
            if since is None
            else {"old_size": since, "proof": [b64(h) for h in consistency_proof(session, since, cp.size)]},
        }
    return {
        "media_type": BUNDLE_TYPE,
        "job_id": result.job_id,
        "document": statement.metrics_document(result.job_id, result.metrics),
        "envelope": result.envelope,
        "verifier_key": verifier_key(signer, origin),
        "log": log,
    }


def check(session: Session, signer: Signer, origin: str, result: Result) -> verify.Report:
    """The server's own check of a release against the log as it is now (what a page shows as
    "verified"); raises verify.VerificationFailed naming what broke. Readers check offline."""
    raw = bundle(session, signer, origin, result, with_log=True)
    return verify.verify_bundle(raw, signer.public_key_raw)
