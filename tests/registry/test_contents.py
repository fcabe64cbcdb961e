"""What an operator reads of a stored bundle: every file with its size and digest, text within bounds,
anything else described, never shown."""

from __future__ import annotations

import hashlib
from pathlib import Path

from service.registry import contents, storage
from service.registry.contents import Shown
from service.registry.models import SuiteVersion


def stored(data_dir: Path, files: dict[str, bytes]) -> SuiteVersion:
    suite = SuiteVersion(sha256="ab" * 32)
    root = storage.suite_dir(data_dir, suite.sha256)
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return suite


def test_every_file_with_its_size_digest_and_text(tmp_path: Path):
    long = ("é" * (contents.FILE_SHOWN_BYTES // 2 + 10)).encode()  # two bytes a character: cut inside one
    files = {
        "main.py": b"print('<hi>')\n",
        "lib/long.py": long,
        "model.bin": b"\x00\x01\x02",
        "latin1.txt": "caf\xe9".encode("latin-1"),
    }
    found = {f.path: f for f in contents.bundle_files(tmp_path, stored(tmp_path, files))}
    assert list(found) == sorted(files)
    for name, data in files.items():
        assert found[name].size == len(data) and found[name].sha256 == hashlib.sha256(data).hexdigest()
    assert found["main.py"].shown == Shown.TEXT and found["main.py"].text == "print('<hi>')\n"
    assert not found["main.py"].truncated
    cut = found["lib/long.py"]
    assert cut.shown == Shown.TEXT and cut.truncated and set(cut.text) == {"é"}
    assert len(cut.text.encode()) == contents.FILE_SHOWN_BYTES  # a whole number of characters
    assert found["model.bin"].shown == Shown.BINARY and found["model.bin"].text == ""
    assert found["latin1.txt"].shown == Shown.BINARY


def test_a_bundle_shows_at_most_its_allowance_of_text(tmp_path: Path):
    chunk = b"x" * contents.FILE_SHOWN_BYTES
    n = contents.BUNDLE_SHOWN_BYTES // contents.FILE_SHOWN_BYTES
    files = {f"f{i:02}.py": chunk for i in range(n + 2)}
    found = contents.bundle_files(tmp_path, stored(tmp_path, files))
    assert [f.shown for f in found] == [Shown.TEXT] * n + [Shown.OMITTED] * 2
    assert sum(len(f.text) for f in found) == contents.BUNDLE_SHOWN_BYTES


def test_a_bundle_not_in_the_store_has_no_files(tmp_path: Path):
    assert contents.bundle_files(tmp_path, SuiteVersion(sha256="cd" * 32)) == []
