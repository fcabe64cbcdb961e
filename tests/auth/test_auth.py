from datetime import timedelta

import pytest

from service.auth import service as auth
from service.db import session_scope, utcnow
from service.errors import Unauthorized, Unprocessable
from service.ledger import service as ledger


def test_key_is_shown_once_and_stored_hashed(sessions):
    with session_scope(sessions) as s:
        key, plaintext = auth.create_key(s, name="acme", role="partner", expires_in=timedelta(days=1))
        assert plaintext.startswith(f"eg_{key.key_id}_")
        secret = plaintext.split("_", 2)[2]
        assert secret not in key.secret_sha256 and len(key.secret_sha256) == 64
        caller = auth.authenticate(s, plaintext)
        assert (caller.name, caller.role) == ("acme", "partner")
        # the ledger records the creation but never the secret
        assert all(secret not in e["data"].__repr__() for e in ledger.events_for(s, "principal:acme"))


@pytest.mark.parametrize(
    "token, code",
    [
        (None, "missing_key"),
        ("", "missing_key"),
        ("not-a-key", "invalid_key"),
        ("eg_AAAAAAAAAAAAAAAA_" + "x" * 43, "invalid_key"),
    ],
)
def test_bad_tokens(sessions, token, code):
    with session_scope(sessions) as s, pytest.raises(Unauthorized) as e:
        auth.authenticate(s, token)
    assert e.value.code == code and e.value.status_code == 401


def test_wrong_secret_for_a_real_key_id(sessions):
    with session_scope(sessions) as s:
        _, plaintext = auth.create_key(s, name="acme", role="partner", expires_in=timedelta(days=1))
        forged = plaintext[:-4] + ("AAAA" if not plaintext.endswith("AAAA") else "BBBB")
        with pytest.raises(Unauthorized) as e:
            auth.authenticate(s, forged)
    assert e.value.code == "invalid_key"


def test_expired_and_revoked(sessions):
    with session_scope(sessions) as s:
        key, plaintext = auth.create_key(s, name="acme", role="partner", expires_in=timedelta(hours=1))
        with pytest.raises(Unauthorized) as e:
            auth.authenticate(s, plaintext, now=utcnow() + timedelta(hours=2))
        assert e.value.code == "key_expired"
        auth.revoke_key(s, key.key_id)
        with pytest.raises(Unauthorized) as e:
            auth.authenticate(s, plaintext)
        assert e.value.code == "key_revoked"


def test_role_of_a_principal_is_fixed(sessions):
    with session_scope(sessions) as s:
        auth.create_key(s, name="acme", role="partner", expires_in=timedelta(days=1))
        with pytest.raises(Unprocessable) as e:
            auth.create_key(s, name="acme", role="operator", expires_in=timedelta(days=1))
    assert e.value.code == "role_mismatch"


@pytest.mark.parametrize("text, hours", [("12h", 12), ("30d", 720), ("2w", 336)])
def test_durations(text, hours):
    assert auth.parse_duration(text) == timedelta(hours=hours)


@pytest.mark.parametrize("text", ["0d", "30", "1y", "-1d", "d", ""])
def test_bad_durations(text):
    with pytest.raises(Unprocessable):
        auth.parse_duration(text)
