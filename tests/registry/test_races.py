"""Registrations and lifecycle changes racing, and refused uploads: a refused or losing upload leaves
nothing on disk that no version uses (trees and blobs are content-addressed: what another version has
stays), and requests that race answer as the same requests one after another would (201 once, then
200 for the same bytes or 409 `version_taken`; a lifecycle change that lost 409 `invalid_transition`
or the change after the winner's), never 500, on SQLite as on Postgres."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np

from service.ledger import service as ledger
from service.registry import storage
from tests.factories import suite_bundle, unique
from tests.harness import Harness

RACERS = 5
T = TypeVar("T")


def race(fn: Callable[[T], httpx.Response], args: Sequence[T]) -> list[httpx.Response]:
    """fn(arg) for every arg, in threads released at once; the answers in the order of `args`."""
    start = threading.Barrier(len(args))

    def one(arg: T) -> httpx.Response:
        start.wait()
        return fn(arg)

    with ThreadPoolExecutor(len(args)) as pool:
        return list(pool.map(one, args))


def trees(api: Harness) -> set[str]:
    """The suite trees on disk (temporary directories of uploads in progress start with a dot)."""
    return {p.name for p in (api.settings.data_dir / "suites").iterdir() if not p.name.startswith(".")}


def stored(api: Harness, data: bytes) -> bool:
    return storage.blob_path(api.settings.data_dir, hashlib.sha256(data).hexdigest()).exists()


def upload(api: Harness, bundle: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return api.client.post("/v1/suites", headers=headers or api.partner, files={"file": ("s.tar.gz", bundle)})


def register(api: Harness, kind: str, name: str, data: bytes, version: str = "1") -> httpx.Response:
    return api.client.post(
        f"/v1/{kind}", headers=api.operator, data={"name": name, "version": version}, files={"file": ("f", data)}
    )


def classifier(tmp: Path, seed: int) -> bytes:
    from service.demo_assets import make_blobs, make_classifier

    _, _, means = make_blobs(n=10, seed=seed)
    return make_classifier(tmp / f"m{seed}.onnx", means).read_bytes()


def dataset(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    np.savez(buf, x=rng.normal(size=(200, 4)).astype(np.float32), y=np.arange(200) % 2)
    return buf.getvalue()


def statuses(answers: list[httpx.Response]) -> list[int]:
    return sorted(r.status_code for r in answers)


# -- refused uploads leave nothing ------------------------------------------------------------------


def test_a_suite_upload_refused_as_version_taken_leaves_no_tree_but_keeps_one_in_use(api):
    name = unique("mine")
    assert upload(api, suite_bundle(name, "print(1)", ["score"])).status_code == 201
    before = trees(api)
    r = upload(api, suite_bundle(name, "print(2)", ["score"]))
    assert r.status_code == 409 and r.json()["error"] == "version_taken"
    assert trees(api) == before
    # The same bytes as another partner's suite version: its tree stays where it is.
    theirs = upload(api, suite_bundle(name, "print(3)", ["score"]), headers=api.other)
    assert theirs.status_code == 201
    r = upload(api, suite_bundle(name, "print(3)", ["score"]))
    assert r.status_code == 409 and r.json()["error"] == "version_taken"
    assert theirs.json()["sha256"] in trees(api)


def test_a_model_or_dataset_refused_as_version_taken_leaves_no_blob_but_keeps_one_in_use(api, tmp_path):
    other = classifier(tmp_path, 999)
    r = register(api, "models", "demo-classifier", other)
    assert r.status_code == 409 and r.json()["error"] == "version_taken"
    assert not stored(api, other)
    assert register(api, "models", unique("keeper"), other).status_code == 201
    assert register(api, "models", "demo-classifier", other).status_code == 409
    assert stored(api, other)

    name = unique("data")
    assert register(api, "datasets", name, dataset(1)).status_code == 201
    r = register(api, "datasets", name, dataset(2))
    assert r.status_code == 409 and r.json()["error"] == "version_taken"
    assert not stored(api, dataset(2))


# -- racing registrations ----------------------------------------------------------------------------


def test_racing_uploads_of_one_suite_version_answer_as_one_after_another(api):
    name = unique("raced")
    before = trees(api)
    answers = race(
        lambda code: upload(api, suite_bundle(name, code, ["score"])), [f"print({i})" for i in range(RACERS)]
    )
    assert statuses(answers) == [201] + [409] * (RACERS - 1), [r.text for r in answers]
    assert all(r.json()["error"] == "version_taken" for r in answers if r.status_code == 409)
    (won,) = [r.json()["sha256"] for r in answers if r.status_code == 201]
    assert trees(api) == before | {won}  # the losers' trees are gone

    same = suite_bundle(unique("same"), "print(1)", ["score"])
    answers = race(lambda b: upload(api, b), [same] * RACERS)
    assert statuses(answers) == [200] * (RACERS - 1) + [201], [r.text for r in answers]
    assert len({r.json()["created_at"] for r in answers}) == 1  # one version, the first
    assert answers[0].json()["sha256"] in trees(api)


def test_racing_registrations_of_one_model_version_answer_as_one_after_another(api, demo_files, tmp_path):
    raw = demo_files["model"].read_bytes()
    answers = race(lambda data: register(api, "models", "raced", data), [raw] * RACERS)
    assert statuses(answers) == [200] * (RACERS - 1) + [201], [r.text for r in answers]
    assert len({r.json()["created_at"] for r in answers}) == 1 and stored(api, raw)

    models = [classifier(tmp_path, 1000 + i) for i in range(RACERS)]  # none is the demo model
    answers = race(lambda data: register(api, "models", "raced-apart", data), models)
    assert statuses(answers) == [201] + [409] * (RACERS - 1), [r.text for r in answers]
    assert all(r.json()["error"] == "version_taken" for r in answers if r.status_code == 409)
    assert [stored(api, m) for m in models] == [r.status_code == 201 for r in answers]


def test_racing_registrations_of_one_dataset_version_answer_as_one_after_another(api):
    same = dataset(7)
    answers = race(lambda data: register(api, "datasets", "raced", data), [same] * RACERS)
    assert statuses(answers) == [200] * (RACERS - 1) + [201], [r.text for r in answers]
    assert len({r.json()["created_at"] for r in answers}) == 1  # one version, the first

    files = [dataset(10 + i) for i in range(RACERS)]
    answers = race(lambda data: register(api, "datasets", "raced-apart", data), files)
    assert statuses(answers) == [201] + [409] * (RACERS - 1), [r.text for r in answers]
    assert [stored(api, d) for d in files] == [r.status_code == 201 for r in answers]
    (won,) = [r.json() for r in answers if r.status_code == 201]
    with api.db() as s:
        from service.registry.models import DatasetVersion

        features = {d.features_sha256 for d in s.query(DatasetVersion)}
    on_disk = {p.name for p in (api.settings.data_dir / "blobs" / "sha256").iterdir()}
    assert won["sha256"] in on_disk
    # Every features-only copy on disk belongs to a registered version: the losers' are gone.
    made = {hashlib.sha256(_features(d)).hexdigest() for d in files}
    assert made & on_disk <= features


def _features(data: bytes) -> bytes:
    """The features-only copy registration keeps of a dataset (registry.datasets.store_features)."""
    with np.load(io.BytesIO(data)) as npz:
        x = npz["x"]
    buf = io.BytesIO()
    np.savez(buf, x=x)
    return buf.getvalue()


# -- racing lifecycle changes --------------------------------------------------------------------------


def _status_race(api: Harness, kind: str, ref: str) -> None:
    """`retired` and `deprecated` asked at once of an active version end as one of the two serial
    orders: retired first (deprecated refused 409, one event), or deprecated first (both applied, two
    events); never retired and then deprecated again."""
    name, version = ref.split("@")
    path = f"/v1/{kind}s/{name}/{version}/status"
    answers = race(
        lambda status: api.client.post(path, headers=api.operator, json={"status": status}), ["retired", "deprecated"]
    )
    retired, deprecated = answers
    with api.db() as s:
        moves = [(e["data"]["from"], e["data"]["to"]) for e in ledger.events_for(s, f"{kind}:{ref}", f"{kind}.status")]
    final = next(
        v
        for v in api.client.get(f"/v1/{kind}s", headers=api.operator).json()
        if v["version"] == version and v["name"] == name
    )
    assert retired.status_code == 200, retired.text
    assert final["status"] == "retired"
    if deprecated.status_code == 200:  # deprecated first
        assert moves == [("active", "deprecated"), ("deprecated", "retired")]
    else:  # retired first
        assert deprecated.status_code == 409 and deprecated.json()["error"] == "invalid_transition", deprecated.text
        assert moves == [("active", "retired")]


def test_racing_lifecycle_changes_of_a_model_version_end_as_one_serial_order(api, demo_files):
    raw = demo_files["model"].read_bytes()
    for _ in range(4):  # a few rounds: the interleaving differs from one to the next
        name = unique("life")
        assert register(api, "models", name, raw).status_code == 201
        _status_race(api, "model", f"{name}@1")


def test_racing_lifecycle_changes_of_a_dataset_version_end_as_one_serial_order(api):
    for i in range(4):
        name = unique("life")
        assert register(api, "datasets", name, dataset(100 + i)).status_code == 201
        _status_race(api, "dataset", f"{name}@1")
