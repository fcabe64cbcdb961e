"""Many more concurrent requests than the API has worker threads: every one is answered, none waits
for a database connection that waits for it (service.deps.api_connections). Real processes: the API
under uvicorn (embedded, on SQLite), clients on their own connections."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests import factories
from tests.reliability.stack import Stack

CLIENTS = 60  # with 2 threads and SQLAlchemy's default 15 connections, this deadlocked for the pool's 30 s


async def _burst(url: str, headers: dict[str, str], paths: list[str]) -> list[int]:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=20) for _ in paths]
    try:
        answers = await asyncio.gather(*(c.get(p) for c, p in zip(clients, paths, strict=True)))
        return [r.status_code for r in answers]
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


def test_sixty_concurrent_reads_on_two_threads_are_all_answered(tmp_path: Path, demo_files: dict[str, Path]) -> None:
    with Stack(tmp_path, demo_files, embedded=True, workers=0, api_threads=2) as stack:
        job = stack.http.post("/v1/jobs", headers=stack.partner, json=factories.job_spec(metrics=["accuracy"]))
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]
        # A list, a job (or its 404), the budget: each holds a session through a worker thread or two.
        paths = [("/v1/jobs", f"/v1/jobs/{job_id}", "/v1/budget")[i % 3] for i in range(CLIENTS)]
        statuses = asyncio.run(_burst(stack.url, stack.partner, paths))
        assert set(statuses) <= {200, 404} and len(statuses) == CLIENTS, statuses
        assert statuses.count(200) >= 2 * CLIENTS // 3
        # Again, after the first burst: no slot or connection was lost on the way.
        assert set(asyncio.run(_burst(stack.url, stack.partner, paths))) <= {200, 404}
