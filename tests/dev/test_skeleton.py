"""`evalgate dev init` (its run in the sandbox is tests/dev/test_dev_run.py)."""

from __future__ import annotations

import pytest
import yaml

from service.dev.skeleton import write_skeleton
from service.registry.manifest import load_manifest_file


def test_dev_init_writes_a_valid_rows_mode_suite(tmp_path):
    root = write_skeleton("churn-check", tmp_path)
    manifest = load_manifest_file(root / "suite.yaml")
    assert (manifest.name, manifest.mode, manifest.entrypoint) == ("churn-check", "rows", "main.py")
    compile((root / "main.py").read_text(), "main.py", "exec")
    assert "evalgate dev run churn-check" in (root / "README.md").read_text()


def test_dev_init_refuses_a_bad_name_or_an_existing_directory(tmp_path):
    with pytest.raises(ValueError):
        write_skeleton("Bad Name", tmp_path)
    write_skeleton("ok", tmp_path)
    with pytest.raises(FileExistsError):
        write_skeleton("ok", tmp_path)
    assert yaml.safe_load((tmp_path / "ok" / "suite.yaml").read_text())["version"] == "0.1.0"
