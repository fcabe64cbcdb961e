"""Releasing a job without Docker, reading its bundle, and rewriting the log as someone with write
access to the database could (for the tests of what verification catches)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, select

from service.jobs import runner
from service.transparency import merkle
from service.transparency import service as tlog
from service.transparency.models import LogHead, LogLeaf, LogNode
from service.transparency.verify import parse_key
from tests.harness import Harness
from tests.stubs import StubSandbox, context, released_outcome


def release_job(h: Harness, demo_files: dict, metric: str = "accuracy") -> str:
    job = h.post_job(metrics=[metric], resources={"query_budget": 1000}).json()
    runner.run_job(context(h, StubSandbox(released_outcome(demo_files["data"]))), job["id"])
    return str(job["id"])


def wait_padded(h: Harness) -> None:
    """Until a partner sees its released job as released."""
    time.sleep(h.settings.timing_buckets_s[0] + 0.05)


def bundle(h: Harness, job_id: str, since: int | None = None) -> dict[str, Any]:
    params = {} if since is None else {"since": since}
    r = h.client.get(f"/v1/jobs/{job_id}/attestation", headers=h.researcher, params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def key(h: Harness) -> bytes:
    return parse_key(h.client.get("/v1/attestation-key").json()["public_key"])


def checkpoint(h: Harness) -> str:
    r = h.client.get("/v1/log/checkpoint", headers=h.researcher)
    assert r.status_code == 200, r.text
    return str(r.json()["checkpoint"])


def filler(h: Harness, n: int) -> None:
    """n more entries (of a kind no release has), committed."""
    with h.db() as s:
        for i in range(n):
            tlog.append(s, "test", f'{{"filler":{i}}}'.encode())


def rewrite(h: Harness, change: Any) -> None:
    """Replace the log by `change(leaf datas)` and rebuild every node hash, so that the rewritten log
    is consistent in itself: only a reader who saved a checkpoint can tell."""
    with h.db() as s:
        leaves = [(x.kind, x.data) for x in s.execute(select(LogLeaf).order_by(LogLeaf.idx)).scalars()]
        s.execute(delete(LogLeaf))
        s.execute(delete(LogNode))
        nodes: dict[tuple[int, int], bytes] = {}
        new = change(leaves)
        for i, (kind, data) in enumerate(new):
            s.add(LogLeaf(idx=i, kind=kind, data=data))
            for level, idx, hsh in merkle.new_nodes(i, merkle.leaf_hash(data.encode()), lambda a, b: nodes[(a, b)]):
                nodes[(level, idx)] = hsh
                s.add(LogNode(level=level, idx=idx, hash=hsh))
        head = s.get(LogHead, 1)
        assert head is not None
        head.size = len(new)
