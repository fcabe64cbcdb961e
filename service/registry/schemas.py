from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field


class ModelRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    version: str
    sha256: str
    size_bytes: int
    status: str
    signature: dict[Any, Any]
    contract: dict[str, Any] = Field(
        description="how built-in suites read it: its input and feature count, label and score outputs, classes, "
        "whether scores are probabilities or logits, and notes on what could not be told"
    )
    inference: dict[str, Any] = Field(description="the one onnxruntime configuration it runs with, everywhere")
    output_policy: dict[str, Any] = Field(description="what jobs may see of its scores: full, rounded, top_k, labels")
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
    task: str
    visibility: str
    created_at: datetime


class DatasetRegistered(DatasetRead):
    """What the operator who registered a dataset is told, warnings included."""

    warnings: list[str]


class SuiteRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    ref: str = Field(description="owner/name@version: how a job names it wherever it is used from")
    owner: str = Field(
        validation_alias=AliasChoices("namespace", "owner"),
        description="its namespace: the name of the principal that uploaded it, or `evalgate` (built in)",
    )
    name: str
    version: str
    sha256: str
    entrypoint: str
    mode: str = Field(description="metrics: the code reports declared metrics; rows: the service computes them")
    metrics: dict[str, dict[Any, Any]] = Field(description="metrics mode: each metric's declaration")
    rows: dict[str, Any] | None = Field(description="rows mode: what the rows are and the metrics offered")
    builtin: bool
    approved: bool
    published: bool = Field(description="usable by every partner (built-in suites always are)")
    created_at: datetime
