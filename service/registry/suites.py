"""Suite namespaces: which suite version a reference means, who may use it, and publishing.

A suite version is `owner/name@version`. The owner is the principal that uploaded it (its name is
the namespace), or `evalgate` for the built-in suites. A suite is usable by its owner, by operators,
and by everyone once published (built-in suites always are). A bare `name@version` means the
caller's own suite of that name if it has uploaded one, else the built-in one: so a new built-in
suite never changes what a partner's bare reference means, and never collides with an upload.

What a caller cannot use does not exist for it: one 404, the same code, message and alternatives
whether the suite is another partner's or nobody's, and alternatives only among what it may use.
"""

from __future__ import annotations

import re

from sqlalchemy.orm import Session

from service.auth.models import RESERVED_NAME
from service.auth.roles import Role
from service.ledger import service as ledger
from service.registry import errors
from service.registry import repository as repo
from service.registry.models import SuiteVersion
from service.registry.spelling import closest

BUILTIN_NAMESPACE = RESERVED_NAME
_REF = re.compile(r"^(?:(?P<owner>[^/@\s]+)/)?(?P<name>[^/@\s]+)@(?P<version>[^/@\s]+)$")


def parse_ref(ref: str) -> tuple[str | None, str, str]:
    """(owner or None for a bare reference, name, version)."""
    m = _REF.match(ref)
    if m is None:
        raise errors.InvalidReference(f"suite must be given as name@version or owner/name@version, got {ref!r}")
    return m.group("owner"), m.group("name"), m.group("version")


def _usable(row: SuiteVersion, principal_id: int, role: Role) -> bool:
    return role == Role.OPERATOR or row.builtin or row.published or row.owner_id == principal_id


def visible_suite(session: Session, ref: str, principal_id: int, role: Role) -> SuiteVersion:
    """The suite version `ref` means for this caller, if it may use it; else UnknownSuiteVersion with
    the versions of that name it may use."""
    owner, name, version = parse_ref(ref)
    if owner is None:
        owner = repo.own_suite_namespace(session, principal_id, name) or BUILTIN_NAMESPACE
    row = repo.suite(session, owner, name, version)
    if row is not None and _usable(row, principal_id, role):
        return row
    who = None if role == Role.OPERATOR else principal_id
    usable = repo.suites_usable_by(session, who, name=name)
    if not usable:  # no suite of that name the caller may use: those whose names are closest
        everything = repo.suites_usable_by(session, who)
        close = set(closest(name, sorted({s.name for s in everything})))
        usable = [s for s in everything if s.name in close]
    # The message names only what the caller asked for: it reads the same whoever else has what.
    raise errors.UnknownSuiteVersion(f"unknown suite {ref}", alternatives=[s.ref for s in usable])


def resolve_suite(session: Session, ref: str) -> SuiteVersion:
    """Any suite version by owner/name@version (operators; a bare name@version is a built-in one)."""
    return visible_suite(session, ref, 0, Role.OPERATOR)


def check_upload_name(session: Session, owner_id: int, namespace: str, name: str) -> None:
    """Built-in suites' names are reserved: an upload may not take one, unless its owner already had
    suites of that name before the built-in one shipped (its bare references keep meaning its own)."""
    if namespace == BUILTIN_NAMESPACE:
        raise errors.SuiteNameReserved(f"the namespace {namespace!r} is reserved for the built-in suites")
    if repo.builtin_suite_named(session, name) and repo.own_suite_namespace(session, owner_id, name) is None:
        raise errors.SuiteNameReserved(
            f"{name!r} is the name of a built-in suite", alternatives=[f"name your suite other than {name!r}"]
        )


def set_published(
    session: Session, ref: str, published: bool, *, principal_id: int, role: Role, actor: str
) -> SuiteVersion:
    """Publish (or withdraw) a suite version: its owner or an operator. Idempotent. Withdrawing stops
    new jobs of other partners only: a job admitted with it keeps it (jobs hold the version itself)."""
    row = visible_suite(session, ref, principal_id, role)
    if role != Role.OPERATOR and row.owner_id != principal_id:
        # The caller can see it (built-in or published), so saying who may change it tells nothing new.
        raise errors.NotSuiteOwner(f"suite {row.ref} is not yours", alternatives=["ask its owner or an operator"])
    if row.builtin and not published:
        raise errors.BuiltinSuiteAlwaysPublished(f"suite {row.ref} is built in: every partner may use it")
    if row.published != published:
        row.published = published
        ledger.append(
            session,
            actor=actor,
            action="suite.published" if published else "suite.unpublished",
            subject=f"suite:{row.ref}",
            data={"sha256": row.sha256},
        )
    return row
