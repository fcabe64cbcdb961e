"""Whether a model can be evaluated on a dataset, and which of its outputs the rows come from: checked
at submission, before anything is reserved, from what registration learned of both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.orm import Session

from service.config import Settings
from service.inference.model_info import Contract, describe_model
from service.registry import errors, storage
from service.registry import repository as repo
from service.registry.models import DatasetVersion, ModelVersion

Role = Literal["probabilities", "logits", "labels", "values"]


@dataclass(frozen=True)
class Use:
    """How a rows-mode job reads the model: which output, what it is, how many classes."""

    output: str
    role: Role
    classes: int


def contract(settings: Settings, model: ModelVersion) -> Contract:
    """The model's contract (worked out now for a version registered before contracts were kept)."""
    if not model.contract:
        _, found, inference = describe_model(
            storage.blob_path(settings.data_dir, model.sha256), settings.inference_threads
        )
        model.contract, model.inference = found.as_dict(), inference
    return Contract(**model.contract)


def _misfit(c: Contract, dataset: DatasetVersion) -> str | None:
    """Why the model's input cannot take the dataset's features, or its classes its labels; None if they fit."""
    if c.input is None:
        return "the model does not have exactly one 2-D numeric input for a dataset's features"
    if c.features is not None and c.features != dataset.features:
        return f"the model's input {c.input!r} takes {c.features} features; {dataset.ref} has {dataset.features}"
    if c.input_dtype is not None and c.input_dtype[0] in "iu" and dataset.features_dtype.startswith("float"):
        return f"the model's input {c.input!r} takes {c.input_dtype}; {dataset.ref}'s features are floats"
    if c.classes is not None and dataset.task == "classification" and c.classes != dataset.classes:
        return f"the model has {c.classes} classes; {dataset.ref}'s labels have {dataset.classes}"
    return None


def check(session: Session, settings: Settings, model: ModelVersion, dataset: DatasetVersion) -> Contract:
    """The model's contract, if the dataset fits it; else a refusal naming datasets that do."""
    c = contract(settings, model)
    why = _misfit(c, dataset)
    if why is not None:
        others = [d for d in repo.datasets(session, exclude_id=dataset.id) if d.status != "retired"]
        fitting = [d.ref for d in others if _misfit(c, d) is None]
        raise errors.ModelDatasetMismatch(why, alternatives=fitting[:10])
    return c


def choose_output(c: Contract, requested: str | None, output_policy: dict[str, Any] | None = None) -> Use:
    """The output a classification rows-mode job reads: the one named, else the one score output,
    else the one label output. Under a labels-only output policy, score outputs give labels."""
    if c.classes is None:
        raise errors.ModelContractUnknown("the number of classes of the model is unknown: " + "; ".join(c.notes))
    readable = [*c.scores, *c.labels]
    if requested is not None:
        if requested not in readable:
            raise errors.UnknownModelOutput(f"the model has no readable output {requested!r}", alternatives=readable)
        name = requested
    elif len(c.scores) == 1:
        name = c.scores[0]
    elif len(c.scores) > 1:
        raise errors.ModelOutputAmbiguous(
            "the model has several score outputs: name one with output", alternatives=c.scores
        )
    elif len(c.labels) == 1:
        name = c.labels[0]
    else:
        raise errors.ModelContractUnknown(
            "the model has no output a classifier's metrics can read: " + "; ".join(c.notes)
        )
    if name in c.labels or (output_policy or {}).get("kind") == "labels":
        return Use(name, "labels", c.classes)
    if c.output_kind is None:
        raise errors.ModelContractUnknown(
            f"whether {name!r} gives probabilities or logits is unknown: " + "; ".join(c.notes)
        )
    return Use(name, c.output_kind, c.classes)


def choose_value_output(c: Contract, requested: str | None) -> str:
    """The output a regression rows-mode job reads: the one named, else the one float output per row."""
    if requested is not None:
        if requested not in c.values:
            raise errors.UnknownModelOutput(
                f"the model has no per-row value output {requested!r}", alternatives=c.values
            )
        return requested
    if len(c.values) == 1:
        return c.values[0]
    if c.values:
        raise errors.ModelOutputAmbiguous(
            "the model has several value outputs: name one with output", alternatives=c.values
        )
    raise errors.ModelContractUnknown("the model has no output of one value per row: " + "; ".join(c.notes))
