from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class ModelRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    version: str
    sha256: str
    size_bytes: int
    status: str
    signature: dict[Any, Any]
    created_at: datetime


class ModelStatusUpdate(BaseModel):
    status: str


class DatasetRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    version: str
    sha256: str
    rows: int
    features: int
    classes: int
    visibility: str
    created_at: datetime


class SuiteRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    version: str
    sha256: str
    entrypoint: str
    metrics: dict[str, dict[Any, Any]]
    builtin: bool
    approved: bool
    created_at: datetime
