"""The whole service as real processes, for fault injection (and the load and soak benches): its
own Redis, optionally its own PostgreSQL cluster, the API under uvicorn and Celery workers, each a
subprocess this module can kill -9 and start again. The Docker engine is the machine's, unless the
caller names another (`docker_host`).

`Stack.check(job_ids)` asserts what must hold after any fault: every job reaches an end within a
bound, none is lost, none is released twice, no sandbox is left over, the budgets add up, and
`evalgate audit verify` passes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import make_engine, migrate, session_scope
from service.jobs.models import Job
from service.jobs.states import TERMINAL
from service.ledger import service as ledger
from service.quotas.models import BudgetReservation
from service.release.models import Result
from service.sandbox.runner import LABEL_DEPLOYMENT
from service.schema import make_sessionmaker
from tests import factories
from tests.harness import settings_env

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """One long-running process: started, killed (-9 or politely) and started again, its output in a log."""

    def __init__(
        self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None, user: str | None = None
    ):
        self.name, self.argv, self.env, self.user = name, argv, env, user
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n--- start {self.starts} at {datetime.now(UTC).isoformat()} ---\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            self.argv,
            env={**os.environ, **(self.env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO if self.user is None else "/",
            user=self.user,  # the process itself, not a wrapper that might not pass signals on
        )
        log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    def tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def wait_for(self, text: str, timeout_s: float = 60, after: int = 0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log_path.read_text(errors="replace")[after:]:
                return
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: no {text!r} in {timeout_s}s:\n{self.tail()}")


class RedisServer(Process):
    """A Redis of the test's own, which keeps nothing on disk: a restart loses every message."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        super().__init__("redis", [*argv, "--dir", str(log_dir)], log_dir)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        super().start()
        self.wait_for("Ready to accept connections")

    def restart(self) -> None:
        self.stop()
        self.start()

    def flush(self) -> None:
        import redis

        redis.Redis.from_url(self.url).flushall()


class PostgresServer(Process):
    """A PostgreSQL cluster of the test's own (initdb in a fresh directory), on its own port."""

    def __init__(self, log_dir: Path):
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
        if not found:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
        self.bin = found[-1].parent
        self.port = free_port()
        # Under /tmp itself: the postgres user cannot enter pytest's root-only temporary directories.
        self.root = Path(tempfile.mkdtemp(prefix="evalgate-pg-"))
        shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        user = "postgres" if os.geteuid() == 0 else None  # PostgreSQL refuses to run as root
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"],
            check=True,
            capture_output=True,
            user=user,
            cwd="/",
        )
        argv = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.root)]
        argv += ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"]
        super().__init__("postgres", argv, log_dir, user=user)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        super().start()
        self.wait_for("ready to accept connections", after=0)

    def restart(self, down_s: float = 0.0) -> None:
        self.stop(signal.SIGINT)  # "fast" shutdown: open connections are cut, as in a real restart
        time.sleep(down_s)
        size = self.log_path.stat().st_size
        super().start()
        self.wait_for("ready to accept connections", after=size)

    def remove(self) -> None:
        self.stop(signal.SIGINT)
        shutil.rmtree(self.root, ignore_errors=True)


SLEEPER = """
import time
import evalgate
time.sleep({seconds})
evalgate.report({{"score": 0.5}})
"""


class Stack:
    def __init__(
        self,
        tmp: Path,
        demo_files: dict[str, Path],
        *,
        postgres: bool = False,
        workers: int = 1,
        embedded: bool = False,
        docker_host: str | None = None,
        **overrides: Any,
    ):
        self.tmp, self.demo_files = tmp, demo_files
        self.logs = tmp / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.embedded = embedded  # no broker: the API runs jobs itself, and counts budgets in the database
        self.redis = RedisServer(self.logs)
        self.postgres = PostgresServer(self.logs) if postgres else None
        self.docker_host = docker_host
        self.overrides = dict(lease_s=2.0, reconcile_after_s=2.0) | overrides
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.worker_count = workers
        self.workers: list[Process] = []
        self.api: Process | None = None
        self.suites: dict[float, str] = {}

    # -- lifecycle ------------------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        try:
            return self._start()
        except BaseException:  # a step failed: stop what the earlier steps started
            self.__exit__(None, None, None)
            raise

    def _start(self) -> Stack:
        if not self.embedded:
            self.redis.start()
        if self.postgres is not None:
            self.postgres.start()
        db_url = self.postgres.url if self.postgres else None
        broker = None if self.embedded else self.redis.url
        self.settings = factories.settings(self.tmp / "data", broker_url=broker, database_url=db_url, **self.overrides)
        migrate(str(self.settings.database_url))
        self.sessions = make_sessionmaker(make_engine(str(self.settings.database_url)))
        with session_scope(self.sessions) as s:
            self.operator = factories.bearer(factories.key(s, "ops", "operator"))
            self.partner = factories.bearer(factories.key(s, "acme", "partner"))
        env = settings_env(self.settings) | ({"DOCKER_HOST": self.docker_host} if self.docker_host else {})
        self.env = env
        self.api = Process(
            "api", [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port)], self.logs, env
        )
        self.start_api()
        for i in range(self.worker_count):
            self.workers.append(self._worker(i))
            self.start_worker(i)
        self.http = httpx.Client(base_url=self.url, timeout=30)
        self._register()
        return self

    def __exit__(self, *exc: object) -> None:
        for w in self.workers:
            w.stop()
        if self.api is not None:
            self.api.stop()
        if self.postgres is not None:
            self.postgres.remove()
        self.redis.stop()  # (not started in embedded mode: stop() does nothing then)

    def _worker(self, i: int) -> Process:
        argv = [sys.executable, "-m", "service.cli", "worker", "--concurrency", "1"]
        return Process(f"worker-{i}", argv, self.logs, self.env)

    def start_api(self) -> None:
        assert self.api is not None
        self.api.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if not self.api.alive():
                raise RuntimeError(f"the API exited:\n{self.api.tail()}")
            time.sleep(0.1)
        raise RuntimeError(f"the API did not answer:\n{self.api.tail()}")

    def start_worker(self, i: int = 0) -> None:
        w = self.workers[i]
        size = w.log_path.stat().st_size if w.log_path.exists() else 0
        w.start()
        w.wait_for(" ready.", after=size)

    @property
    def worker(self) -> Process:
        return self.workers[0]

    # -- the service, as its users drive it -----------------------------------------------------------

    def _register(self) -> None:
        for kind, name, path in (
            ("models", "demo-classifier", self.demo_files["model"]),
            ("datasets", "demo-blobs", self.demo_files["data"]),
        ):
            with open(path, "rb") as f:
                r = self.http.post(
                    f"/v1/{kind}", headers=self.operator, data={"name": name, "version": "1"}, files={"file": f}
                )
            assert r.status_code == 201, r.text

    def sleeper(self, seconds: float) -> str:
        """A custom suite (uploaded and approved once per length) whose job sleeps, then reports."""
        if seconds not in self.suites:
            self.suites[seconds] = self.custom("sleeper", SLEEPER.format(seconds=seconds))
        return self.suites[seconds]

    def custom(self, prefix: str, code: str) -> str:
        """Upload and approve a suite reporting one proportion, `score`; its reference."""
        bundle = factories.suite_bundle(factories.unique(prefix), code, {"score": "proportion"})
        r = self.http.post("/v1/suites", headers=self.partner, files={"file": ("suite.tar.gz", bundle)})
        assert r.status_code in (200, 201), r.text
        suite = r.json()
        r = self.http.post(
            f"/v1/suites/{suite['owner']}/{suite['name']}/{suite['version']}/approve", headers=self.operator
        )
        assert r.status_code == 200, r.text
        return f"{suite['name']}@{suite['version']}"

    @contextmanager
    def db(self) -> Iterator[Session]:
        with session_scope(self.sessions) as s:
            yield s

    def submit(self, suite: str | None = None, metrics: list[str] | None = None, **extra: Any) -> httpx.Response:
        body = factories.job_spec(metrics=metrics or ["score"], suite=suite or self.sleeper(0), **extra)
        return self.http.post("/v1/jobs", headers=self.partner, json=body)

    def submitted(self, **kw: Any) -> str:
        r = self.submit(**kw)
        assert r.status_code == 202, r.text
        return str(r.json()["id"])

    def state(self, job_id: str) -> str:
        with session_scope(self.sessions) as s:
            job = s.get(Job, job_id)
            return "lost" if job is None else str(job.state)

    def wait_state(self, job_id: str, states: set[str], timeout_s: float = 60) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.state(job_id)
            if state in states:
                return state
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} is {self.state(job_id)}, not {states}, after {timeout_s}s")

    # -- what must hold after any fault ---------------------------------------------------------------

    def check(self, job_ids: list[str], within_s: float = 90) -> dict[str, str]:
        """Every job ends within `within_s`, and the invariants hold. Returns {job id: its end}."""
        deadline = time.monotonic() + within_s
        ends: dict[str, str] = {}
        while time.monotonic() < deadline:
            ends = {j: self.state(j) for j in job_ids}
            if all(s in TERMINAL for s in ends.values()):
                break
            time.sleep(0.2)
        assert "lost" not in ends.values(), f"jobs lost: {ends}"
        assert all(s in TERMINAL for s in ends.values()), f"not ended in {within_s}s: {ends}\n{self._tails()}"
        self.http.get("/v1/budget", headers=self.partner)  # applies what the ends give back, when due
        time.sleep(0.3)
        self.http.get("/v1/budget", headers=self.partner)
        with session_scope(self.sessions) as s:
            results = Counter(s.execute(select(Result.job_id).where(Result.job_id.in_(job_ids))).scalars())
            terminal = {str(t) for t in TERMINAL}
            endings = Counter(
                f"job:{j}"
                for j in job_ids
                for e in ledger.events_for(s, f"job:{j}")
                if e["action"] == "job.transition" and e["data"].get("to") in terminal
            )
            reservations = {
                r.job_id: r
                for r in s.execute(select(BudgetReservation).where(BudgetReservation.job_id.in_(job_ids))).scalars()
            }
            assert all(n == 1 for n in results.values()), f"released twice: {results}"
            assert set(endings) == {f"job:{j}" for j in job_ids} and all(n == 1 for n in endings.values()), endings
            released = {j for j, e in ends.items() if e == "released"}
            assert set(results) == released, (set(results), released)
            for j in job_ids:  # every admitted job reserved, and every ended one settled, once
                r = reservations[j]
                assert r.ended and r.settled, (j, ends[j], r.ended, r.settled)
            if not self.embedded:
                self._check_rows_counter(list(reservations.values()))
        self._check_no_leftovers()
        audit = subprocess.run(
            [sys.executable, "-m", "service.cli", "audit", "verify"],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert audit.returncode == 0, audit.stdout + audit.stderr
        return ends

    def _check_rows_counter(self, reservations: list[BudgetReservation]) -> None:
        """Redis's count of each partner's model rows of a day = what its jobs of that day still hold
        + what they were charged (everything, if their code ran; nothing, if it never did)."""
        import redis

        client = redis.Redis.from_url(self.redis.url)
        with session_scope(self.sessions) as s:
            for principal_id, day in {(r.principal_id, r.day) for r in reservations}:
                every = s.execute(
                    select(BudgetReservation).where(
                        BudgetReservation.principal_id == principal_id, BudgetReservation.day == day
                    )
                ).scalars()
                expected = sum(r.rows if (r.ran or not r.settled) else 0 for r in every)
                key = f"{self.settings.queue}:rows:{principal_id}:{day}"
                assert int(client.get(key) or 0) == expected, (key, client.get(key), expected)

    def _check_no_leftovers(self, timeout_s: float = 20) -> None:
        from service.sandbox.client import docker_client

        client = docker_client()  # DOCKER_HOST, when the test runs its own engine
        mine = {"label": [f"{LABEL_DEPLOYMENT}={self.settings.queue}"]}
        deadline = time.monotonic() + timeout_s
        left: list[str] = []
        while time.monotonic() < deadline:
            left = [c.name for c in client.containers.list(all=True, filters=mine)]
            left += [v.name for v in client.volumes.list(filters=mine)]
            if not left:
                return
            time.sleep(0.5)
        raise AssertionError(f"sandbox leftovers: {left}")

    def _tails(self) -> str:
        procs = [p for p in [self.api, *self.workers] if p is not None]
        return "\n".join(f"--- {p.name} ---\n{p.tail(3000)}" for p in procs)


@contextmanager
def stack(tmp: Path, demo_files: dict[str, Path], **kw: Any) -> Iterator[Stack]:
    with Stack(tmp, demo_files, **kw) as s:
        yield s
