"""Errors of authentication and keys."""

from __future__ import annotations

from service.errors import Forbidden, NotFound, TooManyRequests, Unauthorized, Unprocessable


class MissingKey(Unauthorized):
    """The request has no `Authorization: Bearer <key>` header."""

    code = "missing_key"


class InvalidKey(Unauthorized):
    """The key is malformed or unknown."""

    code = "invalid_key"


class KeyRevoked(Unauthorized):
    """The key was revoked; ask an operator for a new one."""

    code = "key_revoked"


class KeyExpired(Unauthorized):
    """The key has expired; ask an operator for a new one."""

    code = "key_expired"


class TooManyAuthFailures(TooManyRequests):
    """Too many failed authentications from this client address in the last minute
    (`EVALGATE_AUTH_FAILURES_PER_MINUTE`, per API process); wait `Retry-After` seconds. Refused before
    the key is looked up; a key that authenticated on this process before is still checked."""

    code = "too_many_auth_failures"


class WrongRole(Forbidden):
    """The key's role may not do this; `alternatives` names the roles that may."""

    code = "wrong_role"


class KeyNotFound(NotFound):
    """No key with that id."""

    code = "key_not_found"


class InvalidRole(Unprocessable):
    """A role must be `partner`, `researcher` or `operator`."""

    code = "invalid_role"


class InvalidPrincipalName(Unprocessable):
    """A principal's name is not 1-64 characters of a-z, 0-9, `_`, `.` and `-`."""

    code = "invalid_principal_name"


class PrincipalNameReserved(Unprocessable):
    """The name is reserved for the service itself (`evalgate`, the namespace of the built-in suites)."""

    code = "principal_name_reserved"


class RoleMismatch(Unprocessable):
    """A principal of that name already exists with another role."""

    code = "role_mismatch"


class InvalidDuration(Unprocessable):
    """A key's lifetime is not a positive duration like `12h`, `30d` or `2w`."""

    code = "invalid_duration"
