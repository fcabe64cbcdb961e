"""Soak: N minutes of mixed traffic (reads by a few clients, trivial jobs submitted at a steady rate)
against the whole service as real processes (tests.reliability.stack), a worker killed (kill -9) and
started again every few minutes. Every 30 s it samples the resident memory and open descriptors of the
API and of each worker (by role: a restarted worker is a new pid), and at the end it says whether
they stayed flat, whether every admitted job ended, whether any sandbox was left over, and
Stack.check's verdict.

    make bench-soak     (or: .venv/bin/python -m bench.soak --minutes 30 --kill-every-min 5)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.api_load import (
    BenchStack,
    Figure,
    Releases,
    demo_files,
    job_ends,
    print_table,
    releases,
    verdict,
    wait_ended,
)
from bench.job_overhead import machine
from service.jobs.states import TERMINAL
from service.sandbox.runner import LABEL_DEPLOYMENT
from tests.reliability.stack import Process

FLAT = 0.10  # memory and descriptors, last sample against the first after the warm-up
WARM_UP = 2  # samples of each process left out


@dataclass
class Sample:
    at_s: float
    pid: int
    rss_kb: int
    fds: int


def sample(pid: int, at_s: float) -> Sample | None:
    """VmRSS and open descriptors of a process, or None if it is gone (a worker being restarted)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return Sample(at_s, pid, rss, fds)


def leftovers(stack: BenchStack, timeout_s: float = 20) -> list[str]:
    """Containers and volumes labelled with this deployment, once removals had `timeout_s` to finish."""
    from service.sandbox.client import docker_client

    client = docker_client()
    mine = {"label": [f"{LABEL_DEPLOYMENT}={stack.settings.queue}"]}
    deadline = time.monotonic() + timeout_s
    while True:
        left = [str(c.name) for c in client.containers.list(all=True, filters=mine)]
        left += [str(v.name) for v in client.volumes.list(filters=mine)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


class Soak:
    def __init__(self, stack: BenchStack, source: Releases, args: argparse.Namespace):
        self.stack, self.source, self.args = stack, source, args
        self.stop = asyncio.Event()
        self.began = time.monotonic()
        self.admitted: list[str] = []
        self.refused: Counter[str] = Counter()  # submissions not admitted, by status and code
        self.reads: Counter[str] = Counter()  # read answers by status
        self.samples: dict[str, list[Sample]] = {}
        self.kills: list[str] = []
        self.restarting: set[str] = set()  # roles whose process is being started again

    def roles(self) -> dict[str, Process]:
        assert self.stack.api is not None
        return {"api": self.stack.api} | {w.name: w for w in self.stack.workers}

    def now(self) -> float:
        return time.monotonic() - self.began

    async def pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def reader(self, n: int, http: httpx.AsyncClient) -> None:
        rng = random.Random(n)
        while not self.stop.is_set():
            recent = self.admitted[-50:]
            path = f"/v1/jobs/{rng.choice(recent)}" if recent and rng.random() < 0.8 else "/v1/jobs"
            try:
                self.reads[str((await http.get(path, headers=self.stack.partner)).status_code)] += 1
            except httpx.HTTPError as e:
                self.reads[type(e).__name__] += 1
            await self.pause(self.args.read_every_s)

    async def submitter(self, http: httpx.AsyncClient) -> None:
        while self.args.submit_every_s and not self.stop.is_set():
            spec = await asyncio.to_thread(self.source.spec)  # uploads a suite when one is used up
            try:
                r = await http.post("/v1/jobs", headers=self.stack.partner, json=spec)
                if r.status_code == 202:
                    self.admitted.append(str(r.json()["id"]))
                else:
                    code = r.json().get("error", "") if r.status_code >= 400 else ""
                    self.refused[f"{r.status_code} {code}".strip()] += 1
            except (httpx.HTTPError, ValueError) as e:
                self.refused[type(e).__name__] += 1
            await self.pause(self.args.submit_every_s)

    async def killer(self) -> None:
        every, end = self.args.kill_every_min * 60, self.args.minutes * 60
        n = 0
        while every * (n + 1) < end:
            await self.pause(every * (n + 1) - self.now())
            if self.stop.is_set():
                return
            i = n % len(self.stack.workers)
            worker = self.stack.workers[i]
            old = worker.pid
            self.restarting.add(worker.name)
            worker.kill9()
            t0 = time.monotonic()
            await asyncio.to_thread(self.stack.start_worker, i)
            self.restarting.discard(worker.name)
            took = time.monotonic() - t0
            self.kills.append(f"kill -9 {worker.name} (pid {old}), started again as pid {worker.pid} in {took:.1f} s")
            print(f"[{self.now():6.0f} s] {self.kills[-1]}", flush=True)
            n += 1

    async def sampler(self) -> None:
        while True:
            at = self.now()
            cells = []
            for role, proc in self.roles().items():
                # A worker being started again is left out: its first seconds are no steady state.
                s = sample(proc.pid, at) if proc.alive() and role not in self.restarting else None
                if s is not None:
                    self.samples.setdefault(role, []).append(s)
                    cells.append(f"{role} pid {s.pid} rss {s.rss_kb / 1024:6.1f} MiB fds {s.fds:3d}")
                else:
                    cells.append(f"{role} (restarting)")
            ends = await asyncio.to_thread(job_ends, self.stack, self.admitted)
            ended = sum(1 for state, _ in ends.values() if state in TERMINAL)
            reads = sum(self.reads.values())
            print(
                f"[{at:6.0f} s] {' | '.join(cells)} | jobs admitted {len(self.admitted)} ended {ended} | reads {reads}",
                flush=True,
            )
            if self.stop.is_set():
                return
            await self.pause(self.args.sample_every_s)

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.stack.url, timeout=30) as http:
            tasks = [asyncio.create_task(self.reader(i, http)) for i in range(self.args.readers)]
            tasks += [asyncio.create_task(t) for t in (self.submitter(http), self.killer(), self.sampler())]
            await asyncio.sleep(self.args.minutes * 60)
            self.stop.set()
            await asyncio.gather(*tasks)


def flatness(role: str, samples: list[Sample]) -> list[Figure]:
    """The last sample against the first, each process's first WARM_UP samples left out. A worker
    restarted is a new process: its first and last sample may be of different ones (the name says
    how many pids the role had), each past its own warm-up."""
    warm = [s for s in samples if sum(1 for t in samples if t.pid == s.pid and t.at_s < s.at_s) >= WARM_UP]
    pids = len({s.pid for s in samples})
    name = role + (f" ({pids} pids)" if pids > 1 else "")
    if len(warm) < 2:
        return [Figure(f"{name} RSS and fds", f"{len(warm)} samples past warm-up", "±10 %", None)]
    first, last = warm[0], warm[-1]
    figures = []
    for what, a, b, unit in (
        ("RSS", first.rss_kb / 1024, last.rss_kb / 1024, " MiB"),
        ("fds", first.fds, last.fds, ""),
    ):
        change = (b - a) / a if a else 0.0
        value = f"{a:.0f}{unit} → {b:.0f}{unit} ({change:+.1%})"
        figures.append(
            Figure(f"{name} {what}, {first.at_s:.0f} s → {last.at_s:.0f} s", value, "±10 %", abs(change) <= FLAT)
        )
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--kill-every-min", type=float, default=5, help="kill -9 a worker (in turn) this often")
    ap.add_argument("--workers", type=int, choices=[1, 2], default=1)
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    ap.add_argument("--readers", type=int, default=4, help="clients reading jobs")
    ap.add_argument("--read-every-s", type=float, default=0.25, help="pause between one reader's requests")
    ap.add_argument("--submit-every-s", type=float, default=2.0, help="one trivial job this often (0: none)")
    ap.add_argument("--sample-every-s", type=float, default=30.0)
    ap.add_argument("--drain-s", type=float, default=180.0, help="bound for every admitted job to end after traffic")
    ap.add_argument("--runtime", choices=["runc", "runsc"], default="runc")
    args = ap.parse_args()
    print(
        f"soak: {machine()}; runtime {args.runtime}; database {args.db}; {args.workers} worker(s); "
        f"{args.minutes:g} min: {args.readers} readers (one request each per {args.read_every_s:g} s), "
        + (f"a trivial job every {args.submit_every_s:g} s" if args.submit_every_s else "no submissions")
        + f", kill -9 of a worker every {args.kill_every_min:g} min",
        flush=True,
    )
    overrides = dict(docker_runtime=args.runtime, partner_rows_per_day=10**9)
    with tempfile.TemporaryDirectory(prefix="evalgate-soak-") as tmp:
        demo = demo_files(Path(tmp) / "demo")
        with BenchStack(Path(tmp), demo, postgres=args.db == "postgres", workers=args.workers, **overrides) as stack:
            soak = Soak(stack, releases(stack), args)
            asyncio.run(soak.run())
            drained = time.monotonic()
            ends = wait_ended(stack, soak.admitted, timeout_s=args.drain_s)
            took = time.monotonic() - drained
            lost = [j for j in soak.admitted if ends.get(j) not in TERMINAL]
            left = leftovers(stack)
            held = verdict(stack, soak.admitted, within_s=10)
    ended = Counter(str(s) for s in ends.values() if s in TERMINAL)
    print(
        f"\njobs: admitted {len(soak.admitted)}, ended {sum(ended.values())} {dict(ended)} ({took:.0f} s after traffic)"
    )
    print(f"submissions not admitted: {dict(soak.refused) or 0}; reads by answer: {dict(soak.reads)}")
    print(f"kills: {len(soak.kills)}; sandboxes left over: {left or 0}; Stack.check: {held}")
    errors = sum(n for k, n in (soak.reads + soak.refused).items() if not k.startswith(("2", "4")))
    figures = [f for role, samples in soak.samples.items() for f in flatness(role, samples)]
    figures += [
        Figure(
            f"jobs lost (not ended {args.drain_s:g} s after traffic)",
            f"{len(lost)} of {len(soak.admitted)}",
            "0",
            not lost,
        ),
        Figure("sandboxes left over", str(len(left)), "0", not left),
        Figure("API 5xx or no answer", str(errors), "0", errors == 0),
        Figure("Stack.check", held.split(":")[0], "holds", held == "holds"),
    ]
    print_table(figures)
    return 0 if all(f.met is not False for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
