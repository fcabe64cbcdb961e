"""`evalgate quotas|policy|usage|keys` as an operator runs them, on the database directly."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from service.db import make_engine, migrate, session_scope, utcnow
from service.ledger import service as ledger
from service.schema import make_sessionmaker
from tests import factories


def evalgate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def env(tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EVALGATE_")}
    env = {**clean, "EVALGATE_DATA_DIR": str(tmp_path / "data")}
    settings = factories.settings(tmp_path / "data")
    migrate(str(settings.database_url))
    with session_scope(make_sessionmaker(make_engine(str(settings.database_url)))) as s:
        factories.dataset_row(s, name="blobs", rows=1000)
    return env


def test_quotas_set_and_show(env, tmp_path):
    assert evalgate("keys", "create", "--role", "partner", "--name", "acme", env=env).returncode == 0
    r = evalgate("quotas", "set", "acme", "rows_per_day=5000", "max_concurrent_jobs=2", env=env)
    assert r.returncode != 0 and "--reason" in r.stderr  # a change needs a reason
    r = evalgate("quotas", "set", "acme", "rows_per_day=5000", "max_concurrent_jobs=2", "--reason", "trial", env=env)
    assert r.returncode == 0, r.stderr
    shown = yaml.safe_load(evalgate("quotas", "show", "acme", env=env).stdout)
    assert shown["limits"]["rows_per_day"] == 5000 and shown["limits"]["max_concurrent_jobs"] == 2
    assert shown["version"] == 1
    r = evalgate("quotas", "set", "acme", "rows_per_day=default", "datasets=blobs", "--reason", "end", env=env)
    assert r.returncode == 0, r.stderr
    shown = yaml.safe_load(r.stdout)
    assert shown["set"]["rows_per_day"] is None and shown["limits"]["max_concurrent_jobs"] == 2
    assert shown["datasets"] == ["blobs"] and shown["version"] == 2
    r = evalgate("quotas", "set", "acme", "rows_per_day=-3", "--reason", "x", env=env)
    assert r.returncode == 2 and "rows_per_day" in r.stderr
    r = evalgate("quotas", "set", "acme", "colour=red", "--reason", "x", env=env)
    assert r.returncode == 2 and "colour" in r.stderr
    assert evalgate("quotas", "show", "nobody", env=env).returncode == 1
    sessions = make_sessionmaker(make_engine(f"sqlite:///{tmp_path / 'data' / 'evalgate.db'}"))
    with sessions() as s:
        changes = [e for e in ledger.events_for(s, "principal:acme") if e["action"] == "policy.partner_changed"]
    assert [c["data"]["reason"] for c in changes] == ["trial", "end"]
    assert changes[0]["actor"].startswith("cli:")


def test_policy_set_and_show(env):
    r = evalgate(
        "policy", "set", "blobs@1", "max_epsilon_per_metric=0.2", "dp_mechanism=gaussian", "--reason", "r", env=env
    )
    assert r.returncode == 0, r.stderr
    shown = yaml.safe_load(evalgate("policy", "show", "blobs@1", env=env).stdout)
    assert shown["rules"]["max_epsilon_per_metric"] == 0.2 and shown["rules"]["dp_mechanism"] == "gaussian"
    r = evalgate("policy", "set", "blobs@1", "epsilon_per_metric=0.3", "--reason", "r", env=env)
    assert r.returncode == 1 and "policy_invalid" in r.stderr
    assert evalgate("policy", "show", "blobs", env=env).returncode == 2


def test_usage_and_keys_list_and_rotate(env):
    r = evalgate("keys", "create", "--role", "operator", "--name", "ops", env=env)
    old_id = r.stdout.strip().split("_")[1]
    r = evalgate("usage", "--days", "3", env=env)
    assert r.returncode == 0 and r.stdout.startswith("day")
    assert evalgate("usage", "--partner", "nobody", env=env).returncode == 1
    r = evalgate("keys", "rotate", old_id, env=env)
    assert r.returncode == 0, r.stderr
    new_id = r.stdout.strip().split("_")[1]
    listed = evalgate("keys", "list", env=env).stdout
    assert f"{old_id}  ops" in listed and "revoked" in listed.split(old_id)[1].splitlines()[0]
    assert "active" in listed.split(new_id)[1].splitlines()[0]
    assert evalgate("keys", "rotate", old_id, env=env).returncode == 1  # a revoked key is not rotated again


def test_a_key_rotated_with_grace_keeps_working_until_then(env):
    from service.auth import repository as auth_repo

    r = evalgate("keys", "create", "--role", "partner", "--name", "acme", env=env)
    old_id = r.stdout.strip().split("_")[1]
    r = evalgate("keys", "rotate", old_id, "--grace", "2h", env=env)
    assert r.returncode == 0, r.stderr
    settings = factories.settings(Path(env["EVALGATE_DATA_DIR"]))
    with make_sessionmaker(make_engine(str(settings.database_url)))() as s:
        old = auth_repo.key_by_id(s, old_id)
        assert old is not None and old.revoked_at is None
        assert timedelta(hours=1.9) < old.expires_at - utcnow() <= timedelta(hours=2)
        assert [e["action"] for e in ledger.events_for(s, "principal:acme")][-1] == "key.rotated"
