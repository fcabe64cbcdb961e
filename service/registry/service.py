"""Model, dataset and suite versions: registration, lookup, lifecycle, approval."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from service.auth.roles import Role
from service.config import Settings
from service.errors import EvalgateError
from service.inference.contract import parse_output_policy as server_policy
from service.inference.model_info import InvalidModel, OutputKind, describe_model
from service.ledger import service as ledger
from service.registry import bundles, datasets, errors, manifest, storage, suites
from service.registry import repository as repo
from service.registry.models import LIFECYCLE, DatasetVersion, ModelVersion, SuiteVersion
from service.registry.spelling import closest
from service.release import catalogue

VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,31}$")
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "builtin_suites"
UNKNOWN = {"model": errors.UnknownModelVersion, "dataset": errors.UnknownDatasetVersion}
VersionT = TypeVar("VersionT", ModelVersion, DatasetVersion, SuiteVersion)


def _check_name(name: str, version: str) -> None:
    if not re.match(manifest.NAME_RE, name):
        raise errors.InvalidName("name must be 1-64 of a-z 0-9 _ . -")
    if not VERSION_RE.match(version):
        raise errors.InvalidVersion("version must be 1-32 of A-Z a-z 0-9 . _ + -")


def parse_ref(ref: str, kind: str) -> tuple[str, str]:
    name, sep, version = ref.partition("@")
    if not sep or not name or not version:
        raise errors.InvalidReference(f"{kind} must be given as name@version, got {ref!r}")
    return name, version


def _resolve(session: Session, model: type[repo.VersionedT], ref: str, kind: str) -> repo.VersionedT:
    name, version = parse_ref(ref, kind)
    row = repo.by_name_version(session, model, name, version)
    if row is None:
        versions = repo.versions_of(session, model, name)
        if versions:
            raise UNKNOWN[kind](
                f"{kind} {name} has no version {version}", alternatives=[f"{name}@{v}" for v in versions]
            )
        # No such name: the registered names closest to it (every role may list the registry).
        close = closest(name, repo.names_of(session, model))
        raise UNKNOWN[kind](
            f"unknown {kind} {ref}" + (f"; did you mean {' or '.join(close)}?" if close else ""),
            alternatives=[f"{n}@{v}" for n in close for v in repo.versions_of(session, model, n)],
        )
    return row


def resolve_model(session: Session, ref: str) -> ModelVersion:
    return _resolve(session, ModelVersion, ref, "model")


def resolve_dataset(session: Session, ref: str) -> DatasetVersion:
    return _resolve(session, DatasetVersion, ref, "dataset")


def dataset_versions(session: Session) -> list[DatasetVersion]:
    """Every registered dataset version, by name and version."""
    return repo.datasets(session)


def output_policy_from_text(text: str) -> dict[str, Any]:
    """ "full", "labels", "rounded:D" or "top_k:K" as the sidecar's output policy."""
    kind, _, arg = text.strip().partition(":")
    raw: dict[str, Any] = {"kind": kind}
    if arg:
        if not arg.isdigit():
            raise errors.InvalidOutputPolicy(f"output policy {text!r}: the number after ':' must be whole")
        raw["digits" if kind == "rounded" else "k"] = int(arg)
    try:
        return server_policy(raw)
    except ValueError as e:
        raise errors.InvalidOutputPolicy(
            f"output policy {text!r}: {e}", alternatives=["full", "rounded:4", "top_k:1", "labels"]
        ) from None


def _discard_unreferenced(session: Session, path: Path, sha: str) -> None:
    """A refused upload leaves nothing behind, unless a registered version has the same bytes (blobs
    are content-addressed: another version's file is the same file)."""
    if not repo.blob_in_use(session, sha):
        path.unlink(missing_ok=True)


def _discard_tree(session: Session, bundle: bundles.Bundle) -> None:
    """A refused suite upload leaves no tree, unless a registered suite version has the same files
    (trees are content-addressed by their digest)."""
    if repo.suite_with_digest(session, bundle.sha256) is None:
        bundles.remove_tree(bundle.path)


def _taken(kind: str, ref: str) -> errors.VersionTaken:
    return errors.VersionTaken(
        f"{kind} {ref} is already registered with different content",
        alternatives=["register the new content under a new version"],
    )


def _same_or_taken(session: Session, existing: VersionT, sha: str, stored: list[Path], kind: str) -> VersionT:
    """What registering name@version again answers (found before, or inserted by a concurrent
    registration first): the version when the bytes are the same, else 409 `version_taken`, the
    files this upload stored discarded unless a registered version has them too."""
    if existing.sha256 != sha:
        for path in stored:
            _discard_unreferenced(session, path, path.name)
        raise _taken(kind, existing.ref)
    return existing


def register_model(
    session: Session,
    settings: Settings,
    *,
    name: str,
    version: str,
    stream: BinaryIO,
    actor: str,
    output_kind: OutputKind | None = None,
    classes: int | None = None,
    threads: int | None = None,
    output_policy: str = "full",
    lifetime_bits: float | None = None,
    lifetime_rows: int | None = None,
) -> tuple[ModelVersion, bool]:
    """Returns (row, created). The same name@version with the same bytes is accepted again as a no-op.
    `output_kind` and `classes` say how its scores are read where the probe cannot tell (or overrule
    it); `threads` fixes onnxruntime's threads for this version (default EVALGATE_INFERENCE_THREADS);
    `output_policy` what jobs may see of its scores (full, rounded:D, top_k:K, labels); `lifetime_bits`
    and `lifetime_rows` its own lifetime caps per partner (default: derived from its size)."""
    _check_name(name, version)
    policy = output_policy_from_text(output_policy)
    sha, path, size = storage.store_stream(settings.data_dir, stream, settings.model_max_bytes, errors.ModelTooLarge)
    existing = repo.by_name_version(session, ModelVersion, name, version)
    if existing is not None:
        return _same_or_taken(session, existing, sha, [path], "model"), False
    try:
        signature, contract, inference = describe_model(
            path, threads or settings.inference_threads, output_kind=output_kind, classes=classes
        )
    except InvalidModel as e:
        _discard_unreferenced(session, path, sha)
        raise errors.InvalidModel(str(e)) from None
    row = ModelVersion(
        name=name,
        version=version,
        sha256=sha,
        size_bytes=size,
        status="active",
        signature=signature,
        contract=contract.as_dict(),
        inference=inference,
        output_policy=policy,
        lifetime_bits=lifetime_bits,
        lifetime_rows=lifetime_rows,
    )
    winner = repo.insert_unless_taken(session, row, lambda: repo.by_name_version(session, ModelVersion, name, version))
    if winner is not None:  # a concurrent registration of name@version came first: answer as after it
        return _same_or_taken(session, winner, sha, [path], "model"), False
    ledger.append(
        session,
        actor=actor,
        action="model.registered",
        subject=f"model:{row.ref}",
        data={
            "sha256": sha,
            "size_bytes": size,
            "contract": contract.as_dict(),
            "inference": inference,
            "output_policy": policy,
            "lifetime_bits": lifetime_bits,
            "lifetime_rows": lifetime_rows,
        },
    )
    return row, True


class _Overtaken(Exception):
    """A concurrent change of a version's status came first (see `transition`)."""


def transition(session: Session, row: ModelVersion | DatasetVersion, kind: str, status: str, actor: str) -> bool:
    """Move a model or dataset version forward to `status`, on the audit log; False when it is there
    already. The change is a compare-and-set on the status read: one that a concurrent change
    overtook is judged again against what that change left, so racing requests end as they would
    one after the other (retired, then deprecated: 409 `invalid_transition`), never backwards."""
    if status not in LIFECYCLE:
        raise errors.InvalidStatus(f"unknown status {status!r}", alternatives=list(LIFECYCLE))
    for _ in LIFECYCLE:  # every change that overtakes this one moves the version forward: this ends
        if LIFECYCLE.index(status) < LIFECYCLE.index(row.status):
            raise errors.InvalidTransition(f"{kind} {row.ref} is {row.status}; its lifecycle only moves forward")
        if status == row.status:
            return False
        try:
            # The audit event first, then the row, as every other change of a version (no lock-order
            # deadlock on Postgres); an overtaken attempt's event goes with its savepoint.
            with session.begin_nested():
                ledger.append(
                    session,
                    actor=actor,
                    action=f"{kind}.status",
                    subject=f"{kind}:{row.ref}",
                    data={"from": row.status, "to": status},
                )
                if not repo.set_status_if(session, type(row), row.id, row.status, status):
                    raise _Overtaken
        except _Overtaken:
            session.refresh(row)
            continue
        set_committed_value(row, "status", status)
        return True
    raise RuntimeError(f"{kind} {row.ref}: its status kept changing")  # unreachable: LIFECYCLE is finite


def register_dataset(
    session: Session,
    settings: Settings,
    *,
    name: str,
    version: str,
    visibility: str,
    stream: BinaryIO,
    actor: str,
    allow_nan: bool = False,
    lifetime_bits: float | None = None,
) -> tuple[DatasetVersion, bool]:
    """Returns (row, created). Refuses a file that is not a clean dataset (see registry.datasets);
    `allow_nan` accepts NaN features knowingly, with a warning kept for operators."""
    _check_name(name, version)
    if visibility not in ("private", "public"):
        raise errors.InvalidVisibility("visibility must be private or public")
    sha, path, size = storage.store_stream(
        settings.data_dir, stream, settings.dataset_max_bytes, errors.DatasetTooLarge
    )
    existing = repo.by_name_version(session, DatasetVersion, name, version)
    if existing is not None:
        return _same_or_taken(session, existing, sha, [path], "dataset"), False
    try:
        found = datasets.inspect_dataset(path, min_rows=settings.min_dataset_rows, allow_nan=allow_nan)
    except EvalgateError:
        _discard_unreferenced(session, path, sha)
        raise
    features = datasets.store_features(settings.data_dir, path)
    row = DatasetVersion(
        name=name,
        version=version,
        sha256=sha,
        size_bytes=size,
        rows=found.rows,
        features=found.features,
        classes=found.classes,
        visibility=visibility,
        task=found.task,
        features_dtype=found.features_dtype,
        features_sha256=features,
        class_counts=found.class_counts,
        warnings=found.warnings,
        lifetime_bits=lifetime_bits,
    )
    winner = repo.insert_unless_taken(
        session, row, lambda: repo.by_name_version(session, DatasetVersion, name, version)
    )
    if winner is not None:  # a concurrent registration of name@version came first: answer as after it
        stored = [path, storage.blob_path(settings.data_dir, features)]
        return _same_or_taken(session, winner, sha, stored, "dataset"), False
    ledger.append(
        session,
        actor=actor,
        action="dataset.registered",
        subject=f"dataset:{row.ref}",
        data={"sha256": sha, "rows": found.rows, "visibility": visibility, "warnings": found.warnings},
    )
    return row, True


def features_sha256(settings: Settings, dataset: DatasetVersion) -> str:
    """The dataset's features-only blob (made now for a version registered before they were kept)."""
    if dataset.features_sha256 is None:
        dataset.features_sha256 = datasets.store_features(
            settings.data_dir, storage.blob_path(settings.data_dir, dataset.sha256)
        )
    return dataset.features_sha256


def bundle_limits(settings: Settings) -> bundles.BundleLimits:
    """The deployment's bounds on one suite bundle (uploads, built-in suites, `evalgate dev run`)."""
    return bundles.BundleLimits(
        max_files=settings.bundle_max_files,
        max_unpacked_bytes=settings.bundle_max_unpacked_bytes,
        max_metrics=settings.max_metrics,
        max_dirs=settings.bundle_max_dirs,
        max_depth=settings.bundle_max_depth,
        max_path_bytes=settings.bundle_max_path_bytes,
        max_name_bytes=settings.bundle_max_name_bytes,
        max_file_bytes=settings.bundle_max_file_bytes,
        max_ratio=settings.bundle_max_ratio,
    )


def _record_suite(
    session: Session,
    bundle: bundles.Bundle,
    *,
    namespace: str,
    builtin: bool,
    approved: bool,
    owner_id: int | None,
    actor: str,
) -> tuple[SuiteVersion, bool]:
    m = bundle.manifest
    # Only the uploader's own namespace is looked at: a conflict never tells of another's suites.
    existing = repo.suite(session, namespace, m.name, m.version)
    if existing is not None:
        return _same_or_taken(session, existing, bundle.sha256, [], "suite"), False
    row = SuiteVersion(
        namespace=namespace,
        name=m.name,
        version=m.version,
        sha256=bundle.sha256,
        entrypoint=m.entrypoint,
        metrics=m.metric_table(),
        mode=m.mode,
        rows=m.rows_table(),
        builtin=builtin,
        approved=approved,
        owner_id=owner_id,
        published=builtin,
    )
    winner = repo.insert_unless_taken(session, row, lambda: repo.suite(session, namespace, m.name, m.version))
    if winner is not None:  # a concurrent upload of namespace/name@version came first: answer as after it
        return _same_or_taken(session, winner, bundle.sha256, [], "suite"), False
    ledger.append(
        session,
        actor=actor,
        action="suite.registered",
        subject=f"suite:{row.ref}",
        data={
            "sha256": bundle.sha256,
            "builtin": builtin,
            "approved": approved,
            "mode": m.mode,
            "metrics": m.metric_table(),
            "rows": m.rows_table(),
        },
    )
    return row, True


def upload_suite(
    session: Session, settings: Settings, *, stream: BinaryIO, owner_id: int, owner: str, role: Role, actor: str
) -> tuple[SuiteVersion, bool]:
    """Record an upload as `owner/name@version`, `owner` being the uploader's principal name. A refused
    upload (or one that lost a race for its name@version) leaves no tree behind that no version has."""
    data = storage.read_capped(stream, settings.bundle_max_bytes, errors.BundleTooLarge)
    bundle = bundles.extract_bundle(data, settings.data_dir / "suites", bundle_limits(settings))
    try:
        suites.check_upload_name(session, owner_id, owner, bundle.manifest.name)
        _check_leakage_policy(settings, bundle)
        # A metrics-mode suite's code sees the labels: it runs only once an operator has approved it. A
        # rows-mode suite's code never does, so the deployment may let those run unapproved.
        needs_approval = bundle.manifest.mode == "metrics" or settings.custom_suites_require_approval
        approved = role == Role.OPERATOR or not needs_approval
        return _record_suite(
            session, bundle, namespace=owner, builtin=False, approved=approved, owner_id=owner_id, actor=actor
        )
    except (errors.SuiteNameReserved, errors.SuiteExceedsLeakagePolicy, errors.VersionTaken):
        _discard_tree(session, bundle)
        raise


def builtin_ref(name: str) -> str:
    """name@version of the built-in suite shipped as `name` in this release (a bare reference: every
    partner without an upload of that name means the built-in one by it)."""
    m = manifest.load_manifest_file(BUILTIN_DIR / name / manifest.MANIFEST)
    return f"{m.name}@{m.version}"


def _check_leakage_policy(settings: Settings, bundle: bundles.Bundle) -> None:
    """A metrics-mode suite's declarations are bounded by policy before any job runs: each metric, on
    the largest dataset allowed, may carry at most EVALGATE_METRIC_MAX_BITS."""
    too_wide = []
    for name, decl in bundle.manifest.metrics.items():
        b = catalogue.bits(decl, settings.max_dataset_rows, settings.release_decimals, None, extra_outcomes=2)
        if b > settings.metric_max_bits:
            too_wide.append(f"{name} ({decl.kind}): {b:.1f} bits")
    if too_wide:
        raise errors.SuiteExceedsLeakagePolicy(
            f"metrics carry more than {settings.metric_max_bits:g} bits each: {'; '.join(too_wide)}",
            alternatives=["declare narrower ranges (min, max)", "use a proportion or a count"],
        )


def ensure_builtin_suites(session: Session, settings: Settings) -> list[SuiteVersion]:
    """Install and register the suites shipped with the service (trusted by the operator)."""
    rows = []
    for src in sorted(p for p in BUILTIN_DIR.iterdir() if (p / manifest.MANIFEST).is_file()):
        bundle = bundles.install_directory(src, settings.data_dir / "suites", bundle_limits(settings))
        row, _ = _record_suite(
            session,
            bundle,
            namespace=suites.BUILTIN_NAMESPACE,
            builtin=True,
            approved=True,
            owner_id=None,
            actor="system",
        )
        rows.append(row)
    return rows


def awaiting_approval(session: Session) -> list[SuiteVersion]:
    """Custom suites whose code may not run until an operator approves it (operators)."""
    return repo.suites_not_approved(session)


def approve_suite(session: Session, ref: str, actor: str) -> SuiteVersion:
    """Let custom code run (operators); `ref` is owner/name@version."""
    row = suites.resolve_suite(session, ref)
    if not row.approved:
        row.approved = True
        ledger.append(
            session, actor=actor, action="suite.approved", subject=f"suite:{row.ref}", data={"sha256": row.sha256}
        )
    return row


def usable_model(session: Session, ref: str) -> ModelVersion:
    row = resolve_model(session, ref)
    if row.status == "retired":
        newer = repo.active_models_named(session, row.name)
        raise errors.ModelRetired(f"model {ref} is retired", alternatives=[m.ref for m in newer])
    return row


def usable_dataset(session: Session, ref: str) -> DatasetVersion:
    """A dataset version a new job may use: refused once an operator retired it."""
    row = resolve_dataset(session, ref)
    if row.status == "retired":
        newer = [d.ref for d in repo.active_datasets_named(session, row.name)]
        raise errors.DatasetRetired(
            f"dataset {row.ref} is retired and takes no new jobs",
            alternatives=newer or ["choose another dataset version (GET /v1/datasets lists each with its status)"],
        )
    return row
