"""End-to-end cost of a job: a trivial job (one constant metric) from POST /v1/jobs to released
metrics, p50 and p95 over N jobs, against a bare `docker run --rm` of the same job image running
the same code with the same runtime, measured in the same run in alternation (one bare run after each
job, so both see the same load on the host). Prints both, the ratio of the p50s, and where a job's
time goes by the worker's own timings of its Docker calls.

    make bench-overhead       (or: .venv/bin/python -m bench.job_overhead --jobs 20 [--runtime runsc])

Completion-time padding and the release-rate cap are policies, not costs: they are off here (padding
to 1 ms), and the bench says so. Each job asks for a different metric, so none is answered from an
earlier release.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

GOAL = 2.0  # p50 of a trivial job, submit to released, over a bare `docker run` of the same runtime
# How often the bench's client reads the job. The API and the embedded worker share this process
# (and its GIL) with the client: read every 5 ms, the reads cost the API about 0.11 s of CPU per job
# (py-spy), taken from the worker it measures. Every 20 ms adds 10 ms on average to what is seen.
POLL_S = 0.02
CODE = "import evalgate; evalgate.report({m: 1 for m in evalgate.requested_metrics()})"


def machine() -> str:
    model = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        "unknown CPU",
    )
    return f"{os.cpu_count()} cores ({model})"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


PHASES = ("start", "job", "collect")


def service_latencies(
    n: int, data_dir: Path, runtime: str, between: Callable[[], None]
) -> tuple[list[float], dict[str, list[float]]]:
    """Submit-to-released seconds of each job, and the sandbox's own timings of each (Outcome.timings:
    `start` = volumes and both containers made and started, `job` = the job container's life,
    `collect` = its state, output, result and usage read)."""
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
        docker_runtime=runtime,
        # Budgets are policies, not costs: out of the way of the bench's jobs.
        leakage_bits_per_day=1e9,
        dataset_lifetime_fraction=None,
        model_lifetime_fraction=None,
        model_lifetime_rows_per_parameter=None,
    )
    migrate(settings.database_url)
    with session_scope(make_sessionmaker(make_engine(settings.database_url))) as s:
        op = auth.create_key(s, name="bench-ops", role="operator", expires_in=auth.parse_duration("1h"))[1]
        partner = auth.create_key(s, name="bench-partner", role="partner", expires_in=auth.parse_duration("1h"))[1]
    model, data = write_demo(data_dir / "demo", n=200)
    out: list[float] = []
    ids: list[str] = []
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
        http.post("/v1/suites/bench-partner/trivial/1.0.0/approve", headers=ops).raise_for_status()
        for i in range(n + 1):  # the first job warms caches and is not counted
            spec = {"suite": "trivial@1.0.0", "model": "m@1", "dataset": "d@1", "metrics": [f"m{i}"]}
            t0 = time.perf_counter()
            posted = http.post("/v1/jobs", headers=part, json=spec)
            if posted.status_code != 202:
                raise SystemExit(f"bench job refused: {posted.status_code} {posted.text}")
            job = posted.json()
            while (state := http.get(f"/v1/jobs/{job['id']}", headers=part).json()["state"]) not in TERMINAL:
                time.sleep(POLL_S)
            if state != JobState.RELEASED:
                raise SystemExit(f"bench job ended {state}")
            if i:
                out.append(time.perf_counter() - t0)
                ids.append(job["id"])
            between()  # the baseline's run, in alternation: both see the same load on the host
    from service.jobs.models import Job

    phases: dict[str, list[float]] = {k: [] for k in PHASES}
    with session_scope(make_sessionmaker(make_engine(settings.database_url))) as s:
        for job_id in ids:
            timings = ((s.get(Job, job_id).outcome or {}).get("timings")) or {}
            for k in PHASES:
                if k in timings:
                    phases[k].append(float(timings[k]))
    return out, phases


def bare_runner(runtime: str) -> Callable[[], float]:
    """One `docker run --rm` of the job image running the same code, with the same engine runtime as
    the service's job container; returns its seconds."""
    from service.sandbox.client import docker_client
    from service.sandbox.runtimes import resolve

    client = docker_client()
    image = client.images.get("evalgate-job:latest").id
    chosen = resolve(client, runtime)
    # The service's own seccomp profile, as its job container has: under runsc with --oci-seccomp,
    # Docker's default profile makes thread creation fail (OpenBLAS cannot start its threads, and
    # `import numpy` dies), so a bare run with the default profile would not run the same code.
    profile = Path(tempfile.mkdtemp(prefix="evalgate-bench-")) / "seccomp.json"
    profile.write_text(chosen.seccomp)
    cmd = ["docker", "run", "--rm", "--runtime", chosen.job, "--network", "none"]
    cmd += ["--security-opt", f"seccomp={profile}"]
    cmd += ["--tmpfs", "/out", "-e", "EVALGATE_OUTPUT=/out/result.json", "-e", "EVALGATE_METRICS=m0"]
    cmd += [image, "/opt/venv/bin/python", "-c", CODE]

    def run() -> float:
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        return time.perf_counter() - t0

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--runtime", default="runc", choices=["runc", "runsc"])
    args = ap.parse_args()
    bare_once, bare = bare_runner(args.runtime), []
    bare_once()  # warm-up, not counted
    with tempfile.TemporaryDirectory() as tmp:
        service, phases = service_latencies(
            args.jobs, Path(tmp) / "data", args.runtime, lambda: bare.append(bare_once())
        )
    bare = bare[1:]  # the one after the service's warm-up job is not counted either
    print(
        f"job overhead: {args.jobs} trivial jobs each (after one warm-up), embedded worker, runtime={args.runtime} "
        f"(the bare run too, in alternation with the jobs), {machine()}; completion-time padding and release-rate "
        "cap off"
    )
    print(f"{'':28s} {'p50 s':>7} {'p95 s':>7}")
    print(f"{'bare docker run --rm':28s} {statistics.median(bare):7.3f} {percentile(bare, 0.95):7.3f}")
    print(f"{'API submit -> released':28s} {statistics.median(service):7.3f} {percentile(service, 0.95):7.3f}")
    print("where a job's time goes (median s, the worker's own timings of its Docker calls):")
    for k, what in (
        ("start", "volumes + both containers created and started (at once)"),
        ("job", "the job container's life (its Python start-up, the SDK, the suite)"),
        ("collect", "its state and logs; the sidecar's usage and the result it copied; its memory peak"),
    ):
        if phases[k]:
            print(f"  {k:8s} {statistics.median(phases[k]):6.3f}  {what}")
    rest = statistics.median(service) - sum(statistics.median(v) for v in phases.values() if v)
    print(
        f"  {'rest':8s} {rest:6.3f}  the API, the queue, the gate and the client's reads (every {POLL_S * 1000:.0f} ms)"
    )
    ratio = statistics.median(service) / statistics.median(bare)
    print(f"goal: p50 ratio <= {GOAL:.1f}: {ratio:.2f} ({'meets' if ratio <= GOAL else 'MISSES'})")
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    raise SystemExit(main())
