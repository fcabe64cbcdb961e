"""`evalgate dev`: a skeleton that passes `dev run` as written, on the server's twin and stand-in in the
real job image and sandbox; a crash shows its traceback; a bad result shows the gate's reason."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from service.client import Api
from service.dev import assets as dev_assets
from service.dev.run import DevExit, run_suite
from service.dev.skeleton import write_skeleton
from service.sandbox.runner import Sandbox
from service.sandbox.runtimes import resolve
from tests import factories
from tests.harness import Harness, harness

pytestmark = pytest.mark.docker


@pytest.fixture
def server(tmp_path: Path, demo_files: dict[str, Path]) -> Iterator[Harness]:
    yield from harness(factories.settings(tmp_path / "server"), demo_files)


def partner_api(h: Harness) -> Api:
    """The CLI's own client, over the test app (real HTTP semantics, no socket)."""
    api = Api("http://testserver", "unused")
    h.client.headers.update(h.partner)
    api.http = h.client
    return api


def evalgate(*args: str, cwd: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVALGATE_")}
    env |= {"EVALGATE_DATA_DIR": str(data_dir), "EVALGATE_DOCKER_RUNTIME": "runc"}
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_dev_init_then_dev_run_on_the_servers_twin_would_be_released(server, docker_client, tmp_path):
    suite = write_skeleton("my-suite", tmp_path)
    assert sorted(p.name for p in suite.iterdir()) == ["README.md", "main.py", "suite.yaml"]
    dest = tmp_path / "assets"
    dest.mkdir(mode=0o755)
    got = dev_assets.from_server(partner_api(server), "demo-classifier@1", "demo-blobs@1", dest)
    assert got.dataset_rows == 600 and got.contract and got.contract["output_kind"] == "probabilities"
    settings = factories.settings(tmp_path / "dev", dp_mechanism="laplace", dp_epsilon_per_metric=0.1)
    sandbox = Sandbox(docker_client, deployment=settings.queue, state_dir=tmp_path / "state")
    result = run_suite(
        settings, sandbox, resolve(docker_client, "runc"), suite, got, requested=["accuracy", "macro_f1"]
    )
    assert result.exit == DevExit.RELEASED, (result.rejected, result.error_class, result.outcome)
    assert result.outcome is not None and "600 rows; reading output 'probabilities'" in result.outcome.job_log
    assert result.outcome.usage["rows"] == 600  # the sidecar's count, shown to the partner here only
    assert result.release is not None and "accuracy" in result.release.metrics
    # The twin's classes are sampled (with noise): one may fall under the gate's 20 rows, and the gate
    # then withholds macro F1, saying why (seen once in CI). Released or withheld, never lost.
    withheld = {w["metric"]: w["reason"] for w in result.release.suppressed}
    assert sorted([*result.release.metrics, *withheld]) == ["accuracy", "macro_f1"]
    assert all("fewer than 20 rows" in reason for reason in withheld.values()), withheld
    assert 0 <= result.release.metrics["accuracy"] <= 1
    assert result.epsilon_total == pytest.approx(0.2) and result.noised == ["accuracy", "macro_f1"]
    assert result.bits > 0
    assert docker_client.containers.list(all=True, filters={"label": f"org.evalgate.deployment={settings.queue}"}) == []


def test_a_crashing_suite_shows_its_traceback_and_a_bad_result_the_gates_reason(server, docker_client, tmp_path):
    dest = tmp_path / "assets"
    dest.mkdir(mode=0o755)
    got = dev_assets.from_server(partner_api(server), "demo-classifier@1", "demo-blobs@1", dest)
    twin, stand_in = tmp_path / "twin.npz", tmp_path / "stand-in.onnx"
    twin.write_bytes(got.dataset.read_bytes())
    stand_in.write_bytes(got.model.read_bytes())
    crash = write_skeleton("crash", tmp_path)
    code = (crash / "main.py").read_text()
    (crash / "main.py").write_text(
        code.replace("    x = evalgate.load_features()", '    raise ValueError("no such column: age")')
    )
    r = evalgate(
        "dev",
        "run",
        "crash",
        "--twin-dataset",
        str(twin),
        "--stand-in",
        str(stand_in),
        cwd=tmp_path,
        data_dir=tmp_path / "d",
    )
    assert r.returncode == DevExit.FAILED, r.stdout + r.stderr
    assert "Traceback (most recent call last)" in r.stdout and "ValueError: no such column: age" in r.stdout
    assert "this job would end as crashed" in r.stdout and "the sidecar's usage" in r.stdout

    liar = tmp_path / "liar"
    liar.mkdir()
    (liar / "suite.yaml").write_text(
        yaml.safe_dump(
            {"name": "liar", "version": "1.0.0", "entrypoint": "main.py", "metrics": {"score": {"kind": "proportion"}}}
        )
    )
    (liar / "main.py").write_text(
        textwrap.dedent("""
        import evalgate
        x, y = evalgate.load_dataset()
        print("labels seen:", len(y))
        evalgate.report({"score": 1.5})
    """)
    )
    r = evalgate(
        "dev",
        "run",
        "liar",
        "--twin-dataset",
        str(twin),
        "--stand-in",
        str(stand_in),
        cwd=tmp_path,
        data_dir=tmp_path / "d",
    )
    assert r.returncode == DevExit.REJECTED, r.stdout + r.stderr
    assert "labels seen: 600" in r.stdout
    assert "this result would be rejected: metric 'score' = 1.5 is outside its kind proportion" in r.stdout
