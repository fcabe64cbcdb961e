"""Lifetime caps: what one partner (and, if an operator turns pooling on, every partner together) may
take from one asset over its whole life, however many days it spreads the taking over.

The defaults derive from how much the asset holds:
- a dataset's labels: n·log2(k) bits (k classes), or 16 bits per regression target;
- a model's parameters: 32 bits each (every initializer element and every number in a node's
  attributes, so a tree ensemble's thresholds and leaf values count too);
and a partner may take a fraction of that (EVALGATE_DATASET_LIFETIME_FRACTION,
EVALGATE_MODEL_LIFETIME_FRACTION), in bits its releases can carry, and at most so many model rows
per parameter (EVALGATE_MODEL_LIFETIME_ROWS_PER_PARAMETER). An operator may set an asset's own caps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.config import Settings
from service.quotas.leakage import to_millibits
from service.registry.models import DatasetVersion, ModelVersion

DATASET, MODEL = "dataset", "model"
BITS, ROWS = "millibits", "rows"
EVERY_PARTNER = 0  # the principal id pooled counters are kept under


def dataset_information_bits(dataset: DatasetVersion) -> float:
    if dataset.task == "regression" or dataset.classes < 2:
        return dataset.rows * 16.0
    return dataset.rows * math.log2(dataset.classes)


def model_information_bits(model: ModelVersion) -> float:
    return float(model.contract.get("parameters") or 0) * 32.0


@dataclass(frozen=True)
class Cap:
    """One lifetime counter and its cap (in the counter's units: millibits or rows)."""

    scope: str
    asset_id: int
    principal_id: int  # EVERY_PARTNER for a pooled cap
    resource: str
    cap: int
    label: str  # for people: what the cap protects


@dataclass(frozen=True)
class Caps:
    bits: tuple[Cap, ...]
    rows: tuple[Cap, ...]


def caps_for(settings: Settings, partner_id: int, dataset: DatasetVersion, model: ModelVersion) -> Caps:
    bits: list[Cap] = []
    rows: list[Cap] = []
    dataset_bits = dataset_cap_bits(settings, dataset)
    if dataset_bits is not None:
        bits.append(Cap(DATASET, dataset.id, partner_id, BITS, to_millibits(dataset_bits), f"dataset {dataset.ref}"))
    model_bits = model_cap_bits(settings, model)
    if model_bits is not None:
        bits.append(Cap(MODEL, model.id, partner_id, BITS, to_millibits(model_bits), f"model {model.ref}"))
    if settings.pooled_lifetime_fraction is not None:
        f = settings.pooled_lifetime_fraction
        bits.append(
            Cap(
                DATASET,
                dataset.id,
                EVERY_PARTNER,
                BITS,
                to_millibits(f * dataset_information_bits(dataset)),
                f"dataset {dataset.ref}, every partner together",
            )
        )
        if model.contract.get("parameters"):
            bits.append(
                Cap(
                    MODEL,
                    model.id,
                    EVERY_PARTNER,
                    BITS,
                    to_millibits(f * model_information_bits(model)),
                    f"model {model.ref}, every partner together",
                )
            )
    model_rows = model_cap_rows(settings, model)
    if model_rows is not None:
        rows.append(Cap(MODEL, model.id, partner_id, ROWS, model_rows, f"model {model.ref}"))
    return Caps(tuple(bits), tuple(rows))


def dataset_cap_bits(settings: Settings, dataset: DatasetVersion) -> float | None:
    if dataset.lifetime_bits is not None:
        return dataset.lifetime_bits
    f = settings.dataset_lifetime_fraction
    return None if f is None else f * dataset_information_bits(dataset)


def model_cap_bits(settings: Settings, model: ModelVersion) -> float | None:
    if model.lifetime_bits is not None:
        return model.lifetime_bits
    f = settings.model_lifetime_fraction
    if f is None or not model.contract.get("parameters"):
        return None  # its size is unknown (registered before parameters were counted)
    return f * model_information_bits(model)


def model_cap_rows(settings: Settings, model: ModelVersion) -> int | None:
    if model.lifetime_rows is not None:
        return model.lifetime_rows
    per = settings.model_lifetime_rows_per_parameter
    if per is None:
        return None
    return max(settings.model_lifetime_rows_min, math.ceil(per * float(model.contract.get("parameters") or 0)))


def describe_dataset_cap(settings: Settings, dataset: DatasetVersion) -> str:
    if dataset.lifetime_bits is not None:
        return "set by its operator"
    what = (
        f"{dataset.rows} rows × log2({dataset.classes}) label bits"
        if dataset.task == "classification" and dataset.classes >= 2
        else f"{dataset.rows} targets × 16 bits"
    )
    return f"{settings.dataset_lifetime_fraction} × {what} = {dataset_information_bits(dataset):.0f} bits"


def describe_model_cap(settings: Settings, model: ModelVersion) -> str:
    if model.lifetime_bits is not None:
        return "set by its operator"
    p = model.contract.get("parameters") or 0
    return f"{settings.model_lifetime_fraction} × {p} parameters × 32 bits"


def describe_model_rows_cap(settings: Settings, model: ModelVersion) -> str:
    if model.lifetime_rows is not None:
        return "set by its operator"
    p = model.contract.get("parameters") or 0
    per = settings.model_lifetime_rows_per_parameter
    return f"max({settings.model_lifetime_rows_min}, {per} rows × {p} parameters)"
