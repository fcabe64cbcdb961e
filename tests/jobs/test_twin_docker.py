"""Twin jobs end to end in the real job image and sandbox (Docker): a suite that prints shows its
output and the gate's values; a suite that crashes shows its traceback. The partner's real budgets do
not move, and nothing reaches the transparency log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.dev.skeleton import write_skeleton
from service.jobs import runner
from service.jobs.context import WorkerContext
from service.jobs.leases import Leases
from service.registry.bundles import pack_directory
from service.sandbox.runner import Sandbox
from service.sandbox.runtimes import resolve
from service.transparency.models import LogLeaf
from tests import factories
from tests.harness import Harness, harness

pytestmark = pytest.mark.docker


@pytest.fixture
def server(tmp_path: Path, demo_files: dict[str, Path]) -> Iterator[Harness]:
    yield from harness(factories.settings(tmp_path / "server", dp_mechanism="laplace"), demo_files)


def worker(h: Harness, docker_client, state: Path) -> WorkerContext:  # type: ignore[no-untyped-def]
    """An in-process worker on the real Docker engine, on the harness's database, budgets and key."""
    app = h.client.app.state
    return WorkerContext(
        settings=h.settings,
        sessions=app.sessionmaker,
        sandbox=Sandbox(docker_client, deployment=h.settings.queue, state_dir=state),
        signer=app.signer,
        runtime=resolve(docker_client, "runc"),
        budgets=app.budgets,
        leases=Leases(app.sessionmaker, h.settings.lease_s),
    )


def spent(h: Harness) -> dict:
    body = h.budget()
    body["releases"].pop("resets_in_s")
    for daily in ("leakage_bits", "model_rows"):
        body[daily].pop("resets_in_s")
    return body


def leaves(h: Harness) -> int:
    with h.db() as s:
        return int(s.execute(select(func.count()).select_from(LogLeaf)).scalar_one())


def test_twin_jobs_in_the_real_sandbox_show_output_verdict_and_traceback(server, docker_client, tmp_path):
    h = server
    ok = write_skeleton("my-suite", tmp_path)
    crash = write_skeleton("crash", tmp_path / "c")
    code = (crash / "main.py").read_text()
    (crash / "main.py").write_text(
        code.replace("    x = evalgate.load_features()", '    raise ValueError("no such column: age")')
    )
    # Custom suites not yet approved by an operator: a twin job needs no approval (nothing private).
    for suite in (ok, crash):
        h.upload_suite(pack_directory(suite), approve=False)
    before, logged = spent(h), leaves(h)
    ctx = worker(h, docker_client, tmp_path / "state")

    good = h.submit("my-suite@0.1.0", ["accuracy", "macro_f1"], target="twin")
    assert runner.run_job(ctx, good["id"]) == "judged"
    seen = h.client.get(f"/v1/jobs/{good['id']}", headers=h.partner).json()
    assert seen["state"] == "judged" and seen["result"] is None
    assert "rows; reading output 'probabilities'" in seen["twin"]["stdout"], seen["twin"]
    verdict = seen["twin"]["verdict"]
    assert verdict["outcome"] == "released" and sorted(verdict["metrics"]) == ["accuracy", "macro_f1"]
    assert verdict["would_cost"]["epsilon_total"] > 0 and seen["twin"]["usage"]["rows"] > 0

    bad = h.submit("crash@0.1.0", ["accuracy"], target="twin")
    assert runner.run_job(ctx, bad["id"]) == "failed"
    seen = h.client.get(f"/v1/jobs/{bad['id']}", headers=h.partner).json()
    assert seen["error_class"] == "crashed" and seen["twin"]["verdict"]["outcome"] == "failed"
    assert "Traceback (most recent call last)" in seen["twin"]["stderr"]
    assert "ValueError: no such column: age" in seen["twin"]["stderr"]
    assert "ValueError" not in seen["twin"]["stdout"]  # the streams are kept apart

    assert spent(h) == before and leaves(h) == logged  # no ε, bits, rows or slot; nothing on the public log
    assert (
        docker_client.containers.list(all=True, filters={"label": f"org.evalgate.deployment={h.settings.queue}"}) == []
    )
