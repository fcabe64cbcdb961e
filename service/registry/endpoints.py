"""HTTP for the registry: models, datasets and suites (approval lives in service.approvals)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, File, Form, Request, Response, UploadFile

from service.auth.dependencies import AnyCaller, Operator, PartnerOrOperator
from service.auth.roles import Role
from service.deps import SessionDep, SettingsDep
from service.errors import PayloadTooLarge, raises
from service.ingress import upload_limit
from service.policies import errors as policy_errors
from service.registry import bundles, errors, lifecycle, suites
from service.registry import repository as repo
from service.registry import service as registry
from service.registry.schemas import (
    DatasetRead,
    DatasetRegistered,
    DatasetStatusUpdate,
    LicenseRead,
    LicenseUpdate,
    ModelRead,
    ModelStatusUpdate,
    SuiteRead,
    UsageRead,
)
from service.twins import service as twins

router = APIRouter(prefix="/v1", tags=["registry"])


def _refuse_oversized(request: Request, limit: int, too_large: type[PayloadTooLarge]) -> None:
    """Refuse from Content-Length before the body is read (multipart overhead allowed for)."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + (64 << 10):
        raise too_large(f"the file is larger than {limit} bytes")


@router.post(
    "/models",
    response_model=ModelRead,
    status_code=201,
    responses={
        200: {
            "model": ModelRead,
            "description": "the same name@version with the same bytes was registered before: nothing changed",
        }
    },
    openapi_extra=upload_limit("model_max_bytes", errors.ModelTooLarge),
)
@raises(
    errors.ModelTooLarge,
    errors.InvalidName,
    errors.InvalidVersion,
    errors.InvalidOutputPolicy,
    errors.VersionTaken,
    errors.InvalidModel,
    errors.InvalidLicense,
)
def register_model(
    request: Request,
    response: Response,
    caller: Operator,
    session: SessionDep,
    settings: SettingsDep,
    name: str = Form(),
    version: str = Form(),
    file: UploadFile = File(),
    output_kind: Literal["probabilities", "logits"] | None = Form(None),
    classes: int | None = Form(None, ge=2, le=10_000),
    threads: int | None = Form(None, ge=1, le=64),
    output_policy: str = Form("full", max_length=32),
    lifetime_bits: float | None = Form(None, gt=0),
    lifetime_rows: int | None = Form(None, ge=1),
    license_terms: str | None = Form(None, max_length=2000),
    license_spdx: str | None = Form(None, max_length=300),
    license_url: str | None = Form(None, max_length=500),
) -> ModelRead:
    """Register an ONNX model version (operators); its output contract is inferred and shown."""
    _refuse_oversized(request, settings.model_max_bytes, errors.ModelTooLarge)
    terms = lifecycle.license_from_form(license_terms, license_spdx, license_url)
    row, created = registry.register_model(
        session,
        settings,
        name=name,
        version=version,
        stream=file.file,
        actor=caller.actor,
        output_kind=output_kind,
        classes=classes,
        threads=threads,
        output_policy=output_policy,
        lifetime_bits=lifetime_bits,
        lifetime_rows=lifetime_rows,
    )
    if created and terms is not None:
        lifecycle.set_license(session, "model", row.ref, terms, reason="set at registration", actor=caller.actor)
    if created:
        twins.make_stand_in(session, settings, row, caller.actor)
    if not created:
        response.status_code = 200
    return ModelRead.model_validate(row)


@router.get("/models", response_model=list[ModelRead])
def list_models(caller: AnyCaller, session: SessionDep) -> list[ModelRead]:
    """Registered model versions: names, digests, signatures and status. Never weights."""
    return [ModelRead.model_validate(r) for r in repo.models(session)]


@router.post("/models/{name}/{version}/status", response_model=ModelRead)
@raises(
    errors.InvalidReference,
    errors.UnknownModelVersion,
    errors.InvalidStatus,
    errors.InvalidTransition,
    errors.RetirementUnconfirmed,
)
def set_model_status(
    name: str, version: str, body: ModelStatusUpdate, caller: Operator, session: SessionDep
) -> ModelRead:
    """Move a model version along active → deprecated → retired (operators); retiring one with
    released jobs answers 409 with those jobs and a token, and retires it when repeated with it."""
    row = lifecycle.set_model_status(session, f"{name}@{version}", body.status, caller.actor, confirm=body.confirm)
    return ModelRead.model_validate(row)


@router.put("/models/{name}/{version}/license", response_model=ModelRead)
@raises(errors.InvalidReference, errors.UnknownModelVersion, policy_errors.ReasonRequired)
def set_model_license(name: str, version: str, body: LicenseUpdate, caller: Operator, session: SessionDep) -> ModelRead:
    """Set a model version's license terms, with a reason (operators)."""
    terms = LicenseRead.model_validate(body.model_dump(exclude={"reason"}))
    row = lifecycle.set_license(session, "model", f"{name}@{version}", terms, reason=body.reason, actor=caller.actor)
    return ModelRead.model_validate(row)


@router.get("/models/{name}/{version}/usage", response_model=UsageRead)
@raises(errors.InvalidReference, errors.UnknownModelVersion)
def model_usage(name: str, version: str, caller: Operator, session: SessionDep) -> UsageRead:
    """Which partners used a model version: their jobs and releases on it (operators)."""
    return lifecycle.usage(session, "model", f"{name}@{version}")


@router.put("/datasets/{name}/{version}/license", response_model=DatasetRead)
@raises(errors.InvalidReference, errors.UnknownDatasetVersion, policy_errors.ReasonRequired)
def set_dataset_license(
    name: str, version: str, body: LicenseUpdate, caller: Operator, session: SessionDep
) -> DatasetRead:
    """Set a dataset version's license terms, with a reason (operators)."""
    terms = LicenseRead.model_validate(body.model_dump(exclude={"reason"}))
    row = lifecycle.set_license(session, "dataset", f"{name}@{version}", terms, reason=body.reason, actor=caller.actor)
    return DatasetRead.model_validate(row)


@router.post("/datasets/{name}/{version}/status", response_model=DatasetRead)
@raises(
    errors.InvalidReference,
    errors.UnknownDatasetVersion,
    errors.InvalidStatus,
    errors.InvalidTransition,
    errors.RetirementUnconfirmed,
)
def set_dataset_status(
    name: str, version: str, body: DatasetStatusUpdate, caller: Operator, session: SessionDep
) -> DatasetRead:
    """Move a dataset version along active → deprecated → retired (operators); retiring one with
    released jobs answers 409 with those jobs and a token, and retires it when repeated with it."""
    row = lifecycle.set_dataset_status(session, f"{name}@{version}", body.status, caller.actor, confirm=body.confirm)
    return DatasetRead.model_validate(row)


@router.get("/datasets/{name}/{version}/usage", response_model=UsageRead)
@raises(errors.InvalidReference, errors.UnknownDatasetVersion)
def dataset_usage(name: str, version: str, caller: Operator, session: SessionDep) -> UsageRead:
    """Which partners used a dataset version: their jobs and releases on it (operators)."""
    return lifecycle.usage(session, "dataset", f"{name}@{version}")


@router.post(
    "/datasets",
    response_model=DatasetRegistered,
    status_code=201,
    responses={
        200: {
            "model": DatasetRegistered,
            "description": "the same name@version with the same bytes was registered before: nothing changed",
        }
    },
    openapi_extra=upload_limit("dataset_max_bytes", errors.DatasetTooLarge),
)
@raises(
    errors.DatasetTooLarge,
    errors.InvalidName,
    errors.InvalidVersion,
    errors.InvalidVisibility,
    errors.VersionTaken,
    errors.InvalidDataset,
    errors.DatasetTooSmall,
    errors.DatasetHasNan,
    errors.DatasetEmptyClass,
    errors.InvalidLicense,
)
def register_dataset(
    request: Request,
    response: Response,
    caller: Operator,
    session: SessionDep,
    settings: SettingsDep,
    name: str = Form(),
    version: str = Form(),
    visibility: str = Form("private"),
    allow_nan: bool = Form(False),
    lifetime_bits: float | None = Form(None, gt=0),
    license_terms: str | None = Form(None, max_length=2000),
    license_spdx: str | None = Form(None, max_length=300),
    license_url: str | None = Form(None, max_length=500),
    file: UploadFile = File(),
) -> DatasetRegistered:
    """Register a dataset version: an .npz with features x and labels (or regression targets) y (operators)."""
    _refuse_oversized(request, settings.dataset_max_bytes, errors.DatasetTooLarge)
    terms = lifecycle.license_from_form(license_terms, license_spdx, license_url)
    row, created = registry.register_dataset(
        session,
        settings,
        name=name,
        version=version,
        visibility=visibility,
        stream=file.file,
        actor=caller.actor,
        allow_nan=allow_nan,
        lifetime_bits=lifetime_bits,
    )
    if created and terms is not None:
        lifecycle.set_license(session, "dataset", row.ref, terms, reason="set at registration", actor=caller.actor)
    if created:
        twins.make_dataset_twin(session, settings, row, caller)
    if not created:
        response.status_code = 200
    return DatasetRegistered.model_validate(row)


@router.get("/datasets", response_model=list[DatasetRead])
def list_datasets(caller: AnyCaller, session: SessionDep) -> list[DatasetRead]:
    """Registered dataset versions: shape, digest, license and lifecycle status."""
    return [DatasetRead.model_validate(r) for r in repo.datasets(session)]


@router.post(
    "/suites",
    response_model=SuiteRead,
    status_code=201,
    responses={
        200: {
            "model": SuiteRead,
            "description": "the same bundle was uploaded before as your-name/name@version: nothing changed",
        }
    },
    openapi_extra=upload_limit("bundle_max_bytes", errors.BundleTooLarge),
)
@raises(
    errors.BundleTooLarge,
    *bundles.REFUSALS,
    errors.SuiteNameReserved,
    errors.SuiteExceedsLeakagePolicy,
    errors.VersionTaken,
)
def upload_suite(
    request: Request,
    response: Response,
    caller: PartnerOrOperator,
    session: SessionDep,
    settings: SettingsDep,
    file: UploadFile = File(),
) -> SuiteRead:
    """Upload a suite bundle (.tar.gz or .zip with suite.yaml at its top) as your-name/name@version."""
    _refuse_oversized(request, settings.bundle_max_bytes, errors.BundleTooLarge)
    row, created = registry.upload_suite(
        session,
        settings,
        stream=file.file,
        owner_id=caller.principal_id,
        owner=caller.name,
        role=caller.role,
        actor=caller.actor,
    )
    if not created:
        response.status_code = 200
    return SuiteRead.model_validate(row)


@router.get("/suites", response_model=list[SuiteRead])
def list_suites(caller: AnyCaller, session: SessionDep) -> list[SuiteRead]:
    """Suites the caller may use: built-in, published and its own (operators: every suite)."""
    mine = None if caller.role == Role.OPERATOR else caller.principal_id
    return [SuiteRead.model_validate(r) for r in repo.suites_usable_by(session, mine)]


@router.post("/suites/{owner}/{name}/{version}/publish", response_model=SuiteRead)
@raises(errors.InvalidReference, errors.UnknownSuiteVersion, errors.NotSuiteOwner)
def publish_suite(owner: str, name: str, version: str, caller: PartnerOrOperator, session: SessionDep) -> SuiteRead:
    """Let every partner use a suite version (its owner or an operator); idempotent."""
    row = suites.set_published(
        session,
        f"{owner}/{name}@{version}",
        True,
        principal_id=caller.principal_id,
        role=caller.role,
        actor=caller.actor,
    )
    return SuiteRead.model_validate(row)


@router.post("/suites/{owner}/{name}/{version}/unpublish", response_model=SuiteRead)
@raises(errors.InvalidReference, errors.UnknownSuiteVersion, errors.NotSuiteOwner, errors.BuiltinSuiteAlwaysPublished)
def unpublish_suite(owner: str, name: str, version: str, caller: PartnerOrOperator, session: SessionDep) -> SuiteRead:
    """Withdraw a published suite version from other partners' new jobs (jobs admitted keep it)."""
    row = suites.set_published(
        session,
        f"{owner}/{name}@{version}",
        False,
        principal_id=caller.principal_id,
        role=caller.role,
        actor=caller.actor,
    )
    return SuiteRead.model_validate(row)
