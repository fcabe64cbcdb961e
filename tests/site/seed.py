"""Released results for the site's tests, made without Docker: the real API admits the jobs and the
real runner runs them on a stub sandbox (tests/stubs.py), with noise on, so pages have noise to show."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.config import Settings
from service.jobs import runner
from service.jobs.states import JobState
from tests import factories
from tests.harness import Harness, harness
from tests.stubs import StubSandbox, context, released_outcome

SUITE = factories.CLASSIFICATION_REF
DATASET = factories.DEMO_DATASET
MODEL_2 = "demo-classifier@2"


def site_settings(data_dir: Path, **overrides: Any) -> Settings:
    """The tests' settings, with Laplace noise on (the site shows it)."""
    return factories.settings(data_dir, dp_mechanism="laplace", **overrides)


@dataclass
class Seeded:
    h: Harness
    released: dict[str, str] = field(default_factory=dict)  # label -> job id
    unreleased: str = ""  # acme's job still queued


def seeded(settings: Settings, demo_files: dict[str, Path]) -> Iterator[Seeded]:
    """acme: two releases (model versions 1 and 2) and one job still queued; globex: one release."""
    for h in harness(settings, demo_files):
        with open(demo_files["model"], "rb") as f:
            r = h.client.post(
                "/v1/models", headers=h.operator, data={"name": "demo-classifier", "version": "2"}, files={"file": f}
            )
        assert r.status_code == 201, r.text
        seed = Seeded(h)
        plan = [
            ("acme-1", h.partner, factories.DEMO_MODEL, ["accuracy", "macro_f1"]),
            ("acme-2", h.partner, MODEL_2, ["accuracy", "macro_f1"]),
            ("globex-1", h.other, factories.DEMO_MODEL, ["accuracy", "ece"]),
        ]
        for label, who, model, metrics in plan:
            seed.released[label] = release(h, demo_files, who, model=model, metrics=metrics)
        r = h.post_job(h.partner, metrics=["log_loss"], resources={"query_budget": 1000})
        assert r.status_code == 202, r.text
        seed.unreleased = r.json()["id"]
        time.sleep(settings.timing_buckets_s[-1] + 0.1)  # past every padded time
        yield seed


def release(h: Harness, demo_files: dict[str, Path], who: dict[str, str], **spec: Any) -> str:
    r = h.post_job(who, resources={"query_budget": 1000}, epsilon=0.5, **spec)
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    assert runner.run_job(context(h, StubSandbox(released_outcome(demo_files["data"]))), job_id) == JobState.RELEASED
    return job_id
