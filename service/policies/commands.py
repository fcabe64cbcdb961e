"""`evalgate quotas`, `evalgate policy` and `evalgate usage`: operators' commands, on the database
directly (like `evalgate keys`), recorded as `cli:<user>`. Heavy imports wait until a command runs."""

from __future__ import annotations

import getpass
import sys
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from pydantic import BaseModel
    from sqlalchemy.orm import Session, sessionmaker

    from service.config import Settings

M = TypeVar("M", bound="BaseModel")
LISTS = ("models", "datasets")
DEFAULT = ("default", "null")


def _fail(message: str, code: int = 1) -> NoReturn:
    click.secho(message, fg="red", err=True)
    sys.exit(code)


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _open() -> tuple[Settings, sessionmaker[Session]]:
    from service.config import get_settings
    from service.db import make_engine, migrate
    from service.schema import make_sessionmaker

    settings = get_settings()
    assert settings.database_url is not None  # Settings derives it when unset
    migrate(settings.database_url)
    return settings, make_sessionmaker(make_engine(settings.database_url))


def _echo(model: BaseModel) -> None:
    import yaml

    click.echo(yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False).rstrip())


def parse_assignments(schema: type[M], current: dict[str, Any], pairs: tuple[str, ...]) -> M:
    """`key=value` pairs over what is set now: `key=default` goes back to the default; a list is
    comma-separated (`models=` for none, `models=default` for all)."""
    from pydantic import ValidationError

    values = dict(current)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key not in schema.model_fields:
            _fail(f"{pair!r} is not key=value with a key of: {', '.join(schema.model_fields)}", 2)
        if raw in DEFAULT:
            values[key] = None
        elif key in LISTS:
            values[key] = [x.strip() for x in raw.split(",") if x.strip()]
        else:
            values[key] = raw
    try:
        return schema.model_validate(values)
    except ValidationError as e:
        _fail("; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in e.errors()), 2)


@click.group()
def quotas() -> None:
    """Per-partner limits, public name and usable models and datasets (operators)."""


@quotas.command("show")
@click.argument("partner")
def quotas_show(partner: str) -> None:
    """What applies to PARTNER now, and what an operator set."""
    from service.errors import EvalgateError
    from service.policies import service as policies

    settings, sessions = _open()
    try:
        with sessions() as s:
            _echo(policies.read_partner(s, settings, partner))
    except EvalgateError as e:
        _fail(f"{e.code}: {e.detail}")


@quotas.command("set")
@click.argument("partner")
@click.argument("assignments", nargs=-1, required=True)
@click.option("--reason", required=True, help="why: recorded on the audit log")
def quotas_set(partner: str, assignments: tuple[str, ...], reason: str) -> None:
    """Set PARTNER's limits, e.g. `rows_per_day=50000 max_concurrent_jobs=2` (key=default: the default)."""
    from service.db import session_scope
    from service.errors import EvalgateError
    from service.policies import service as policies
    from service.policies.schemas import PartnerPolicyValues

    settings, sessions = _open()
    try:
        with session_scope(sessions) as s:
            now = policies.read_partner(s, settings, partner)
            values = parse_assignments(PartnerPolicyValues, now.set.model_dump(), assignments)
            found = policies.set_partner(
                s, settings, partner, values, reason=reason, actor=_actor(), if_match=now.version
            )
    except EvalgateError as e:
        _fail(f"{e.code}: {e.detail}")
    _echo(found)


def _dataset_ref(ref: str) -> tuple[str, str]:
    name, sep, version = ref.partition("@")
    if not sep or not name or not version:
        _fail(f"{ref!r} is not DATASET@VERSION", 2)
    return name, version


@click.group()
def policy() -> None:
    """Per-dataset-version privacy and release policy (operators)."""


@policy.command("show")
@click.argument("dataset")
def policy_show(dataset: str) -> None:
    """What applies to DATASET@VERSION now, and what an operator set."""
    from service.errors import EvalgateError
    from service.policies import service as policies

    settings, sessions = _open()
    try:
        with sessions() as s:
            _echo(policies.read_dataset(s, settings, *_dataset_ref(dataset)))
    except EvalgateError as e:
        _fail(f"{e.code}: {e.detail}")


@policy.command("set")
@click.argument("dataset")
@click.argument("assignments", nargs=-1, required=True)
@click.option("--reason", required=True, help="why: recorded on the audit log")
def policy_set(dataset: str, assignments: tuple[str, ...], reason: str) -> None:
    """Set DATASET@VERSION's policy, e.g. `max_epsilon_per_metric=0.2 suppress_below_rows=100`."""
    from service.db import session_scope
    from service.errors import EvalgateError
    from service.policies import service as policies
    from service.policies.schemas import DatasetPolicyValues

    name, version = _dataset_ref(dataset)
    settings, sessions = _open()
    try:
        with session_scope(sessions) as s:
            now = policies.read_dataset(s, settings, name, version)
            values = parse_assignments(DatasetPolicyValues, now.set.model_dump(), assignments)
            found = policies.set_dataset(
                s, settings, name, version, values, reason=reason, actor=_actor(), if_match=now.version
            )
    except EvalgateError as e:
        _fail(f"{e.code}: {e.detail}")
    _echo(found)


@click.command()
@click.option("--partner", default=None, help="one partner (default: all)")
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 3660))
def usage(partner: str | None, days: int) -> None:
    """What partners used per UTC day: jobs admitted, model rows, bits and ε charged."""
    from service.auth import repository as auth_repo
    from service.quotas import usage as quota_usage

    _, sessions = _open()
    with sessions() as s:
        partner_id = None
        if partner is not None:
            found = auth_repo.principal_by_name(s, partner)
            if found is None:
                _fail(f"no partner {partner}")
            partner_id = found.id
        rows = quota_usage.daily(s, days, partner_id)
    click.echo(f"{'day':8s}  {'partner':20s} {'jobs':>5s} {'open':>5s} {'rows':>12s} {'bits':>10s} {'epsilon':>9s}")
    for u in rows:
        click.echo(
            f"{u.day:8s}  {u.partner:20s} {u.jobs:5d} {u.in_progress:5d} {u.rows:12d} {u.bits:10.1f} {u.epsilon:9.4f}"
        )
