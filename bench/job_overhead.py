"""End-to-end cost of a job: a trivial job (one constant metric) from POST /v1/jobs to released
metrics, p50 and p95 over N jobs, against a bare `docker run --rm` of the same job image running
the same code, measured in the same run. Prints both and the ratio of the p50s.

    make bench-overhead       (or: .venv/bin/python -m bench.job_overhead --jobs 20)

Completion-time padding and the release-rate cap are policies, not costs: they are off here (padding
to 1 ms), and the bench says so. Each job asks for a different metric, so none is answered from an
earlier release.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

GOAL = 3.0
CODE = "import evalgate; evalgate.report({m: 1 for m in evalgate.requested_metrics()})"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def service_latencies(n: int, data_dir: Path) -> list[float]:
    from service.auth import service as auth
    from service.config import Settings
    from service.db import make_engine, migrate, session_scope
    from service.demo import LocalServer
    from service.demo_assets import write_demo
    from service.jobs.states import TERMINAL, JobState
    from service.registry.bundles import pack_directory
    from service.schema import make_sessionmaker

    settings = Settings(
        data_dir=data_dir,
        broker_url=None,
        database_url=None,
        timing_buckets_s=[0.001],
        releases_per_window=100_000,
        max_concurrent_jobs=100_000,
        max_metrics=max(32, n + 1),
    )
    migrate(settings.database_url)
    with session_scope(make_sessionmaker(make_engine(settings.database_url))) as s:
        op = auth.create_key(s, name="bench-ops", role="operator", expires_in=auth.parse_duration("1h"))[1]
        partner = auth.create_key(s, name="bench-partner", role="partner", expires_in=auth.parse_duration("1h"))[1]
    model, data = write_demo(data_dir / "demo", n=200)
    out = []
    with LocalServer(settings) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        ops, part = {"Authorization": f"Bearer {op}"}, {"Authorization": f"Bearer {partner}"}
        for kind, name, path in (("models", "m", model), ("datasets", "d", data)):
            with open(path, "rb") as f:
                http.post(
                    f"/v1/{kind}", headers=ops, data={"name": name, "version": "1"}, files={"file": f}
                ).raise_for_status()
        suite = data_dir / "trivial-suite"
        suite.mkdir()
        declared = "".join(f"  m{i}: count\n" for i in range(n + 1))
        (suite / "suite.yaml").write_text(f"name: trivial\nversion: 1.0.0\nentrypoint: main.py\nmetrics:\n{declared}")
        (suite / "main.py").write_text(CODE + "\n")
        http.post("/v1/suites", headers=part, files={"file": ("s.tar.gz", pack_directory(suite))}).raise_for_status()
        http.post("/v1/suites/trivial/1.0.0/approve", headers=ops).raise_for_status()
        for i in range(n + 1):  # the first job warms caches and is not counted
            spec = {"suite": "trivial@1.0.0", "model": "m@1", "dataset": "d@1", "metrics": [f"m{i}"]}
            t0 = time.perf_counter()
            job = http.post("/v1/jobs", headers=part, json=spec).json()
            while (state := http.get(f"/v1/jobs/{job['id']}", headers=part).json()["state"]) not in TERMINAL:
                time.sleep(0.005)
            if state != JobState.RELEASED:
                raise SystemExit(f"bench job ended {state}")
            if i:
                out.append(time.perf_counter() - t0)
    return out


def bare_latencies(n: int) -> list[float]:
    from service.sandbox.client import docker_client

    image = docker_client().images.get("evalgate-job:latest").id
    cmd = [
        "docker",
        "run",
        "--rm",
        "--network",
        "none",
        "--tmpfs",
        "/out",
        "-e",
        "EVALGATE_OUTPUT=/out/result.json",
        "-e",
        "EVALGATE_METRICS=m0",
        image,
        "/opt/venv/bin/python",
        "-c",
        CODE,
    ]
    out = []
    for i in range(n + 1):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        if i:
            out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bare = bare_latencies(args.jobs)
        service = service_latencies(args.jobs, Path(tmp) / "data")
    print(
        f"job overhead: {args.jobs} trivial jobs each (after one warm-up), embedded worker, runc; "
        f"completion-time padding and release-rate cap off"
    )
    print(f"{'':28s} {'p50 s':>7} {'p95 s':>7}")
    print(f"{'bare docker run --rm':28s} {statistics.median(bare):7.3f} {percentile(bare, 0.95):7.3f}")
    print(f"{'API submit -> released':28s} {statistics.median(service):7.3f} {percentile(service, 0.95):7.3f}")
    ratio = statistics.median(service) / statistics.median(bare)
    print(f"goal: p50 ratio <= {GOAL:.1f}: {ratio:.2f} ({'meets' if ratio <= GOAL else 'MISSES'})")
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    raise SystemExit(main())
