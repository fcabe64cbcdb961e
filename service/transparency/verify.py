"""Offline verification of an attestation bundle (`evalgate verify`): nothing here asks the server.

In order, each check named as the message of a failure names it:
1. `bundle`: the bundle has the fields a bundle has;
2. `signature`: the DSSE envelope is signed by the key (the one given; else the bundle's own, which
   proves integrity but not origin);
3. `statement`: the signed in-toto statement is about this job and its one subject's sha256 is the
   released metrics document's;
4. `checkpoint`: the checkpoint is a note signed by the key under its origin;
5. `inclusion`: the release's leaf is at its index in the tree the checkpoint names;
6. `consistency` (given a checkpoint saved earlier, also signed by the key, of the same origin):
   the bundle's tree extends the saved one, so nothing in it was removed or rewritten since.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from typing import Any

from service.canonical import canonical_json
from service.transparency import dsse, merkle, note, statement


class VerificationFailed(Exception):
    def __init__(self, check: str, reason: str):
        super().__init__(f"{check}: {reason}")
        self.check = check
        self.reason = reason


@dataclass
class Report:
    job_id: str
    key_trusted: bool
    checked: list[str] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)
    tree_size: int | None = None
    leaf_index: int | None = None

    @property
    def complete(self) -> bool:
        return self.key_trusted and not self.not_checked


def parse_key(text: str) -> bytes:
    """A raw Ed25519 public key from a note verifier key (<name>+<hash>+<key>), as checkpoints and
    bundles name it, or from the base64 key GET /v1/attestation-key gives."""
    text = text.strip()
    try:  # first as a bare key: its base64 may hold "+" too, even two of them 8 characters apart
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) == 32:
        return raw
    if text.count("+") >= 2:  # a verifier key is longer than any bare key, so never read as one
        return note.parse_verifier_key(text)[1]
    raise note.NoteError("not an Ed25519 public key (base64 of 32 bytes, or a note verifier key)")


def _hashes(values: Any, what: str) -> list[bytes]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise VerificationFailed("bundle", f"{what} is not a list of base64 hashes")
    try:
        return [base64.b64decode(v, validate=True) for v in values]
    except binascii.Error:
        raise VerificationFailed("bundle", f"{what} holds a hash that is not base64") from None


def _require(bundle: dict[str, Any]) -> None:
    wanted = {"job_id": str, "document": dict, "envelope": dict}
    for name, kind in wanted.items():
        if not isinstance(bundle.get(name), kind):
            raise VerificationFailed("bundle", f"field {name!r} is missing or not a {kind.__name__}")
    document = bundle["document"]
    if not isinstance(document.get("metrics"), dict) or not isinstance(document.get("job_id"), str):
        raise VerificationFailed("bundle", "the document needs a job_id and metrics")
    log = bundle.get("log")
    if log is not None:
        if not isinstance(log, dict) or not isinstance(log.get("checkpoint"), str):
            raise VerificationFailed("bundle", "the log part needs a checkpoint")
        if not isinstance(log.get("leaf_index"), int) or isinstance(log.get("leaf_index"), bool):
            raise VerificationFailed("bundle", "the log part needs a leaf_index")


def _statement(bundle: dict[str, Any], key: bytes) -> None:
    try:
        attested = dsse.open_envelope(bundle["envelope"], key)
    except dsse.EnvelopeError as e:
        raise VerificationFailed("signature", str(e)) from None
    job_id, document = bundle["job_id"], bundle["document"]
    if document["job_id"] != job_id:
        raise VerificationFailed("statement", f"the document is about job {document['job_id']}, not {job_id}")
    subjects = attested.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1 or not isinstance(subjects[0], dict):
        raise VerificationFailed("statement", "the statement has not exactly one subject")
    subject = subjects[0]
    if subject.get("name") != statement.subject_name(job_id):
        raise VerificationFailed("statement", f"the statement's subject is {subject.get('name')!r}, not job {job_id}")
    predicate = attested.get("predicate")
    if attested.get("predicateType") != statement.PREDICATE_TYPE or not isinstance(predicate, dict):
        raise VerificationFailed("statement", "the statement's predicate is not an evalgate release")
    if (predicate.get("job") or {}).get("id") != job_id:
        raise VerificationFailed("statement", f"the predicate is about another job than {job_id}")
    try:
        digest = hashlib.sha256(canonical_json(document).encode()).hexdigest()
    except ValueError:
        raise VerificationFailed("statement", "the document holds a value JSON cannot carry") from None
    if (subject.get("digest") or {}).get("sha256") != digest:
        raise VerificationFailed("statement", "the released metrics document does not match the signed statement")


def _checkpoint(text: str, key: bytes, what: str, origin: str | None = None) -> note.Checkpoint:
    try:
        return note.open_checkpoint(text, key, origin)
    except note.NoteError as e:
        raise VerificationFailed(what, str(e)) from None
    except UnicodeError:
        raise VerificationFailed(what, "the checkpoint is not UTF-8") from None


def verify_bundle(bundle: Any, key: bytes | None = None, since: str | None = None) -> Report:
    """Check a bundle; raise VerificationFailed naming the first check that fails. Without `key`,
    the bundle's own verifier key is used and the report says the key was not trusted."""
    if not isinstance(bundle, dict):
        raise VerificationFailed("bundle", "not a JSON object")
    _require(bundle)
    trusted = key is not None
    if key is None:
        try:
            key = parse_key(str(bundle.get("verifier_key", "")))
        except note.NoteError as e:
            raise VerificationFailed("bundle", f"no --key, and the bundle's verifier_key is unusable: {e}") from None
    report = Report(job_id=bundle["job_id"], key_trusted=trusted)
    _statement(bundle, key)
    report.checked += ["signature", "statement"]
    log = bundle.get("log")
    if log is None:
        report.not_checked += ["checkpoint", "inclusion"] + (["consistency"] if since else [])
        return report
    cp = _checkpoint(log["checkpoint"], key, "checkpoint")
    report.checked.append("checkpoint")
    report.tree_size, report.leaf_index = cp.size, log["leaf_index"]
    try:
        leaf = statement.release_leaf(bundle["envelope"])
    except dsse.EnvelopeError as e:
        raise VerificationFailed("inclusion", str(e)) from None
    try:
        proof = _hashes(log.get("inclusion_proof"), "the inclusion proof")
        merkle.verify_inclusion(log["leaf_index"], cp.size, merkle.leaf_hash(leaf), proof, cp.root)
    except merkle.ProofError as e:
        raise VerificationFailed("inclusion", f"the release is not in the log the checkpoint names: {e}") from None
    report.checked.append("inclusion")
    if since is not None:
        _consistency(log, cp, _checkpoint(since, key, "since checkpoint", cp.origin))
        report.checked.append("consistency")
    return report


def _consistency(log: dict[str, Any], new: note.Checkpoint, old: note.Checkpoint) -> None:
    if old.size > new.size:
        raise VerificationFailed(
            "consistency",
            f"the saved checkpoint (size {old.size}) is newer than the bundle's ({new.size}): "
            "the server shows an older log than it showed before, or fetch the bundle again",
        )
    if old.size == 0:
        return  # every log extends the empty one
    if old.size == new.size:
        if old.root != new.root:
            raise VerificationFailed("consistency", f"two checkpoints of size {new.size} differ: the log was forked")
        return
    part = log.get("consistency")
    if not isinstance(part, dict) or part.get("old_size") != old.size:
        raise VerificationFailed(
            "consistency", f"the bundle has no consistency proof from size {old.size}: fetch it with ?since={old.size}"
        )
    try:
        merkle.verify_consistency(old.size, new.size, old.root, new.root, _hashes(part.get("proof"), "the proof"))
    except merkle.ProofError as e:
        raise VerificationFailed("consistency", f"the log does not extend the saved checkpoint: {e}") from None
