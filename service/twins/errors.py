"""Errors of synthetic twins and stand-ins."""

from __future__ import annotations

from service.errors import NotFound, Unprocessable


class TwinNotAvailable(NotFound):
    """This model or dataset version has no twin: none was made at registration (the deployment's
    `EVALGATE_TWIN_EPSILON` is 0, the operator's ε budget could not pay for it, or the model's
    outputs are of a type the service cannot make a stand-in for). An operator can upload one."""

    code = "twin_not_available"


class InvalidTwin(Unprocessable):
    """The uploaded twin is not an `.npz` with the dataset version's schema: the same number of
    features and feature dtype, the same task and the same classes 0..k-1, each present."""

    code = "invalid_twin"


class InvalidStandIn(Unprocessable):
    """The uploaded stand-in does not have exactly the model version's inputs and outputs (names,
    types, shapes with their symbolic dimensions), does not load or run in onnxruntime, or is the
    model itself."""

    code = "invalid_stand_in"
