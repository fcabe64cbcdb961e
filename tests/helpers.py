"""Builders shared by tests: bundles, suites, keys, a full API + worker stack."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import uuid
import zipfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


# Test suites that do not care about kinds declare their metrics as wide bounded reals.
WIDE = {"kind": "real", "min": -1e9, "max": 1e9}


def manifest(name: str, metrics: list[str] | dict, version: str = "1.0.0", entrypoint: str = "main.py") -> str:
    declared = metrics if isinstance(metrics, dict) else {m: dict(WIDE) for m in metrics}
    return yaml.safe_dump({"name": name, "version": version, "entrypoint": entrypoint, "metrics": declared})


def tar_gz(files: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(files: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return buf.getvalue()


def suite_bundle(name: str, code: str, metrics: list[str] | dict, version: str = "1.0.0") -> bytes:
    return tar_gz({"suite.yaml": manifest(name, metrics, version), "main.py": textwrap.dedent(code)})


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class WorkerProcess:
    """`evalgate worker` as a subprocess, consuming a queue of its own on the real Redis."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self.log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker", "--concurrency", "1"],
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if " ready." in text:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited:\n{text[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready:\n{self.log_path.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def concurrently(fn, n: int) -> list:
    """fn(0) ... fn(n-1) in n threads at once; their results, in no particular order. An exception in
    any thread is raised here, so a failure can never pass unseen."""
    results, errors = [], []

    def run(i):
        try:
            results.append(fn(i))
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
