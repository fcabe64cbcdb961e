from __future__ import annotations

from pydantic import BaseModel, Field


class CheckpointRead(BaseModel):
    checkpoint: str = Field(description="the signed note (c2sp.org/tlog-checkpoint): origin, size, root hash")
    origin: str
    size: int
    root_hash: str = Field(description="base64")
    verifier_key: str = Field(description="the note verifier key of its signature: <origin>+<hash>+<key>")


class EntryRead(BaseModel):
    index: int
    kind: str
    data: str = Field(description="the leaf's bytes (canonical JSON); its hash is SHA-256(0x00 || data)")
    leaf_hash: str = Field(description="base64")


class EntriesRead(BaseModel):
    entries: list[EntryRead]


class InclusionRead(BaseModel):
    index: int
    tree_size: int
    leaf_hash: str = Field(description="base64")
    proof: list[str] = Field(description="RFC 9162 inclusion path, base64 hashes")


class ConsistencyRead(BaseModel):
    old_size: int
    new_size: int
    proof: list[str] = Field(description="RFC 9162 consistency proof, base64 hashes")


class ConsistencyPart(BaseModel):
    old_size: int
    proof: list[str]


class LogPart(BaseModel):
    leaf_index: int
    inclusion_proof: list[str]
    checkpoint: str
    consistency: ConsistencyPart | None = None


class Envelope(BaseModel):
    payloadType: str  # the DSSE envelope's own field name
    payload: str = Field(description="base64 of the in-toto Statement v1 (canonical JSON)")
    signatures: list[dict[str, str]] = Field(description="keyid and sig (base64 Ed25519 over DSSE's PAE)")


class MetricsDocument(BaseModel):
    job_id: str
    metrics: dict[str, float]


class AttestationBundle(BaseModel):
    """One release, verifiable offline with `evalgate verify`."""

    media_type: str
    job_id: str
    document: MetricsDocument = Field(description="the released metrics: the statement's subject")
    envelope: Envelope
    verifier_key: str = Field(description="the service's key as a note verifier key (check it against one you trust)")
    log: LogPart | None = Field(
        default=None, description="inclusion proof and signed checkpoint; researchers and operators only"
    )
