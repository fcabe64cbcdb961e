"""Twins: made when a version is registered, replaced by an operator's upload, read by those who may
use the version.

A dataset's twin (service.twins.synthesis) releases a few statistics of the real rows with OpenDP
noise, paid for with `EVALGATE_TWIN_EPSILON` from the registering operator's own ε budget on that
dataset version (a ledger event, as for a job's ε), and nothing else of them. A model's stand-in
(service.inference.stand_in) copies the declared inputs and outputs and has random weights: nothing
of the original's weights, so it costs nothing. A twin that cannot be made leaves the version
without one (recorded), which an operator's upload mends.
"""

from __future__ import annotations

import io
import secrets
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from sqlalchemy.orm import Session

from service import __version__
from service.auth.service import Caller
from service.config import Settings
from service.db import utcnow
from service.errors import EvalgateError, PayloadTooLarge
from service.inference import stand_in
from service.ledger import service as ledger
from service.quotas import errors as quota_errors
from service.quotas import service as quotas
from service.registry import datasets, storage
from service.registry import errors as registry_errors
from service.registry.models import DatasetVersion, ModelVersion
from service.twins import errors, synthesis
from service.twins import repository as repo
from service.twins.models import Twin, TwinKind, TwinOrigin
from service.twins.schemas import TwinRead

SKIPPED = "twin.skipped"


def store_dir(settings: Settings) -> Path:
    """The twins' own blob store: apart from the registry's, so no twin is ever taken for a
    registered version's bytes (or kept alive by one)."""
    return settings.data_dir / "twins"


def blob_path(settings: Settings, twin: Twin) -> Path:
    return storage.blob_path(store_dir(settings), twin.sha256)


def _subject(kind: TwinKind, ref: str) -> str:
    return f"{kind}:{ref}"


def _record(
    session: Session,
    kind: TwinKind,
    asset_id: int,
    sha: str,
    size: int,
    origin: TwinOrigin,
    provenance: dict[str, Any],
) -> Twin:
    row = repo.twin(session, kind, asset_id)
    if row is None:
        row = Twin(kind=kind, asset_id=asset_id)
        session.add(row)
    row.sha256, row.size_bytes, row.origin, row.provenance = sha, size, origin, provenance
    row.created_at = utcnow()
    session.flush()
    return row


def _skip(session: Session, actor: str, kind: TwinKind, ref: str, reason: str) -> None:
    ledger.append(session, actor=actor, action=SKIPPED, subject=_subject(kind, ref), data={"reason": reason})


# -- datasets ------------------------------------------------------------------------------------------------


def make_dataset_twin(session: Session, settings: Settings, dataset: DatasetVersion, operator: Caller) -> Twin | None:
    """The twin of a newly registered dataset version, its ε charged to `operator` (None: not made,
    and why is on the ledger)."""
    epsilon = settings.twin_epsilon
    kind = TwinKind.DATASET
    if epsilon <= 0:
        _skip(session, operator.actor, kind, dataset.ref, "EVALGATE_TWIN_EPSILON is 0")
        return None
    mechanism = settings.dp_mechanism if settings.dp_mechanism != "none" else "laplace"
    payer = quotas.Partner(operator.principal_id, operator.name, str(operator.role))
    try:
        quotas.charge_epsilon(
            session, settings, payer, dataset.id, dataset.ref, epsilon, subject=_subject(kind, dataset.ref)
        )
    except quota_errors.PrivacyBudgetExhausted as e:
        _skip(session, operator.actor, kind, dataset.ref, e.detail)
        return None
    path = storage.blob_path(settings.data_dir, dataset.sha256)
    seed = secrets.randbits(32)
    made = synthesis.make_twin(
        datasets.features(path),
        datasets.labels(path),
        classes=dataset.classes,
        epsilon=epsilon,
        mechanism=mechanism,
        delta=settings.dp_delta if mechanism == "gaussian" else 0.0,
        quantile=settings.twin_range_quantile,
        seed=seed,
    )
    buf = io.BytesIO()
    np.savez(buf, x=made.x, y=made.y)
    buf.seek(0)
    sha, _, size = storage.store_stream(store_dir(settings), buf, 1 << 40, registry_errors.DatasetTooLarge)
    provenance = {
        "of": {"dataset": dataset.ref, "sha256": dataset.sha256},
        "origin": TwinOrigin.GENERATED,
        "charged_to": operator.actor,
        "released": made.released,
        "nothing_else": "no other statistic, and no row, of the real dataset went into this file",
        "service_version": __version__,
    }
    row = _record(session, kind, dataset.id, sha, size, TwinOrigin.GENERATED, provenance)
    ledger.append(
        session,
        actor=operator.actor,
        action="twin.made",
        subject=_subject(kind, dataset.ref),
        data={
            "sha256": sha,
            "epsilon": epsilon,
            "statistics": [
                {"statistic": s["statistic"], "epsilon": s["epsilon"], "mechanism": s["mechanism"]}
                for s in made.released["statistics"]
            ],
            "seed": seed,
        },
    )
    return row


def _uploaded(
    settings: Settings, stream: BinaryIO, max_bytes: int, too_large: type[PayloadTooLarge]
) -> tuple[str, Path, int]:
    return storage.store_stream(store_dir(settings), stream, max_bytes, too_large)


def _discard(session: Session, path: Path, sha: str) -> None:
    if not repo.blob_in_use(session, sha):
        path.unlink(missing_ok=True)


def upload_dataset_twin(
    session: Session, settings: Settings, dataset: DatasetVersion, stream: BinaryIO, actor: str
) -> Twin:
    """An operator's hand-made twin, checked for the dataset version's schema; it replaces the twin."""
    sha, path, size = _uploaded(settings, stream, settings.dataset_max_bytes, registry_errors.DatasetTooLarge)
    try:
        found = datasets.inspect_dataset(path, min_rows=1, allow_nan=True)
        want = (dataset.features, dataset.features_dtype, dataset.task, dataset.classes)
        got = (found.features, found.features_dtype, found.task, found.classes)
        if got != want:
            raise errors.InvalidTwin(
                f"the twin has (features, dtype, task, classes) {got}; {dataset.ref} has {want}",
                alternatives=[
                    f"{want[0]} features of {want[1]}, {want[2]} targets" + (f" 0..{want[3] - 1}" if want[3] else "")
                ],
            )
    except EvalgateError as e:
        _discard(session, path, sha)
        if isinstance(e, errors.InvalidTwin):
            raise
        raise errors.InvalidTwin(e.detail, alternatives=e.alternatives) from None
    provenance = {
        "of": {"dataset": dataset.ref, "sha256": dataset.sha256},
        "origin": TwinOrigin.UPLOADED,
        "uploaded_by": actor,
        "released": "nothing by the service: the operator's own file, checked for the dataset's schema",
        "rows": found.rows,
        "service_version": __version__,
    }
    row = _record(session, TwinKind.DATASET, dataset.id, sha, size, TwinOrigin.UPLOADED, provenance)
    ledger.append(
        session,
        actor=actor,
        action="twin.uploaded",
        subject=_subject(TwinKind.DATASET, dataset.ref),
        data={"sha256": sha},
    )
    return row


# -- models --------------------------------------------------------------------------------------------------


def make_stand_in(session: Session, settings: Settings, model: ModelVersion, actor: str) -> Twin | None:
    """The stand-in of a newly registered model version (None: its outputs cannot be stood in for,
    and why is on the ledger)."""
    original = storage.blob_path(settings.data_dir, model.sha256)
    seed = secrets.randbits(32)
    threads = int((model.inference or {}).get("intra_op_threads", settings.inference_threads))
    try:
        data = stand_in.build(original, model.contract or {}, seed)
        with tempfile.NamedTemporaryFile(dir=settings.data_dir, suffix=".onnx") as tmp:
            tmp.write(data)
            tmp.flush()
            learned = stand_in.check(original, Path(tmp.name), threads)
    except stand_in.StandInUnsupported as e:
        _skip(session, actor, TwinKind.MODEL, model.ref, str(e))
        return None
    sha, _, size = storage.store_stream(store_dir(settings), io.BytesIO(data), 1 << 40, registry_errors.ModelTooLarge)
    provenance = {
        "of": {"model": model.ref, "sha256": model.sha256},
        "origin": TwinOrigin.GENERATED,
        "seed": seed,
        "made_from": (
            "the model's declared inputs and outputs (names, types, shapes) and its registered contract "
            "(which outputs are scores or labels, probabilities or logits, how many classes); no initializer, "
            "node or attribute of the model"
        ),
        "weights": "random normal from the seed",
        "interface": stand_in.interface(original),
        "contract": learned["contract"],
        "released": "nothing of the model's weights or data: ε 0",
        "service_version": __version__,
    }
    row = _record(session, TwinKind.MODEL, model.id, sha, size, TwinOrigin.GENERATED, provenance)
    ledger.append(
        session,
        actor=actor,
        action="twin.made",
        subject=_subject(TwinKind.MODEL, model.ref),
        data={"sha256": sha, "seed": seed},
    )
    return row


def upload_stand_in(session: Session, settings: Settings, model: ModelVersion, stream: BinaryIO, actor: str) -> Twin:
    """An operator's own stand-in, checked for the model version's exact interface; it replaces the stand-in."""
    sha, path, size = _uploaded(settings, stream, settings.model_max_bytes, registry_errors.ModelTooLarge)
    threads = int((model.inference or {}).get("intra_op_threads", settings.inference_threads))
    original = storage.blob_path(settings.data_dir, model.sha256)
    try:
        learned = stand_in.check(original, path, threads)
    except stand_in.StandInUnsupported as e:
        _discard(session, path, sha)
        raise errors.InvalidStandIn(str(e)) from None
    provenance = {
        "of": {"model": model.ref, "sha256": model.sha256},
        "origin": TwinOrigin.UPLOADED,
        "uploaded_by": actor,
        "interface": stand_in.interface(original),
        "contract": learned["contract"],
        "released": "the operator's own file, checked for the model's interface (not the model itself)",
        "service_version": __version__,
    }
    row = _record(session, TwinKind.MODEL, model.id, sha, size, TwinOrigin.UPLOADED, provenance)
    ledger.append(
        session, actor=actor, action="twin.uploaded", subject=_subject(TwinKind.MODEL, model.ref), data={"sha256": sha}
    )
    return row


# -- reading -------------------------------------------------------------------------------------------------


def twin_of(session: Session, kind: TwinKind, asset_id: int, ref: str) -> Twin:
    row = repo.twin(session, kind, asset_id)
    if row is None:
        raise errors.TwinNotAvailable(
            f"{kind} {ref} has no twin", alternatives=[f"ask an operator to upload one (PUT /v1/{kind}s/…/twin)"]
        )
    return row


def read(twin: Twin, ref: str) -> TwinRead:
    return TwinRead(
        kind=twin.kind,
        of=ref,
        sha256=twin.sha256,
        size_bytes=twin.size_bytes,
        origin=twin.origin,
        provenance=twin.provenance,
        created_at=twin.created_at,
    )
