from __future__ import annotations

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from sqlalchemy import select

from service.auth.dependencies import AnyCaller, Operator, PartnerOrOperator
from service.deps import SessionDep, SettingsDep
from service.errors import PayloadTooLarge
from service.jobs import service as jobs_service
from service.registry import service as registry
from service.registry.models import DatasetVersion, ModelVersion, SuiteVersion
from service.registry.schemas import DatasetRead, ModelRead, ModelStatusUpdate, SuiteRead

router = APIRouter(prefix="/v1", tags=["registry"])


def _refuse_oversized(request: Request, limit: int, what: str) -> None:
    """Refuse from Content-Length before the body is read (multipart overhead allowed for)."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + (64 << 10):
        raise PayloadTooLarge(f"{what} is larger than {limit} bytes", code=f"{what}_too_large")


@router.post("/models", response_model=ModelRead, status_code=201)
def register_model(
    request: Request,
    response: Response,
    caller: Operator,
    session: SessionDep,
    settings: SettingsDep,
    name: str = Form(),
    version: str = Form(),
    file: UploadFile = File(),
) -> ModelRead:
    """Register an ONNX model version (operators)."""
    _refuse_oversized(request, settings.model_max_bytes, "model")
    row, created = registry.register_model(
        session, settings, name=name, version=version, stream=file.file, actor=caller.actor
    )
    if not created:
        response.status_code = 200
    return ModelRead.model_validate(row)


@router.get("/models", response_model=list[ModelRead])
def list_models(caller: AnyCaller, session: SessionDep) -> list[ModelRead]:
    """Registered model versions: names, digests, signatures and status. Never weights."""
    rows = session.execute(select(ModelVersion).order_by(ModelVersion.name, ModelVersion.version)).scalars()
    return [ModelRead.model_validate(r) for r in rows]


@router.post("/models/{name}/{version}/status", response_model=ModelRead)
def set_model_status(
    name: str, version: str, body: ModelStatusUpdate, caller: Operator, session: SessionDep
) -> ModelRead:
    """Move a model version along active → deprecated → retired (operators)."""
    return ModelRead.model_validate(registry.set_model_status(session, f"{name}@{version}", body.status, caller.actor))


@router.post("/datasets", response_model=DatasetRead, status_code=201)
def register_dataset(
    request: Request,
    response: Response,
    caller: Operator,
    session: SessionDep,
    settings: SettingsDep,
    name: str = Form(),
    version: str = Form(),
    visibility: str = Form("private"),
    file: UploadFile = File(),
) -> DatasetRead:
    """Register a dataset version: an .npz with float features x and integer labels y (operators)."""
    _refuse_oversized(request, settings.dataset_max_bytes, "dataset")
    row, created = registry.register_dataset(
        session, settings, name=name, version=version, visibility=visibility, stream=file.file, actor=caller.actor
    )
    if not created:
        response.status_code = 200
    return DatasetRead.model_validate(row)


@router.get("/datasets", response_model=list[DatasetRead])
def list_datasets(caller: AnyCaller, session: SessionDep) -> list[DatasetRead]:
    """Registered dataset versions: shape and digest only."""
    rows = session.execute(select(DatasetVersion).order_by(DatasetVersion.name, DatasetVersion.version)).scalars()
    return [DatasetRead.model_validate(r) for r in rows]


@router.post("/suites", response_model=SuiteRead, status_code=201)
def upload_suite(
    request: Request,
    response: Response,
    caller: PartnerOrOperator,
    session: SessionDep,
    settings: SettingsDep,
    file: UploadFile = File(),
) -> SuiteRead:
    """Upload a suite bundle (.tar.gz or .zip with suite.yaml at its top)."""
    _refuse_oversized(request, settings.bundle_max_bytes, "bundle")
    row, created = registry.upload_suite(
        session, settings, stream=file.file, owner_id=caller.principal_id, role=caller.role, actor=caller.actor
    )
    if not created:
        response.status_code = 200
    return SuiteRead.model_validate(row)


@router.get("/suites", response_model=list[SuiteRead])
def list_suites(caller: AnyCaller, session: SessionDep) -> list[SuiteRead]:
    """Suites the caller may use: built-in ones and, for a partner, its own uploads."""
    q = select(SuiteVersion).order_by(SuiteVersion.name, SuiteVersion.version)
    if caller.role == "partner":
        q = q.where((SuiteVersion.builtin.is_(True)) | (SuiteVersion.owner_id == caller.principal_id))
    return [SuiteRead.model_validate(r) for r in session.execute(q).scalars()]


@router.post("/suites/{name}/{version}/approve", response_model=SuiteRead)
def approve_suite(name: str, version: str, request: Request, caller: Operator, session: SessionDep) -> SuiteRead:
    """Approve custom code to run (operators); jobs waiting on it are queued."""
    row = registry.approve_suite(session, f"{name}@{version}", caller.actor)
    queued = jobs_service.queue_approved(session, row.id, caller.actor)
    session.commit()
    for job_id in queued:
        request.app.state.dispatcher.enqueue(job_id)
    return SuiteRead.model_validate(row)
