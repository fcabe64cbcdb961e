from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

SPDX_ID = r"^[A-Za-z0-9][A-Za-z0-9.+-]{0,63}( (WITH|AND|OR) [A-Za-z0-9][A-Za-z0-9.+-]{0,63}){0,4}$"


class LicenseRead(BaseModel):
    """The terms a model or dataset version is used under: a short text and an SPDX id or a URL."""

    model_config = ConfigDict(extra="forbid")

    terms: str = Field(min_length=1, max_length=2000, description="the terms in a few words")
    spdx: str | None = Field(default=None, pattern=SPDX_ID, description="an SPDX license id or expression")
    url: str | None = Field(default=None, max_length=500, pattern=r"^https?://[^\s]+$", description="where they are")

    @model_validator(mode="after")
    def _named(self) -> LicenseRead:
        if self.spdx is None and self.url is None:
            raise ValueError("give an SPDX id (spdx) or a URL (url) with the terms")
        return self


class LicenseUpdate(LicenseRead):
    reason: str = Field(min_length=1, max_length=1000, description="why: recorded on the audit log")


class AssetUsage(BaseModel):
    """One partner's use of a model or dataset version (operators)."""

    partner: str
    jobs: int = Field(description="jobs admitted on it")
    released: int = Field(description="of which released")
    first_used_at: datetime
    last_used_at: datetime


class UsageRead(BaseModel):
    asset: str = Field(description="model:name@version or dataset:name@version")
    partners: list[AssetUsage]


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
    license: LicenseRead | None = Field(default=None, description="its license terms, as an operator set them")
    created_at: datetime


class ModelStatusUpdate(BaseModel):
    # Bounded (so also checked as Unicode text: a lone surrogate is refused, not a 500); an unknown
    # status of that length is `invalid_status`, with the known ones.
    status: str = Field(max_length=16, description="active, deprecated or retired: the lifecycle only moves forward")
    confirm: str | None = Field(
        default=None,
        max_length=64,
        description="retiring a version with released jobs: the token of its first refusal (retirement_unconfirmed)",
    )


class DatasetStatusUpdate(ModelStatusUpdate):
    """A dataset version's lifecycle, as a model version's."""


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
    status: str = Field(description="active, deprecated or retired (a retired version takes no new jobs)")
    license: LicenseRead | None = Field(default=None, description="its license terms, as an operator set them")
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
