"""Where `evalgate dev run` takes the twin and the stand-in from: the server (GET …/twin, digests
checked), or local files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from service.dev.run import Assets, DevError
from service.registry import datasets
from service.registry.errors import InvalidDataset

if TYPE_CHECKING:
    from service.client import Api


def _one(listing: list[dict], ref: str, kind: str) -> dict:  # type: ignore[type-arg]
    name, _, version = ref.partition("@")
    for row in listing:
        if row["name"] == name and row["version"] == version:
            return row
    versions = sorted(r["version"] for r in listing if r["name"] == name)
    raise DevError(f"unknown {kind} {ref}" + (f"; versions of {name}: {', '.join(versions)}" if versions else ""))


def from_server(api: Api, model_ref: str, dataset_ref: str, dest: Path) -> Assets:
    """Download the dataset's twin and the model's stand-in into dest, with what the real job would
    be judged by: the dataset's real size, the model's contract, output policy and threads."""
    from service.client import ApiError

    for ref, kind in ((model_ref, "model"), (dataset_ref, "dataset")):
        if ref.count("@") != 1 or not all(ref.split("@")):
            raise DevError(f"give the {kind} as name@version, not {ref!r}")
    try:
        dataset = _one(api.datasets(), dataset_ref, "dataset")
        model = _one(api.models(), model_ref, "model")
        twin, stand_in = dest / "twin.npz", dest / "stand-in.onnx"
        api.download_twin("datasets", dataset_ref, twin)
        api.download_twin("models", model_ref, stand_in)
    except ApiError as e:
        raise DevError(str(e)) from None
    for path in (twin, stand_in):
        path.chmod(0o444)
    return Assets(
        dataset=twin,
        model=stand_in,
        dataset_rows=int(dataset["rows"]),
        output_policy=model.get("output_policy") or {"kind": "full"},
        threads=int((model.get("inference") or {}).get("intra_op_threads", 1)),
        contract=model.get("contract") or None,
        notes=(f"twin of {dataset_ref} ({dataset['rows']} real rows) and stand-in of {model_ref}, from the server",),
    )


def from_files(dataset: Path, model: Path, dest: Path, dataset_rows: int | None = None) -> Assets:
    """Local files: the real job's cost is then reckoned on the twin's own size (or `dataset_rows`)."""
    twin, stand_in = dest / "twin.npz", dest / "stand-in.onnx"
    twin.write_bytes(dataset.read_bytes())
    stand_in.write_bytes(model.read_bytes())
    for path in (twin, stand_in):
        path.chmod(0o444)
    try:
        rows = datasets.inspect_dataset(twin, min_rows=1, allow_nan=True).rows
    except InvalidDataset as e:
        raise DevError(f"{dataset}: {e.detail}") from None
    return Assets(
        dataset=twin,
        model=stand_in,
        dataset_rows=dataset_rows or rows,
        notes=(f"local files {dataset} and {model}; costs reckoned on {dataset_rows or rows} rows",),
    )
