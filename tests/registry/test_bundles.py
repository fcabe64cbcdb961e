"""Bundle validation: every hostile archive is refused with a clear code and leaves nothing behind."""

import ast
import inspect
import io
import stat
import tarfile
import zipfile

import pytest

from service.errors import PayloadTooLarge, Unprocessable
from service.registry import bundles, paths
from service.registry import manifest as manifest_module
from service.registry.bundles import extract_bundle, tree_digest
from tests import factories
from tests.factories import manifest, tar_gz, zip_bytes

LIMITS = factories.BUNDLE_LIMITS
GOOD = {"suite.yaml": manifest("ok", ["accuracy"]), "main.py": "print('hi')\n", "lib/util.py": "X = 1\n"}


def extract(data: bytes, root):
    return extract_bundle(data, root, LIMITS)


def leftovers(root):
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.mark.parametrize("pack", [tar_gz, zip_bytes])
def test_valid_bundle_extracts_read_only_with_a_format_independent_digest(tmp_path, pack):
    b = extract(pack(GOOD), tmp_path)
    assert b.manifest.name == "ok" and list(b.manifest.metrics) == ["accuracy"]
    assert (b.path / "lib" / "util.py").read_text() == "X = 1\n"
    assert b.path.name == b.sha256 == tree_digest(b.path)
    assert stat.S_IMODE((b.path / "main.py").stat().st_mode) == 0o444
    assert stat.S_IMODE(b.path.stat().st_mode) == 0o555


def test_same_code_as_zip_or_tar_has_one_digest(tmp_path):
    assert extract(tar_gz(GOOD), tmp_path / "a").sha256 == extract(zip_bytes(GOOD), tmp_path / "b").sha256


def _tar_with(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in GOOD.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content.encode()))
        tar.addfile(member, io.BytesIO(data) if data else None)
    return buf.getvalue()


def _member(name, kind, **kw):
    m = tarfile.TarInfo(name)
    m.type = kind
    for k, v in kw.items():
        setattr(m, k, v)
    return m


@pytest.mark.parametrize(
    "member, code",
    [
        (_member("evil", tarfile.SYMTYPE, linkname="/etc/passwd"), "bundle_link"),
        (_member("evil", tarfile.LNKTYPE, linkname="main.py"), "bundle_link"),
        (_member("evil", tarfile.CHRTYPE, devmajor=1, devminor=3), "bundle_special_file"),
        (_member("evil", tarfile.BLKTYPE, devmajor=8, devminor=0), "bundle_special_file"),
        (_member("evil", tarfile.FIFOTYPE), "bundle_special_file"),
    ],
)
def test_links_and_special_files_are_refused(tmp_path, member, code):
    with pytest.raises(Unprocessable) as e:
        extract(_tar_with(member), tmp_path)
    assert e.value.code == code
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "name, code",
    [
        ("/etc/cron.d/evil", "bundle_absolute_path"),
        ("../../evil.py", "bundle_path_traversal"),
        ("lib/../../evil.py", "bundle_path_traversal"),
        ("C:/evil.py", "bundle_absolute_path"),
        ("lib\\..\\evil.py", "bundle_bad_path"),
    ],
)
@pytest.mark.parametrize("pack", [tar_gz, zip_bytes])
def test_bad_paths_are_refused(tmp_path, name, code, pack):
    with pytest.raises(Unprocessable) as e:
        extract(pack({**GOOD, name: "x"}), tmp_path)
    assert e.value.code == code
    assert leftovers(tmp_path) == []


def test_zip_symlink_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in GOOD.items():
            zf.writestr(name, content)
        info = zipfile.ZipInfo("link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(Unprocessable) as e:
        extract(buf.getvalue(), tmp_path)
    assert e.value.code == "bundle_link"


def test_too_many_files(tmp_path):
    files = {**GOOD, **{f"f{i}.py": "" for i in range(30)}}
    with pytest.raises(Unprocessable) as e:
        extract(tar_gz(files), tmp_path)
    assert e.value.code == "bundle_too_many_files"


@pytest.mark.parametrize("pack", [tar_gz, zip_bytes])
def test_zip_bomb_stops_at_the_unpacked_cap(tmp_path, pack):
    bomb = pack({**GOOD, "zeros.bin": b"\0" * (50 << 20)})
    assert len(bomb) < 200 << 10  # 50 MiB that compresses to almost nothing
    with pytest.raises(PayloadTooLarge) as e:
        extract(bomb, tmp_path)
    assert e.value.code == "bundle_too_large_unpacked" and e.value.status_code == 413
    assert leftovers(tmp_path) == []


def test_zip_that_lies_about_sizes_is_still_capped(tmp_path):
    data = bytearray(zip_bytes({**GOOD, "zeros.bin": b"\0" * (4 << 20)}))
    # Patch the central directory's uncompressed size of zeros.bin down to 10 bytes.
    cd = data.rfind(b"PK\x01\x02")
    while cd != -1:
        name_len = int.from_bytes(data[cd + 28 : cd + 30], "little")
        if data[cd + 46 : cd + 46 + name_len] == b"zeros.bin":
            data[cd + 24 : cd + 28] = (10).to_bytes(4, "little")
        cd = data.rfind(b"PK\x01\x02", 0, cd)
    with pytest.raises((PayloadTooLarge, Unprocessable)):
        extract(bytes(data), tmp_path)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "files, code",
    [
        ({"main.py": "x"}, "bundle_no_manifest"),
        ({"suite.yaml": "name: [unclosed", "main.py": ""}, "bundle_bad_manifest"),
        ({"suite.yaml": manifest("ok", ["accuracy"], entrypoint="missing.py"), "main.py": ""}, "bundle_bad_manifest"),
        ({"suite.yaml": manifest("ok", ["accuracy"], entrypoint="../x.py"), "main.py": ""}, "bundle_bad_manifest"),
        ({"suite.yaml": manifest("ok", ["accuracy"], version="1.0"), "main.py": ""}, "bundle_bad_manifest"),
        ({"suite.yaml": manifest("Bad Name", ["accuracy"]), "main.py": ""}, "bundle_bad_manifest"),
        ({"suite.yaml": manifest("ok", ["Acc-uracy"]), "main.py": ""}, "bundle_bad_manifest"),
        ({"suite.yaml": manifest("ok", [f"m{i}" for i in range(9)]), "main.py": ""}, "bundle_bad_manifest"),
        # Metrics are declared by kind: a bare list of names, an unknown kind or a real without bounds is refused.
        (
            {"suite.yaml": "name: ok\nversion: 1.0.0\nentrypoint: main.py\nmetrics: [accuracy]\n", "main.py": ""},
            "bundle_bad_manifest",
        ),
        ({"suite.yaml": manifest("ok", {"accuracy": "probability"}), "main.py": ""}, "bundle_bad_manifest"),
        ({"suite.yaml": manifest("ok", {"score": {"kind": "real"}}), "main.py": ""}, "bundle_bad_manifest"),
        (
            {"suite.yaml": manifest("ok", {"score": {"kind": "proportion", "sensitivity": 0.001}}), "main.py": ""},
            "bundle_bad_manifest",
        ),
    ],
)
def test_bad_manifests(tmp_path, files, code):
    with pytest.raises(Unprocessable) as e:
        extract(tar_gz(files), tmp_path)
    assert e.value.code == code


@pytest.mark.parametrize("data", [b"", b"plain text", b"\x1f\x8bnot really gzip", b"PK\x03\x04broken"])
def test_not_an_archive(tmp_path, data):
    with pytest.raises(Unprocessable):
        extract(data, tmp_path)
    assert leftovers(tmp_path) == []


def test_duplicate_member_is_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in [*GOOD.items(), ("main.py", "evil")]:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content.encode()))
    with pytest.raises(Unprocessable) as e:
        extract(buf.getvalue(), tmp_path)
    assert e.value.code == "bundle_duplicate_member"


def test_packed_directory_is_reproducible_and_extracts_to_the_same_digest(tmp_path):
    import os

    from service.registry.bundles import pack_directory

    src = tmp_path / "suite"
    (src / "lib").mkdir(parents=True)
    for name, content in GOOD.items():
        (src / name).write_text(content)
    (src / "lib" / "__pycache__").mkdir()
    (src / "lib" / "__pycache__" / "util.cpython-311.pyc").write_bytes(b"junk")
    first = pack_directory(src)
    os.utime(src / "main.py", (1, 1))
    assert pack_directory(src) == first  # times and owners do not enter the bundle
    assert extract(first, tmp_path / "out").sha256 == extract(tar_gz(GOOD), tmp_path / "ref").sha256


def test_packing_refuses_links(tmp_path):
    from service.registry.bundles import pack_directory

    src = tmp_path / "suite"
    src.mkdir()
    (src / "suite.yaml").write_text(GOOD["suite.yaml"])
    (src / "evil").symlink_to("/etc/passwd")
    with pytest.raises(Unprocessable) as e:
        pack_directory(src)
    assert e.value.code == "bundle_link"


def test_every_refusal_of_a_bundle_is_declared_for_its_upload():
    """`REFUSALS` (what POST /v1/suites declares in the OpenAPI document) names every error case that
    unpacking a bundle, its paths and its manifest raise, and nothing else."""
    raised = {
        node.exc.func.attr
        for module in (bundles, paths, manifest_module)
        for node in ast.walk(ast.parse(inspect.getsource(module)))
        if isinstance(node, ast.Raise)
        and isinstance(node.exc, ast.Call)
        and isinstance(node.exc.func, ast.Attribute)
        and isinstance(node.exc.func.value, ast.Name)
        and node.exc.func.value.id == "errors"
    }
    assert len(raised) > 20
    assert raised == {e.__name__ for e in bundles.REFUSALS}
