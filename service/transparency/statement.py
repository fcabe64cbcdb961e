"""What a release attests, and what the log holds of it. Pure functions: the service builds these
when it releases, and `evalgate verify` rebuilds the parts it checks, offline.

- The released metrics document, `{"job_id", "metrics"}` as canonical JSON, is the statement's one
  subject (name `jobs/<id>/metrics.json`, its sha256).
- The predicate is the release's provenance: digests, images, seed, metric kinds, gate policy, noise,
  ε, bits, the (padded) times and the license terms of the model and dataset (when set), all of
  which the job's reader already sees.
- The log's leaf for a release is a commitment, `{"kind": "release", "statement_sha256": ...}`:
  whoever reads the log learns that a release happened, never what it said or whose it was.
"""

from __future__ import annotations

import hashlib
from typing import Any

from service.canonical import canonical_json, sha256_hex
from service.transparency import dsse

PREDICATE_TYPE = "https://evalgate.dev/attestations/release/v1"
RELEASE = "release"


def metrics_document(job_id: str, metrics: dict[str, Any]) -> dict[str, Any]:
    return {"job_id": job_id, "metrics": metrics}


def subject_name(job_id: str) -> str:
    return f"jobs/{job_id}/metrics.json"


def release_statement(
    job_id: str,
    metrics: dict[str, Any],
    disclosure: dict[str, Any],
    provenance: dict[str, Any],
    facts: dict[str, Any],
) -> dict[str, Any]:
    """The in-toto Statement v1 of one release. `facts`: what the gate applied (metric kinds, gate
    policy, ε spent), fixed at admission or by the operator."""
    return {
        "_type": dsse.STATEMENT_TYPE,
        "subject": [
            {
                "name": subject_name(job_id),
                "digest": {"sha256": sha256_hex(canonical_json(metrics_document(job_id, metrics)))},
            }
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "job": {"id": job_id, "spec_sha256": provenance.get("spec_sha256")},
            "suite": provenance.get("suite"),
            "model": provenance.get("model"),
            "dataset": provenance.get("dataset"),
            "mode": provenance.get("mode"),
            "rows": provenance.get("rows"),
            "images": provenance.get("images"),  # the job's and the sidecar's image ids
            "runtime": provenance.get("runtime"),
            "inference": provenance.get("inference"),
            "service_version": provenance.get("service_version"),
            "seed": provenance.get("seed"),
            "metric_kinds": facts.get("metric_kinds", {}),
            "gate_policy": facts.get("gate_policy", {}),
            "noise": disclosure.get("noise", {}),
            "suppressed": disclosure.get("suppressed", []),
            "epsilon_spent": facts.get("epsilon_spent", 0.0),
            "bits_charged": disclosure.get("bits"),
            # Padded, as the job's partner sees them: the real run time would be a side channel.
            "times": {
                "submitted_at": provenance.get("submitted_at"),
                "completed_within_s": provenance.get("completed_within_s"),
            },
            # The license terms the model and dataset versions were used under; only when set, so a
            # release made without any has the predicate it always had.
            **({"licenses": provenance["licenses"]} if provenance.get("licenses") else {}),
        },
    }


def release_leaf(envelope: dict[str, Any]) -> bytes:
    """The log entry of a release: a commitment to its signed statement."""
    payload = dsse.payload_of(envelope)
    return canonical_json({"kind": RELEASE, "statement_sha256": hashlib.sha256(payload).hexdigest()}).encode()
