"""Walking what a partner can read: every field of every answer a partner may get, as a path, for the
inventory test (tests/test_observations.py) and for writing the inventory (SECURITY.md)."""

from __future__ import annotations

import re
from typing import Any

# The endpoints a partner may call, and the name each answer's fields go by in the inventory.
PARTNER_ENDPOINTS = {
    ("get", "/healthz"): "Health",
    ("get", "/v1/whoami"): "Whoami",
    ("get", "/v1/attestation-key"): "AttestationKey",
    ("get", "/v1/models"): "ModelRead[]",
    ("get", "/v1/datasets"): "DatasetRead[]",
    ("get", "/v1/suites"): "SuiteRead[]",
    ("post", "/v1/suites"): "SuiteRead",
    ("post", "/v1/suites/{owner}/{name}/{version}/publish"): "SuiteRead",
    ("post", "/v1/suites/{owner}/{name}/{version}/unpublish"): "SuiteRead",
    ("post", "/v1/jobs"): "JobRead",
    ("get", "/v1/jobs"): "JobList",
    ("get", "/v1/jobs/{job_id}"): "JobRead",
    ("get", "/v1/jobs/{job_id}/attestation"): "AttestationBundle",
    ("post", "/v1/jobs/{job_id}/cancel"): "JobRead",
    ("get", "/v1/jobs/{job_id}/reproductions"): "ReproductionList",
    ("get", "/v1/budget"): "BudgetRead",
    ("get", "/v1/policies/partners/{partner}"): "PartnerPolicyRead",
    ("get", "/v1/policies/datasets/{name}/{version}"): "DatasetPolicyRead",
    ("get", "/v1/datasets/{name}/{version}/twin/provenance"): "TwinRead",
    ("get", "/v1/models/{name}/{version}/twin/provenance"): "TwinRead",
}


def json_paths(value: Any, prefix: str) -> set[str]:
    """Every leaf of a JSON value as a dotted path; list items as [], and the keys of maps whose
    keys are data (metric names, job ids) as *."""
    out: set[str] = set()
    if isinstance(value, dict):
        if not value:
            out.add(prefix)
        for k, v in value.items():
            key = "*" if _data_key(prefix, k) else k
            out |= json_paths(v, f"{prefix}.{key}")
    elif isinstance(value, list):
        out.add(prefix + "[]") if not value else None
        for v in value:
            out |= json_paths(v, prefix + "[]")
    else:
        out.add(prefix)
    return out


# Maps whose keys are names chosen by someone (metrics, slices), not fields of a schema.
_DATA_MAPS = re.compile(r"(\.metrics|\.noise|\.declared|\.slices)$")


def _data_key(prefix: str, key: str) -> bool:
    return bool(_DATA_MAPS.search(prefix))


def normalise(path: str) -> str:
    """One name per kind of answer: a listing holds the same items as a single read."""
    for many, one in (
        ("JobList.jobs[]", "JobRead"),
        ("ModelRead[]", "ModelRead"),
        ("DatasetRead[]", "DatasetRead"),
        ("SuiteRead[]", "SuiteRead"),
        ("ReproductionList.reproductions[]", "ReproductionRead"),
    ):
        if path.startswith(many):
            return one + path[len(many) :]
    return path


def schema_paths(openapi: dict[str, Any], ref: str, prefix: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """Every field a response schema declares, as paths (objects' free-form maps as *)."""
    schemas = openapi["components"]["schemas"]
    out: set[str] = set()

    def walk(node: dict[str, Any], path: str, seen: frozenset[str]) -> None:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            if name in seen:
                return
            walk(schemas[name], path, seen | {name})
            return
        for key in ("anyOf", "oneOf", "allOf"):
            for option in node.get(key, []):
                if option.get("type") != "null":
                    walk(option, path, seen)
        if node.get("type") == "array":
            walk(node.get("items", {}), path + "[]", seen)
        elif node.get("type") == "object" or "properties" in node:
            for name, prop in node.get("properties", {}).items():
                walk(prop, f"{path}.{name}", seen)
            extra = node.get("additionalProperties")
            if extra not in (None, False) or "properties" not in node:
                out.add(path + ".*" if isinstance(extra, dict) and extra else path)
        elif not any(k in node for k in ("anyOf", "oneOf", "allOf")):
            out.add(path)

    walk({"$ref": f"#/components/schemas/{ref}"}, prefix, seen)
    return out
