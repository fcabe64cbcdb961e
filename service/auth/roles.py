"""Who a principal is. Roles are a closed set: every check names them by this type."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    PARTNER = "partner"  # submits jobs, develops suites
    RESEARCHER = "researcher"  # browses, compares and verifies results
    OPERATOR = "operator"  # registers assets, tunes quotas and policies, approves, audits
