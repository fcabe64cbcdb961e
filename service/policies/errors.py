"""Refusals of policy changes, and of submissions a partner's policy does not allow."""

from __future__ import annotations

from service.errors import Forbidden, NotFound, PreconditionFailed, PreconditionRequired, Unprocessable


class PolicyChanged(PreconditionFailed):
    """The policy changed since you read it (`If-Match` names an older `ETag`): another operator's
    change would be lost. Read it again, and apply your change to what is there now."""

    code = "policy_changed"


class IfMatchRequired(PreconditionRequired):
    """A policy change must say which version it changes: send the `ETag` of your last read as
    `If-Match`, so two operators cannot silently overwrite each other."""

    code = "if_match_required"


class ReasonRequired(Unprocessable):
    """A policy change needs a `reason` (it is recorded with the change on the audit log)."""

    code = "reason_required"


class PolicyInvalid(Unprocessable):
    """The values do not fit together (e.g. a default ε per metric above the ceiling, a class
    threshold above the row threshold); `detail` says which."""

    code = "policy_invalid"


class UnknownAsset(Unprocessable):
    """A partner's allowed models or datasets name one that is not registered."""

    code = "unknown_asset"


class PolicySubjectNotFound(NotFound):
    """No partner (or dataset version) of that name, or none whose policy you may read."""

    code = "policy_subject_not_found"


class ModelNotAllowed(Forbidden):
    """The partner's policy does not let it use this model; `alternatives` lists the ones it may use."""

    code = "model_not_allowed"


class DatasetNotAllowed(Forbidden):
    """The partner's policy does not let it use this dataset; `alternatives` lists the ones it may use."""

    code = "dataset_not_allowed"
