"""Server secrets are made once, whole, and then only read."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.keyfiles import server_secret


def test_made_once_private_and_the_same_for_every_caller(tmp_path):
    path = tmp_path / "keys" / "s.secret"
    with ThreadPoolExecutor(8) as pool:
        values = set(pool.map(lambda _: server_secret(path), range(32)))
    assert len(values) == 1 and len(values.pop()) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["s.secret"]  # no temporary file left behind


def test_a_short_secret_is_refused_not_used(tmp_path):
    path = tmp_path / "s.secret"
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="fewer than 32 bytes"):
        server_secret(path)
