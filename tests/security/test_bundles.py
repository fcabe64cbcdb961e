"""Suite bundles are bounded on every dimension, and every odd name is refused with a 4xx that names
the member safely, before a byte is written under the suites directory."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tracemalloc
import unicodedata
import zipfile

import pytest
from pydantic import ValidationError

from service.errors import EvalgateError
from service.registry.bundles import BundleLimits, extract_bundle, tree_digest
from tests import factories
from tests.factories import manifest, tar_gz, zip_bytes

LIMITS = factories.BUNDLE_LIMITS
# Room enough that only the ratio can refuse a bomb.
ROOMY = LIMITS.model_copy(update={"max_unpacked_bytes": 64 << 20, "max_file_bytes": 64 << 20, "max_ratio": 50})
GOOD = [("suite.yaml", manifest("ok", ["accuracy"])), ("main.py", "print('hi')\n")]
DIR = None  # an entry's content: a directory

Entries = list[tuple[str, str | bytes | None]]


def tar_of(entries: Entries, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A .tar.gz; names may carry raw bytes as surrogate escapes ("bad\\udcff.py" is b"bad\\xff.py")."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=fmt, encoding="utf-8", errors="surrogateescape") as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if content is DIR:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            data = content.encode() if isinstance(content, str) else content
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_of(entries: Entries) -> bytes:
    """A .zip; a directory is a name ending in `/`."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in entries:
            if content is DIR:
                zf.writestr(name.rstrip("/") + "/", "")
            else:
                zf.writestr(name, content)
    return buf.getvalue()


def renamed(data: bytes, old: bytes, new: bytes) -> bytes:
    """The zip with one member's name bytes replaced in its local header and the central directory."""
    assert len(old) == len(new) and data.count(old) == 2
    return data.replace(old, new)


def refused(data: bytes, tmp_path, code: str, limits: BundleLimits = LIMITS) -> str:
    """Extract, expect `code`, check the message is safe to show, and that not even the suites
    directory was created (so nothing was written); return the message."""
    root = tmp_path / "suites"
    with pytest.raises(EvalgateError) as e:
        extract_bundle(data, root, limits)
    assert e.value.code == code, e.value.detail
    assert 400 <= e.value.status_code < 500
    detail = e.value.detail
    detail.encode("utf-8")  # no lone surrogate from an undecodable name
    assert detail.isprintable() and len(detail) < 400, detail
    assert not root.exists()
    return detail


both_formats = pytest.mark.parametrize("pack", [tar_of, zip_of], ids=["tar", "zip"])


# -- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=str)
@pytest.mark.parametrize("name", ["bad\udcff.py", "d" * 120 + "/bad\udcff.py"], ids=["short", "long"])
def test_tar_names_that_are_not_utf8_are_refused(tmp_path, fmt, name):
    """Raw name bytes, in the header, a GNU long name or a PAX record (hdrcharset=BINARY)."""
    detail = refused(tar_of([*GOOD, (name, "x")], fmt), tmp_path, "bundle_name_not_utf8")
    assert "bad\\xff.py" in detail


@pytest.mark.parametrize("written", ["badXY.py", "bad\u00e9.py"], ids=["unflagged", "utf8-flag"])
def test_zip_names_that_are_not_utf8_are_refused(tmp_path, written):
    data = renamed(zip_of([*GOOD, (written, "x")]), written.encode(), b"bad\xff\xfe.py")
    assert "bad\\xff\\xfe.py" in refused(data, tmp_path, "bundle_name_not_utf8")


def test_zip_names_without_the_utf8_flag_are_read_as_utf8_not_cp437(tmp_path):
    data = renamed(zip_of([*GOOD, ("cafXY.py", "x")]), b"cafXY.py", "café.py".encode())
    bundle = extract_bundle(data, tmp_path, LIMITS)
    assert (bundle.path / "café.py").read_text() == "x"


@both_formats
@pytest.mark.parametrize(
    "name", ["e\x1b[2Jvil.py", "new\nline.py", "del\x7f.py", "c1\x85.py", "\u202egnp.py", "line\u2028sep.py"]
)
def test_control_and_invisible_characters_are_refused_and_never_echoed(tmp_path, pack, name):
    detail = refused(pack([*GOOD, (name, "x")]), tmp_path, "bundle_name_control_character")
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in detail)
    assert repr(name) in detail


def test_nul_in_a_name_is_refused(tmp_path):
    zipped = renamed(zip_of([*GOOD, ("aXb.py", "x")]), b"aXb.py", b"a\x00b.py")
    assert "'a\\x00b.py'" in refused(zipped, tmp_path / "zip", "bundle_bad_path")
    info = tarfile.TarInfo("ab.py")
    info.pax_headers = {"path": "a\x00b.py"}  # a ustar name cannot hold a NUL; a PAX record can
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b""))
    assert "'a\\x00b.py'" in refused(buf.getvalue(), tmp_path / "tar", "bundle_bad_path")


@both_formats
@pytest.mark.parametrize("name", ["lib/./util.py", "lib//util.py", "./lib/./util.py", "lib/."])
def test_empty_and_dot_components_are_refused(tmp_path, pack, name):
    refused(pack([*GOOD, (name, "x")]), tmp_path, "bundle_non_canonical_path")


def test_a_leading_dot_slash_as_tar_writes_it_is_dropped(tmp_path):
    dotted = tar_of([("./", DIR), *((f"./{n}", c) for n, c in GOOD), ("./lib", DIR), ("./lib/x.py", "1")])
    plain = tar_of([*GOOD, ("lib/x.py", "1")])
    bundle = extract_bundle(dotted, tmp_path / "a", LIMITS)
    assert bundle.sha256 == extract_bundle(plain, tmp_path / "b", LIMITS).sha256 == tree_digest(bundle.path)
    refused(tar_of([*GOOD, ("./main.py", "again")]), tmp_path, "bundle_duplicate_member")


@both_formats
@pytest.mark.parametrize(
    "entries",
    [
        [("a", "file"), ("a/b", "file")],
        [("a/b", "file"), ("a", "file")],
        [("a", DIR), ("a", "file")],
        [("a", "file"), ("a", DIR)],
        [("a", "file"), ("a/b/c", DIR)],
    ],
    ids=["file-then-child", "child-then-file", "dir-then-file", "file-then-dir", "file-then-deep-dir"],
)
def test_a_file_and_a_directory_of_one_name_are_refused_in_either_order(tmp_path, pack, entries):
    assert "'a'" in refused(pack([*GOOD, *entries]), tmp_path, "bundle_file_dir_collision")


@both_formats
@pytest.mark.parametrize(
    "entries, shown",
    [
        ([("Main.py", "x")], "'Main.py'"),
        ([("caf\u00e9.py", "x"), ("cafe\u0301.py", "y")], "'cafe\\u0301.py'"),
        ([("Lib/x.py", "x"), ("lib/y.py", "y")], "'lib'"),
    ],
    ids=["case", "nfc-nfd", "directory-case"],
)
def test_names_differing_only_in_case_or_normalisation_are_refused(tmp_path, pack, entries, shown):
    assert shown in refused(pack([*GOOD, *entries]), tmp_path, "bundle_name_collision")


@both_formats
@pytest.mark.filterwarnings("ignore:Duplicate name")  # zipfile warns as it writes the hostile zip
def test_a_directory_named_twice_is_a_duplicate(tmp_path, pack):
    refused(pack([*GOOD, ("lib", DIR), ("lib", DIR)]), tmp_path, "bundle_duplicate_member")


def test_a_sparse_tar_member_is_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("holes.bin")
        info.type = tarfile.GNUTYPE_SPARSE
        tar.addfile(info)
    assert "'holes.bin'" in refused(buf.getvalue(), tmp_path, "bundle_special_file")


# -- counts, depth and lengths --------------------------------------------------------------------


@both_formats
@pytest.mark.parametrize("named", [True, False], ids=["named", "implied"])
def test_too_many_directories(tmp_path, pack, named):
    dirs = [(f"d{i}", DIR) for i in range(21)] if named else [(f"d{i}/e/x.py", "") for i in range(11)]
    refused(pack([*GOOD, *dirs]), tmp_path, "bundle_too_many_dirs")
    extract_bundle(pack([*GOOD, *dirs[:10]]), tmp_path / "ok", LIMITS)  # at the limit: fine


@both_formats
def test_too_deep(tmp_path, pack):
    assert "'d/d/d/d/d/d/d/d/x.py'" in refused(pack([*GOOD, ("d/" * 8 + "x.py", "")]), tmp_path, "bundle_too_deep")
    extract_bundle(pack([*GOOD, ("d/" * 7 + "x.py", "")]), tmp_path / "ok", LIMITS)


@both_formats
@pytest.mark.parametrize("name", ["x" * 129, "é" * 65], ids=["ascii", "two-byte"])
def test_a_name_component_longer_than_the_limit_in_bytes_is_refused(tmp_path, pack, name):
    refused(pack([*GOOD, (f"lib/{name}", "")]), tmp_path, "bundle_name_too_long")
    extract_bundle(pack([*GOOD, ("lib/" + "é" * 64, "")]), tmp_path / "ok", LIMITS)  # 128 bytes


@both_formats
def test_a_path_longer_than_the_limit_is_refused_and_shown_short(tmp_path, pack):
    name = "/".join(["p" * 120] * 4) + "/end.py"  # 491 bytes: fine
    extract_bundle(pack([*GOOD, (name, "")]), tmp_path / "ok", LIMITS)
    detail = refused(pack([*GOOD, ("q" * 30 + "/" + name, "")]), tmp_path, "bundle_path_too_long")
    assert "'qqq" in detail and "/end.py'" in detail and len(detail) < 200


def test_name_bounds_never_pass_the_filesystems(tmp_path):
    settings = factories.settings(tmp_path)
    assert settings.bundle_max_name_bytes == 255
    with pytest.raises(ValidationError):
        factories.settings(tmp_path, bundle_max_name_bytes=256)


# -- sizes and ratios -----------------------------------------------------------------------------


@both_formats
def test_one_file_larger_than_the_per_file_limit(tmp_path, pack):
    limits = LIMITS.model_copy(update={"max_file_bytes": 1000})
    data = pack([*GOOD, ("blob.bin", os.urandom(1001))])
    assert "'blob.bin'" in refused(data, tmp_path, "bundle_file_too_large", limits)


def test_a_zip_member_that_inflates_too_far_is_refused_from_its_metadata(tmp_path):
    bomb = zip_bytes({**dict(GOOD), "zeros.bin": b"\0" * (8 << 20)})
    assert "'zeros.bin'" in refused(bomb, tmp_path, "bundle_too_compressed", ROOMY)


def test_a_zip_whose_members_inflate_too_far_together_is_refused(tmp_path):
    # Each member is under the per-member bound (1 MiB free); together they are 600 times the archive.
    bomb = zip_bytes({**dict(GOOD), **{f"z{i}.bin": b"\0" * (200 << 10) for i in range(10)}})
    assert "at member 'z" in refused(bomb, tmp_path, "bundle_too_compressed", ROOMY)


def _gzip_bomb(inflated: int) -> bytes:
    """A .tar.gz holding the good members, then a PAX header claiming `inflated` bytes of records, all
    zeros: about 1/1000 of that on the wire (gzip members of 16 MiB of zeros, concatenated)."""
    head = b""
    for name, content in GOOD:
        info = tarfile.TarInfo(name)
        info.size = len(content.encode())
        head += info.tobuf(tarfile.USTAR_FORMAT) + content.encode().ljust(-(-info.size // 512) * 512, b"\0")
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size = tarfile.XHDTYPE, inflated
    head += pax.tobuf(tarfile.USTAR_FORMAT)
    return gzip.compress(head, mtime=0) + gzip.compress(b"\0" * (16 << 20), mtime=0) * (inflated >> 24)


@pytest.mark.parametrize(
    "limits, code", [(LIMITS, "bundle_too_large_unpacked"), (ROOMY, "bundle_too_compressed")], ids=["size", "ratio"]
)
def test_a_gzip_bomb_is_cut_while_it_inflates(tmp_path, limits, code):
    bomb = _gzip_bomb(256 << 20)
    assert len(bomb) < 300 << 10
    tracemalloc.start()
    try:
        detail = refused(bomb, tmp_path, code, limits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak} bytes held: the stream was inflated, not cut"
    assert "after member 'main.py'" in detail


def test_a_tar_whose_members_declare_too_much_for_the_archive_is_refused(tmp_path):
    data = tar_gz({**dict(GOOD), **{f"z{i}.bin": b"\0" * (1 << 20) for i in range(10)}})
    assert "at member 'z" in refused(data, tmp_path, "bundle_too_compressed", ROOMY)


# -- through HTTP ---------------------------------------------------------------------------------


def _upload(api, data: bytes, filename: str):
    suites = api.settings.data_dir / "suites"
    before = sorted(os.listdir(suites)) if suites.exists() else []
    r = api.client.post("/v1/suites", headers=api.partner, files={"file": (filename, data)})
    assert (sorted(os.listdir(suites)) if suites.exists() else []) == before, "a refused bundle left files"
    return r


def test_a_name_that_is_not_utf8_is_a_422_naming_it(api):
    r = _upload(api, tar_of([*GOOD, ("lib/bad\udcff.py", "x")]), "s.tar.gz")
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "bundle_name_not_utf8"
    assert "b'lib/bad\\xff.py'" in r.json()["detail"]


def test_a_file_and_a_directory_of_one_name_is_a_422_naming_it(api):
    r = _upload(api, zip_of([*GOOD, ("a/b.py", "x"), ("a", "y")]), "s.zip")
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "bundle_file_dir_collision"
    assert "'a'" in r.json()["detail"]


def test_a_gzip_bomb_is_a_413_naming_where_it_was_cut(api):
    r = _upload(api, _gzip_bomb(128 << 20), "s.tar.gz")
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "bundle_too_compressed"
    assert "'main.py'" in r.json()["detail"]
