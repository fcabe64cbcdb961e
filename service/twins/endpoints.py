"""HTTP for twins: download a version's twin (any partner allowed to use the version, and operators),
read what made it, and upload a hand-made one (operators)."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Depends, File, UploadFile
from fastapi.responses import FileResponse

from service.auth.dependencies import Operator, PartnerOrOperator
from service.auth.roles import Role
from service.deps import SessionDep, SettingsDep
from service.errors import raises
from service.ingress import upload_limit
from service.policies import errors as policy_errors
from service.policies import service as policies
from service.registry import errors as registry_errors
from service.registry import service as registry
from service.registry.models import DatasetVersion, ModelVersion
from service.sanctions import errors as sanction_errors
from service.sanctions import service as sanctions
from service.twins import errors
from service.twins import service as twins
from service.twins.models import Twin, TwinKind
from service.twins.schemas import TwinRead

router = APIRouter(prefix="/v1", tags=["twins"])

DIGEST_HEADER = "Repr-Digest"  # RFC 9530: sha-256=:<base64>:


@raises(
    registry_errors.InvalidReference,
    registry_errors.UnknownDatasetVersion,
    registry_errors.DatasetRetired,
    policy_errors.DatasetNotAllowed,
    sanction_errors.PartnerSuspended,
)
def usable_dataset(
    name: str, version: str, caller: PartnerOrOperator, session: SessionDep, settings: SettingsDep
) -> DatasetVersion:
    """A dataset version the caller may use: every one for operators; for a partner, one its policy
    includes and that is not retired, while it is not suspended (as for a job on it)."""
    ref = f"{name}@{version}"
    if caller.role != Role.PARTNER:
        return registry.resolve_dataset(session, ref)
    dataset = registry.usable_dataset(session, ref)
    sanctions.check(session, settings, caller.principal_id, caller.name)
    policies.check_dataset_access(session, caller.name, dataset)
    return dataset


@raises(
    registry_errors.InvalidReference,
    registry_errors.UnknownModelVersion,
    registry_errors.ModelRetired,
    policy_errors.ModelNotAllowed,
    sanction_errors.PartnerSuspended,
)
def usable_model(
    name: str, version: str, caller: PartnerOrOperator, session: SessionDep, settings: SettingsDep
) -> ModelVersion:
    """A model version the caller may use: every one for operators; for a partner, one its policy
    includes and that is not retired, while it is not suspended (as for a job on it)."""
    ref = f"{name}@{version}"
    if caller.role != Role.PARTNER:
        return registry.resolve_model(session, ref)
    model = registry.usable_model(session, ref)
    sanctions.check(session, settings, caller.principal_id, caller.name)
    policies.check_model_access(session, caller.name, model)
    return model


UsableDataset = Annotated[DatasetVersion, Depends(usable_dataset)]
UsableModel = Annotated[ModelVersion, Depends(usable_model)]


@raises(registry_errors.InvalidReference, registry_errors.UnknownDatasetVersion)
def any_dataset(name: str, version: str, caller: Operator, session: SessionDep) -> DatasetVersion:
    return registry.resolve_dataset(session, f"{name}@{version}")


@raises(registry_errors.InvalidReference, registry_errors.UnknownModelVersion)
def any_model(name: str, version: str, caller: Operator, session: SessionDep) -> ModelVersion:
    return registry.resolve_model(session, f"{name}@{version}")


def _file(settings: SettingsDep, twin: Twin, filename: str, media_type: str) -> FileResponse:
    digest = base64.b64encode(bytes.fromhex(twin.sha256)).decode()
    return FileResponse(
        twins.blob_path(settings, twin),
        media_type=media_type,
        filename=filename,
        headers={DIGEST_HEADER: f"sha-256=:{digest}:", "ETag": f'"{twin.sha256}"'},
    )


FILE = {
    "description": "the twin's file; its sha256 in Repr-Digest and ETag",
    "content": {"application/octet-stream": {}},
}


@router.get("/datasets/{name}/{version}/twin", response_class=FileResponse, responses={200: FILE})
@raises(errors.TwinNotAvailable)
def download_dataset_twin(dataset: UsableDataset, session: SessionDep, settings: SettingsDep) -> FileResponse:
    """A dataset version's synthetic twin (.npz with x and y): its schema, none of its rows."""
    twin = twins.twin_of(session, TwinKind.DATASET, dataset.id, dataset.ref)
    return _file(settings, twin, f"{dataset.name}-{dataset.version}-twin.npz", "application/octet-stream")


@router.get("/datasets/{name}/{version}/twin/provenance", response_model=TwinRead)
@raises(errors.TwinNotAvailable)
def dataset_twin_provenance(dataset: UsableDataset, session: SessionDep) -> TwinRead:
    """What a dataset version's twin was made from: each statistic released, its ε, mechanism, seed."""
    return twins.read(twins.twin_of(session, TwinKind.DATASET, dataset.id, dataset.ref), dataset.ref)


@router.put(
    "/datasets/{name}/{version}/twin",
    response_model=TwinRead,
    openapi_extra=upload_limit("dataset_max_bytes", registry_errors.DatasetTooLarge),
)
@raises(registry_errors.DatasetTooLarge, errors.InvalidTwin)
def upload_dataset_twin(
    dataset: Annotated[DatasetVersion, Depends(any_dataset)],
    caller: Operator,
    session: SessionDep,
    settings: SettingsDep,
    file: UploadFile = File(),
) -> TwinRead:
    """Replace a dataset version's twin with a hand-made one of the same schema (operators)."""
    twin = twins.upload_dataset_twin(session, settings, dataset, file.file, caller.actor)
    return twins.read(twin, dataset.ref)


@router.get("/models/{name}/{version}/twin", response_class=FileResponse, responses={200: FILE})
@raises(errors.TwinNotAvailable)
def download_stand_in(model: UsableModel, session: SessionDep, settings: SettingsDep) -> FileResponse:
    """A model version's stand-in (.onnx): the same inputs and outputs, random weights."""
    twin = twins.twin_of(session, TwinKind.MODEL, model.id, model.ref)
    return _file(settings, twin, f"{model.name}-{model.version}-stand-in.onnx", "application/octet-stream")


@router.get("/models/{name}/{version}/twin/provenance", response_model=TwinRead)
@raises(errors.TwinNotAvailable)
def stand_in_provenance(model: UsableModel, session: SessionDep) -> TwinRead:
    """What a model version's stand-in was made from (its interface, a seed; never the weights)."""
    return twins.read(twins.twin_of(session, TwinKind.MODEL, model.id, model.ref), model.ref)


@router.put(
    "/models/{name}/{version}/twin",
    response_model=TwinRead,
    openapi_extra=upload_limit("model_max_bytes", registry_errors.ModelTooLarge),
)
@raises(registry_errors.ModelTooLarge, errors.InvalidStandIn)
def upload_stand_in(
    model: Annotated[ModelVersion, Depends(any_model)],
    caller: Operator,
    session: SessionDep,
    settings: SettingsDep,
    file: UploadFile = File(),
) -> TwinRead:
    """Replace a model version's stand-in with the operator's own, of exactly its interface (operators)."""
    twin = twins.upload_stand_in(session, settings, model, file.file, caller.actor)
    return twins.read(twin, model.ref)
