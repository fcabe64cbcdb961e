"""The `evalgate` command as a user runs it: real processes, real HTTP, real containers."""

import os
import re
import socket
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from tests.factories import CLASSIFICATION

pytestmark = pytest.mark.docker


def evalgate(*args, env, timeout=300, **kw):
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], env=env, capture_output=True, text=True, timeout=timeout, **kw
    )


@pytest.fixture
def env(tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EVALGATE_")}
    return {**clean, "EVALGATE_DATA_DIR": str(tmp_path / "data")}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_prints_released_metrics_provenance_and_audit(env, docker_client):
    r = evalgate("demo", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "released metrics" in r.stdout and "accuracy" in r.stdout
    assert re.search(r"model\s+demo-classifier@1 sha256:[0-9a-f]{64}", r.stdout)
    assert "audit log: intact" in r.stdout
    # The partner's way in: a new suite tried on the synthetic twin, then the real job's cost first.
    assert "on the synthetic twin first" in r.stdout and "this result would be released" in r.stdout, r.stdout
    assert re.search(r"dry run first \(nothing spent\): ε [0-9.]+, .*it would be admitted now", r.stdout), r.stdout
    # The job's page, the exact command that verifies its release offline (and it does), and the
    # operator's reproduction of it.
    assert re.search(r"results site\s+http://127\.0\.0\.1:8000/site/jobs/[0-9a-f-]{36}", r.stdout)
    command = re.search(r"verify it offline: (evalgate verify \S+ --key \S+)", r.stdout)
    assert command, r.stdout
    verified = evalgate(*command.group(1).split()[1:], env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert re.search(r"reproduced by the operator: reproduced; transparency-log entry \d+", r.stdout), r.stdout


def test_serve_keys_submit_status(env, tmp_path, demo_files, docker_client):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        keys = {}
        for role, name in (("operator", "ops"), ("partner", "acme")):
            r = evalgate("keys", "create", "--role", role, "--name", name, "--expires", "1h", env=env)
            assert r.returncode == 0, r.stderr
            keys[role] = r.stdout.strip()
            assert keys[role].startswith("eg_") and keys[role] not in r.stderr
        op = {"Authorization": f"Bearer {keys['operator']}"}
        for kind, name, path in (
            ("models", "demo-classifier", demo_files["model"]),
            ("datasets", "demo-blobs", demo_files["data"]),
        ):
            with open(path, "rb") as f:
                assert (
                    httpx.post(
                        f"{url}/v1/{kind}", headers=op, data={"name": name, "version": "1"}, files={"file": f}
                    ).status_code
                    == 201
                )
        spec = tmp_path / "job.yaml"
        spec.write_text(
            yaml.safe_dump(
                {
                    "suite": CLASSIFICATION,
                    "model": "demo-classifier@1",
                    "dataset": "demo-blobs@1",
                    "metrics": ["accuracy", "ece"],
                }
            )
        )
        client_env = {**env, "EVALGATE_URL": url, "EVALGATE_API_KEY": keys["partner"]}
        dry = evalgate("submit", "--dry-run", str(spec), env=client_env)
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert "would be admitted now, as queued" in dry.stdout and "leakage bits" in dry.stdout
        assert "job " not in dry.stdout  # nothing was submitted
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({**yaml.safe_load(spec.read_text()), "metrics": ["acuracy"]}))
        dry_bad = evalgate("submit", "--dry-run", str(bad), env=client_env)
        assert dry_bad.returncode == 2 and "undeclared_metric" in dry_bad.stderr, dry_bad.stdout + dry_bad.stderr
        r = evalgate("submit", str(spec), env=client_env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "released metrics" in r.stdout and "running" in r.stdout
        job_id = re.search(r"job ([0-9a-f-]{36})", r.stdout).group(1)
        status = evalgate("status", job_id, env=client_env)
        assert '"state": "released"' in status.stdout
        suite_dir = tmp_path / "my-suite"
        suite_dir.mkdir()
        (suite_dir / "suite.yaml").write_text(
            "name: mine\nversion: 0.1.0\nentrypoint: main.py\nmetrics: {score: proportion}\n"
        )
        (suite_dir / "main.py").write_text("import evalgate\nevalgate.report({'score': 1})\n")
        up = evalgate("suites", "upload", str(suite_dir), env=client_env)
        assert up.returncode == 0, up.stderr
        assert re.search(r"suite acme/mine@0.1.0 sha256:[0-9a-f]{64} \(waiting for operator approval\)", up.stdout)
        (suite_dir / "evil").symlink_to("/etc/passwd")
        refused = evalgate("suites", "upload", str(suite_dir), env=client_env)
        assert refused.returncode == 1 and "bundle_link" in refused.stderr and "Traceback" not in refused.stderr
        # On the synthetic twin: a suite not yet approved runs at no privacy cost, and shows its output.
        crashy = tmp_path / "crashy"
        crashy.mkdir()
        (crashy / "suite.yaml").write_text(
            "name: crashy\nversion: 0.1.0\nentrypoint: main.py\nmetrics: {score: proportion}\n"
        )
        (crashy / "main.py").write_text("print('hello from the twin')\nraise ValueError('no such column: age')\n")
        assert evalgate("suites", "upload", str(crashy), env=client_env).returncode == 0
        twin_spec = tmp_path / "twin.yaml"
        twin_spec.write_text(
            yaml.safe_dump(
                {"suite": "crashy@0.1.0", "model": "demo-classifier@1", "dataset": "demo-blobs@1", "metrics": ["score"]}
            )
        )
        dry_twin = evalgate("submit", "--dry-run", "--target", "twin", str(twin_spec), env=client_env)
        assert dry_twin.returncode == 0 and "twin jobs left today after it: 19" in dry_twin.stdout, dry_twin.stdout
        twin = evalgate("submit", "--target", "twin", str(twin_spec), env=client_env)
        assert twin.returncode == 1, twin.stdout + twin.stderr
        assert "hello from the twin" in twin.stdout and "ValueError: no such column: age" in twin.stdout
        assert "the real job would end crashed" in twin.stdout
        no_key = evalgate("submit", str(spec), env={**env, "EVALGATE_URL": url})
        assert no_key.returncode == 2 and "EVALGATE_API_KEY" in no_key.stderr
    finally:
        server.terminate()
        server.wait(30)


def test_missing_docker_engine_gives_one_clear_message(env):
    r = evalgate("images", "build", env={**env, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}, timeout=60)
    assert r.returncode == 2
    assert "No Docker engine answers" in r.stderr and "Traceback" not in r.stderr
