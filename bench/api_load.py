"""The API under load, against its goals: (a) reads by many clients at once, (b) a burst of
submissions from many partners at once, (c) trivial jobs per minute with one and with two workers,
and their end-to-end p50 against a bare `docker run` of the job image measured in the same run.

    make bench-load     (or: .venv/bin/python -m bench.api_load [--part reads|burst|throughput] ...)

Each part starts the whole service as real processes of its own (tests.reliability.stack: a Redis,
optionally a PostgreSQL cluster, the API under uvicorn, Celery workers) on 127.0.0.1, once per
database. The load comes from one asyncio httpx process on the same machine, so it takes CPU from the
API: the reads say how much each used. Reads and the burst run no job (no worker consumes the queue)
unless the reads are seeded with released jobs (the default), which a worker runs first.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from bench import job_overhead
from bench.job_overhead import CODE, machine, percentile
from service.config import Settings
from service.demo_assets import write_demo
from service.jobs.models import Job
from service.jobs.states import TERMINAL, JobState
from tests import factories
from tests.reliability.stack import Stack

READ_P99_GOAL_S = 0.050
JOBS_PER_MIN_GOAL = 60.0
E2E_RATIO_GOAL = 3.0  # the goal (bench.job_overhead, embedded worker, holds itself to its own)
LIST, ONE = "GET /v1/jobs", "GET /v1/jobs/{id}"
DEFAULT_MAX_CONCURRENT = int(Settings.model_fields["max_concurrent_jobs"].default)
BENCH_MODEL, BENCH_DATASET = "bench-classifier@1", "bench-blobs@1"
WAITING = {JobState.SUBMITTED, JobState.AWAITING_APPROVAL, JobState.QUEUED}


@dataclass
class Figure:
    name: str
    value: str
    goal: str
    met: bool | None  # None: a figure shown for context, with no goal of its own


def print_table(figures: list[Figure]) -> None:
    width = max([len(f.name) for f in figures] + [6])
    print(f"\n{'figure':{width}s}  {'value':>26s}  {'goal':10s}")
    for f in figures:
        said = "" if f.met is None else "meets" if f.met else "MISSES"
        print(f"{f.name:{width}s}  {f.value:>26s}  {f.goal:10s}  {said}")


def demo_files(directory: Path) -> dict[str, Path]:
    model, data = write_demo(directory, n=600, seed=3)  # as tests/conftest.py's demo_files
    return {"model": model, "data": data}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/PID/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def spread(values: list[float]) -> str:
    if not values:
        return "n=0"
    q = [statistics.median(values), percentile(values, 0.95), percentile(values, 0.99)]
    return f"n={len(values):6d}  p50 {ms(q[0]):>9s}  p95 {ms(q[1]):>9s}  p99 {ms(q[2]):>9s}"


class BenchStack(Stack):
    """The stack, with the demo model and dataset registered again under caps of their own that no
    trivial job reaches (an operator's per-asset setting), for the bench's jobs. Its processes read
    settings from the environment, where a None setting cannot be written (stack.settings_env leaves
    it out), so they keep the default lifetime caps tests.factories.settings turns off."""

    def __enter__(self) -> BenchStack:
        super().__enter__()
        try:
            self._register_uncapped()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _register_uncapped(self) -> None:
        for kind, ref, path, caps in (
            ("models", BENCH_MODEL, self.demo_files["model"], {"lifetime_bits": "1e15", "lifetime_rows": str(10**15)}),
            ("datasets", BENCH_DATASET, self.demo_files["data"], {"lifetime_bits": "1e15"}),
        ):
            name, version = ref.split("@")
            with open(path, "rb") as f:
                form = {"name": name, "version": version, **caps}
                self.http.post(f"/v1/{kind}", headers=self.operator, data=form, files={"file": f}).raise_for_status()


class Releases:
    """Distinct trivial releases for one partner: suites of its own, each declaring as many metrics as
    a suite may, whose code reports a constant (bench.job_overhead's CODE); one metric per job, so no
    job is answered from an earlier release (admission.release_key)."""

    def __init__(self, http: httpx.Client, partner: dict[str, str], operator: dict[str, str], per_suite: int):
        self.http, self.partner, self.operator, self.per_suite = http, partner, operator, per_suite
        self.pending: list[tuple[str, str]] = []

    def spec(self) -> dict[str, Any]:
        if not self.pending:
            self.pending = self._suite()
        suite, metric = self.pending.pop()
        return {"suite": suite, "model": BENCH_MODEL, "dataset": BENCH_DATASET, "metrics": [metric]}

    def _suite(self) -> list[tuple[str, str]]:
        metrics = [f"m{i}" for i in range(self.per_suite)]
        bundle = factories.suite_bundle(factories.unique("trivial"), CODE, metrics)
        r = self.http.post("/v1/suites", headers=self.partner, files={"file": ("suite.tar.gz", bundle)})
        r.raise_for_status()
        s = r.json()
        path = f"/v1/suites/{s['owner']}/{s['name']}/{s['version']}/approve"
        self.http.post(path, headers=self.operator).raise_for_status()
        return [(f"{s['name']}@{s['version']}", m) for m in reversed(metrics)]


def releases(stack: Stack, partner: dict[str, str] | None = None) -> Releases:
    """Trivial releases for a partner (the stack's own by default)."""
    return Releases(stack.http, partner or stack.partner, stack.operator, stack.settings.max_metrics)


def submit(stack: Stack, source: Releases) -> str:
    r = stack.http.post("/v1/jobs", headers=source.partner, json=source.spec())
    if r.status_code != 202:
        raise RuntimeError(f"submission answered {r.status_code}: {r.text}")
    return str(r.json()["id"])


def job_ends(stack: Stack, ids: list[str]) -> dict[str, tuple[JobState, float | None]]:
    """Each job's state and, once ended, when (epoch seconds), straight from the database."""
    with stack.db() as s:
        rows = s.execute(select(Job.id, Job.state, Job.finished_at).where(Job.id.in_(ids))).all()
    return {r.id: (r.state, r.finished_at.timestamp() if r.finished_at else None) for r in rows}


def wait_ended(stack: Stack, ids: list[str], timeout_s: float) -> dict[str, JobState]:
    deadline = time.monotonic() + timeout_s
    while True:
        states = {j: s for j, (s, _) in job_ends(stack, ids).items()}
        if all(states.get(j) in TERMINAL for j in ids) or time.monotonic() > deadline:
            return states
        time.sleep(0.2)


def verdict(stack: Stack, ids: list[str], within_s: float = 90) -> str:
    """Stack.check's invariants (ended, none lost or released twice, no sandbox left, budgets add up,
    the audit log verifies), as one word and the first failure."""
    try:
        stack.check(ids, within_s=within_s)
        return "holds"
    except AssertionError as e:
        return f"FAILS: {str(e)[:400]}"


# -- (a) reads --------------------------------------------------------------------------------------------


@dataclass
class ReadRun:
    latencies: dict[str, list[float]]
    statuses: Counter[str]
    wall_s: float

    @property
    def every(self) -> list[float]:
        return self.latencies[LIST] + self.latencies[ONE]


async def read_load(
    url: str,
    headers: dict[str, str],
    job_ids: list[str],
    clients: int,
    seconds: float,
    requests: int | None,
    think_s: float,
) -> ReadRun:
    """`clients` clients, each on a connection of its own, reading one page of jobs every fifth request
    and one job (with its result, when released) otherwise, and pausing between reads for a time drawn
    uniformly from [0, 2 × think_s] (think_s 0: closed loop, no pause), and before its first read too:
    started in one instant, 50 clients make a burst of 50 requests, not the steady state (it alone
    was over 1 % of a 20 s run's reads, all queued 100–250 ms: the p99). One httpx client per
    connection: a shared pool of 50 cost the load generator more CPU per request than the API."""
    run = ReadRun({LIST: [], ONE: []}, Counter(), 0.0)
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    https = [httpx.AsyncClient(base_url=url, headers=headers, limits=one, timeout=30) for _ in range(clients)]
    try:
        # Not counted: every connection opened and every code path run once.
        await asyncio.gather(*(h.get(f"/v1/jobs/{job_ids[i % len(job_ids)]}") for i, h in enumerate(https)))
        await https[0].get("/v1/jobs")
        issued = 0
        deadline = time.perf_counter() + (seconds if requests is None else 1e9)

        async def client(n: int, http: httpx.AsyncClient) -> None:
            nonlocal issued
            rng = random.Random(n)
            if think_s:  # clients arrive as they would in a steady state, not all in one instant
                await asyncio.sleep(rng.uniform(0, 2 * think_s))
            while time.perf_counter() < deadline and (requests is None or issued < requests):
                issued += 1
                kind, path = (LIST, "/v1/jobs") if issued % 5 == 0 else (ONE, f"/v1/jobs/{rng.choice(job_ids)}")
                t0 = time.perf_counter()
                try:
                    run.statuses[str((await http.get(path)).status_code)] += 1
                except httpx.HTTPError as e:
                    run.statuses[type(e).__name__] += 1
                run.latencies[kind].append(time.perf_counter() - t0)
                if think_s:
                    await asyncio.sleep(rng.uniform(0, 2 * think_s))

        started = time.perf_counter()
        gc.collect()
        gc.freeze()  # the generator's own full collections (100+ ms here) would stall every client at once
        try:
            await asyncio.gather(*(client(i, h) for i, h in enumerate(https)))
        finally:
            gc.unfreeze()
        run.wall_s = time.perf_counter() - started
    finally:
        await asyncio.gather(*(h.aclose() for h in https))
    return run


def machine_busy_s() -> float:
    """CPU seconds all cores have spent on any process since boot (/proc/stat; steal left out)."""
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def reads(db: str, args: argparse.Namespace, tmp: Path) -> list[Figure]:
    released = args.seed == "released"
    # SQLite's own deployment is the embedded API (no broker), which runs jobs on a thread of its own:
    # it can hold released jobs only. Queued jobs stay queued only with a broker no worker consumes.
    embedded = db == "sqlite" and released
    workers = 1 if released and db == "postgres" else 0
    postgres = db == "postgres"
    threads = {} if args.api_threads is None else {"api_threads": args.api_threads}
    with BenchStack(
        tmp, demo_files(tmp / "demo"), postgres=postgres, workers=workers, embedded=embedded, **threads
    ) as stack:
        source = releases(stack)
        ids = [submit(stack, source) for _ in range(args.seed_jobs)]
        if released:
            ends = wait_ended(stack, ids, timeout_s=60 + 10 * len(ids))
            if set(ends.values()) != {JobState.RELEASED}:
                raise RuntimeError(f"seed jobs ended {Counter(ends.values())}")
        api = stack.api
        assert api is not None
        alone = asyncio.run(read_load(stack.url, stack.partner, ids, 1, min(3.0, args.seconds), None, 0))
        users = measured_reads(stack, api.pid, ids, args, args.think_ms / 1000)
        closed = measured_reads(stack, api.pid, ids, args, 0.0) if args.think_ms else users
        api_threads = stack.settings.api_threads
    shape = (
        ("embedded API, no broker" if embedded else "API with a broker")
        + (f", {workers} idle worker" if workers else "")
        + (f"; {len(ids)} released jobs seeded by running them" if released else f"; {len(ids)} queued jobs seeded")
        + f"; {api_threads} API threads"
    )
    print(f"\n(a) reads, {db} ({shape}); 1 list : 4 reads of one job")
    print(f"  1 client alone       {spread(alone.every)}")
    print(f"  {args.clients} clients, each pausing 0–{2 * args.think_ms:g} ms (mean {args.think_ms:g}) between reads:")
    users.show()
    if closed is not users:
        print(f"  {args.clients} clients in a closed loop (no pause; latency = clients / throughput, Little's law):")
        closed.show()
    p99, p50_alone = percentile(users.run.every, 0.99), statistics.median(alone.every)
    closed_p99 = percentile(closed.run.every, 0.99)
    bad = sum(n for r in (users, closed) for status, n in r.run.statuses.items() if status != "200")
    label = f"{args.clients} clients, think {args.think_ms:g} ms"
    return [
        Figure(f"reads p99, {db}, {label}", ms(p99), f"≤ {ms(READ_P99_GOAL_S)}", p99 <= READ_P99_GOAL_S),
        Figure(f"  … / p50 of 1 client alone ({ms(p50_alone)})", f"{p99 / p50_alone:.1f}×", "", None),
        Figure(f"reads req/s, {db}, {label}", f"{users.rate:.1f}", "", None),
        Figure(f"reads p99, {db}, {args.clients} clients closed loop", ms(closed_p99), "", None),
        Figure(f"reads req/s, {db}, closed loop (saturation)", f"{closed.rate:.1f}", "", None),
        Figure(f"reads not 200, {db}", str(bad), "0", bad == 0),
    ]


@dataclass
class MeasuredReads:
    run: ReadRun
    api_cpu: float
    my_cpu: float
    all_cpu: float

    @property
    def rate(self) -> float:
        return len(self.run.every) / self.run.wall_s

    def show(self) -> None:
        r = self.run
        print(f"  {LIST:20s} {spread(r.latencies[LIST])}")
        print(f"  {ONE:20s} {spread(r.latencies[ONE])}")
        print(
            f"  {'all':20s} {spread(r.every)}  {self.rate:6.1f} req/s over {r.wall_s:.1f} s; answers {dict(r.statuses)}"
        )
        n, cores = max(1, len(r.every)), os.cpu_count() or 1
        print(
            f"  CPU: API {self.api_cpu:.1f} s ({self.api_cpu / n * 1000:.1f} ms/read), load generator "
            f"{self.my_cpu:.1f} s ({self.my_cpu / n * 1000:.1f} ms/read), everything else (database, Redis, "
            f"workers, other processes) {self.all_cpu - self.api_cpu - self.my_cpu:.1f} s, of {cores} cores × "
            f"{r.wall_s:.1f} s = {cores * r.wall_s:.1f} s"
        )


def measured_reads(
    stack: Stack, api_pid: int, ids: list[str], args: argparse.Namespace, think_s: float
) -> MeasuredReads:
    api0, me0, all0 = cpu_seconds(api_pid), time.process_time(), machine_busy_s()
    run = asyncio.run(read_load(stack.url, stack.partner, ids, args.clients, args.seconds, args.requests, think_s))
    return MeasuredReads(run, cpu_seconds(api_pid) - api0, time.process_time() - me0, machine_busy_s() - all0)


# -- (b) burst --------------------------------------------------------------------------------------------


async def fire(url: str, bodies: list[tuple[int, dict[str, str], dict[str, Any]]]) -> list[tuple[int, int, str, float]]:
    """Every submission at once, over connections opened beforehand: (partner, status, code, seconds)."""
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        await asyncio.gather(*(http.get("/healthz") for _ in bodies))

        async def one(partner: int, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, int, str, float]:
            t0 = time.perf_counter()
            try:
                r = await http.post("/v1/jobs", headers=headers, json=body)
            except httpx.HTTPError as e:
                return partner, 0, type(e).__name__, time.perf_counter() - t0
            try:
                code = str(r.json().get("error") or "") if r.status_code >= 400 else ""
            except ValueError:
                code = ""
            return partner, r.status_code, code, time.perf_counter() - t0

        return await asyncio.gather(*(one(*b) for b in bodies))


def burst(db: str, args: argparse.Namespace, tmp: Path) -> list[Figure]:
    limit = args.max_concurrent
    with BenchStack(
        tmp, demo_files(tmp / "demo"), postgres=db == "postgres", workers=0, max_concurrent_jobs=limit
    ) as stack:
        partners: list[tuple[int, dict[str, str]]] = []
        with stack.db() as s:
            for i in range(args.partners):
                principal_id, key = factories.principal(s, f"burst-{i}", "partner")
                partners.append((principal_id, factories.bearer(key)))
        per_partner = -(-args.burst // args.partners)
        bodies = []
        for i, (_, headers) in enumerate(partners):
            source = releases(stack, headers)
            bodies += [(i, headers, source.spec()) for _ in range(per_partner)]
        bodies = bodies[: args.burst]
        random.Random(0).shuffle(bodies)  # partners interleaved, as they would arrive
        answers = asyncio.run(fire(stack.url, bodies))
        with stack.db() as s:
            rows = Counter(
                s.execute(select(Job.principal_id).where(Job.principal_id.in_([p for p, _ in partners]))).scalars()
            )
    admitted = Counter(p for p, status, _, _ in answers if status == 202)
    refused = Counter(code for _, status, code, _ in answers if 400 <= status < 500 and code)
    uncoded = sum(1 for _, status, code, _ in answers if 400 <= status < 500 and not code)
    failed = Counter(f"{status} {code}".strip() for _, status, code, _ in answers if status >= 500 or status == 0)
    other = Counter(status for _, status, _, _ in answers if status < 400 and status not in (0, 202))
    over = sum(max(0, n - limit) for n in admitted.values())
    kept = sum(rows.values())
    print(f"\n(b) burst, {db}: {len(answers)} submissions from {len(partners)} partners at once, no worker;")
    print(f"  max_concurrent_jobs={limit} per partner (the service's default is {DEFAULT_MAX_CONCURRENT})")
    print(f"  admitted (202): {sum(admitted.values())}, per partner {sorted(admitted.values())}")
    print(f"  refused with a code: {dict(refused)}; 4xx without a code: {uncoded}; other: {dict(other)}")
    print(f"  5xx or no answer: {dict(failed) or 0}; latency {spread([t for *_, t in answers])}")
    print(f"  job rows kept for these partners: {kept} (admitted: {sum(admitted.values())})")
    return [
        Figure(
            f"burst admitted / refused with a code, {db}",
            f"{sum(admitted.values())} / {sum(refused.values())}",
            "",
            None,
        ),
        Figure(f"burst answer p99, {db}", ms(percentile([t for *_, t in answers], 0.99)), "", None),
        Figure(f"burst 5xx or no answer, {db}", str(sum(failed.values())), "0", not failed),
        Figure(f"burst 4xx without a code, {db}", str(uncoded), "0", uncoded == 0),
        Figure(f"burst admitted over the limit, {db}", str(over), "0", over == 0),
        Figure(
            f"burst rows kept ≠ admitted, {db}",
            str(abs(kept - sum(admitted.values()))),
            "0",
            kept == sum(admitted.values()),
        ),
    ]


# -- (c) throughput ---------------------------------------------------------------------------------------


def sequential(
    stack: Stack, source: Releases, n: int, ids: list[str], bare_once: Callable[[], float]
) -> tuple[list[float], list[float]]:
    """Submit → released as the partner sees it, one job at a time, polled as bench.job_overhead
    polls, each followed by one bare run, so both see the same load on the host; the first of each
    warms caches and is not counted. Appends what it submits to `ids`."""
    jobs, bare = [], []
    for i in range(n + 1):
        t0 = time.perf_counter()
        job = submit(stack, source)
        ids.append(job)
        while (state := stack.http.get(f"/v1/jobs/{job}", headers=source.partner).json()["state"]) not in TERMINAL:
            time.sleep(0.005)
        if state != JobState.RELEASED:
            raise RuntimeError(f"a trivial job ended {state}")
        took, alone = time.perf_counter() - t0, bare_once()
        if i:
            jobs.append(took)
            bare.append(alone)
    return jobs, bare


def sustained(
    stack: Stack, source: Releases, workers: int, seconds: float, ids: list[str]
) -> tuple[float, Counter[str]]:
    """Jobs per minute ended in a window of `seconds`, the queue never empty: the window opens when
    the first job ends after the phase began. Appends what it submits to `ids`."""
    backlog = 2 * workers + 2
    began, opened = time.time(), 0.0
    while True:
        ends = job_ends(stack, ids)
        waiting = sum(1 for state, _ in ends.values() if state in WAITING)
        ids += [submit(stack, source) for _ in range(backlog - waiting)]
        if not opened and any(t is not None and t > began for _, t in ends.values()):
            opened = time.time()
        if opened and time.time() >= opened + seconds:
            break
        time.sleep(0.25)
    inside = [state for state, t in job_ends(stack, ids).values() if t is not None and opened < t <= opened + seconds]
    released = sum(1 for state in inside if state == JobState.RELEASED)
    return released * 60 / seconds, Counter(str(s) for s in inside)


def throughput(db: str, args: argparse.Namespace, tmp: Path) -> list[Figure]:
    overrides: dict[str, Any] = dict(timing_buckets_s=[0.001], docker_runtime=args.runtime, partner_rows_per_day=10**9)
    with BenchStack(tmp, demo_files(tmp / "demo"), postgres=db == "postgres", workers=2, **overrides) as stack:
        source = releases(stack)
        stack.workers[1].stop()
        ids: list[str] = []
        e2e, bare = sequential(stack, source, args.e2e_jobs, ids, job_overhead.bare_runner(args.runtime))
        rates = {1: sustained(stack, source, 1, args.seconds, ids)}
        stack.start_worker(1)
        rates[2] = sustained(stack, source, 2, args.seconds, ids)
        ended = Counter(str(s) for s in wait_ended(stack, ids, timeout_s=120).values())
        held = verdict(stack, ids)
    p50, bare50 = statistics.median(e2e), statistics.median(bare)
    print(f"\n(c) throughput, {db}, {args.runtime}: trivial jobs (one constant metric), completion-time padding off")
    for w, (rate, inside) in rates.items():
        print(f"  {w} worker(s): {rate:6.1f} released jobs/min over {args.seconds:g} s; ended inside: {dict(inside)}")
    print(f"  submit -> released, one job at a time, 1 worker: {spread(e2e)}")
    print(f"  bare docker run --rm ({args.runtime}), one after each: {spread(bare)}")
    print(f"  all {len(ids)} jobs ended {dict(ended)}; Stack.check: {held}")
    figures = [
        Figure(f"jobs/min, {w} worker(s), {db}", f"{rate:.1f}", f"≥ {JOBS_PER_MIN_GOAL:g}", rate >= JOBS_PER_MIN_GOAL)
        for w, (rate, _) in rates.items()
    ]
    ratio = p50 / bare50
    figures.append(
        Figure(
            f"e2e p50 / bare docker run, {db}",
            f"{ratio:.2f}× ({p50:.3f}/{bare50:.3f} s)",
            f"≤ {E2E_RATIO_GOAL:g}×",
            ratio <= E2E_RATIO_GOAL,
        )
    )
    figures.append(Figure(f"Stack.check after throughput, {db}", held.split(":")[0], "holds", held == "holds"))
    return figures


# -- the run ----------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", action="append", choices=["reads", "burst", "throughput"], help="repeatable; default all")
    ap.add_argument("--db", action="append", choices=["sqlite", "postgres"], help="repeatable; default both")
    ap.add_argument("--clients", type=int, default=50, help="(a) concurrent readers")
    ap.add_argument("--seconds", type=float, default=30, help="(a) reading time; (c) window per worker count")
    ap.add_argument("--requests", type=int, help="(a) stop after this many reads instead of after --seconds")
    ap.add_argument(
        "--think-ms",
        type=float,
        default=500,
        help="(a) mean pause between one client's reads (uniform 0 to twice it); a closed-loop run follows",
    )
    ap.add_argument(
        "--seed", choices=["released", "queued"], default="released", help="(a) jobs read (queued: no job runs)"
    )
    ap.add_argument("--seed-jobs", type=int, default=20, help="(a) jobs seeded before reading")
    ap.add_argument("--api-threads", type=int, help="(a) the API's worker threads (default: EVALGATE_API_THREADS's)")
    ap.add_argument("--burst", type=int, default=200, help="(b) submissions at once")
    ap.add_argument("--partners", type=int, default=10, help="(b) partners they come from")
    ap.add_argument("--max-concurrent", type=int, default=DEFAULT_MAX_CONCURRENT, help="(b) jobs per partner")
    ap.add_argument("--e2e-jobs", type=int, default=10, help="(c) jobs one at a time, and bare runs, for the p50s")
    ap.add_argument("--runtime", choices=["runc", "runsc"], default="runc")
    args = ap.parse_args()
    parts, dbs = args.part or ["reads", "burst", "throughput"], args.db or ["sqlite", "postgres"]
    print(f"api load: {machine()}; runtime {args.runtime}; databases {', '.join(dbs)}; client and API on 127.0.0.1")
    runs: dict[str, Callable[[str, argparse.Namespace, Path], list[Figure]]] = {
        "reads": reads,
        "burst": burst,
        "throughput": throughput,
    }
    figures: list[Figure] = []
    for part in parts:
        for db in dbs:
            with tempfile.TemporaryDirectory(prefix="evalgate-load-") as tmp:
                try:
                    figures += runs[part](db, args, Path(tmp))
                except Exception as e:  # one part failing must not hide the others' figures
                    traceback.print_exc()
                    figures.append(Figure(f"{part}, {db}", f"did not run: {type(e).__name__}", "runs", False))
    print_table(figures)
    return 0 if all(f.met is not False for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
