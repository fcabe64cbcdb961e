"""Refusals of approval decisions."""

from __future__ import annotations

from service.errors import Conflict, NotFound


class ApprovalRequestNotFound(NotFound):
    """No approval request with that id."""

    code = "approval_request_not_found"


class ApprovalAlreadyDecided(Conflict):
    """The request was already granted, denied, or withdrawn (its job ended); `detail` says which."""

    code = "approval_already_decided"


class SecondOperatorRequired(Conflict):
    """This deployment needs two distinct operators to grant (`EVALGATE_APPROVALS_TWO_OPERATORS`), and
    you already granted this request: another operator must grant it too."""

    code = "second_operator_required"
