"""The `evalgate` command. Secrets (API keys) are read from the environment, never from argv."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
import yaml

from service.approvals import commands as governance_commands
from service.auth.roles import Role
from service.config import get_settings
from service.jobs.states import JobState
from service.policies import commands as policy_commands

if TYPE_CHECKING:
    import docker
    from sqlalchemy.orm import Session, sessionmaker

    from service.client import Api


def _fail(message: str, code: int = 1) -> NoReturn:
    click.secho(message, fg="red", err=True)
    sys.exit(code)


def _docker_or_exit() -> docker.DockerClient:
    from service.sandbox.client import docker_client
    from service.sandbox.errors import DockerUnavailable

    try:
        return docker_client(timeout=900)
    except DockerUnavailable as e:
        _fail(str(e), 2)


@click.group()
def main() -> None:
    """evalgate: sandboxed remote evaluation of private ONNX models."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Run the API (and, without EVALGATE_BROKER_URL, one embedded worker)."""
    import uvicorn

    from service.main import create_app
    from service.observability import logs

    settings = get_settings()
    logs.configure(settings.log_format, settings.log_level, service="api")
    # Our logging as configured above (log_config=None); each request is logged, with its id, by
    # service/observability/http.py, so uvicorn's own access line (which has no id) is off.
    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_config=None, log_level=settings.log_level.lower(), access_log=False)


@main.command()
@click.option("--concurrency", default=1, show_default=True, type=int, help="jobs at once on this worker")
@click.option("--loglevel", default=None, help="default: EVALGATE_LOG_LEVEL (INFO)")
@click.option(
    "--twins",
    is_flag=True,
    help="run twin jobs only (their own queue, EVALGATE_QUEUE + '.twins'); without it, real jobs only",
)
def worker(concurrency: int, loglevel: str | None, twins: bool) -> None:
    """Run a Celery worker that consumes jobs from EVALGATE_BROKER_URL: real jobs, or with --twins
    twin jobs. A deployment runs both kinds; twin workers best on a host without real jobs."""
    settings = get_settings()
    if settings.embedded:
        _fail("EVALGATE_BROKER_URL is not set: without a broker the API runs jobs itself (evalgate serve).", 2)
    from service.worker import celery_app

    celery_app.worker_main(
        [
            *(["--quiet"] if settings.log_format == "json" else []),  # no banner: every line is JSON
            "worker",
            f"--queues={settings.twin_queue if twins else settings.queue}",
            f"--concurrency={concurrency}",
            # Threads, not forked children: one process holds its jobs' leases and runs the
            # recovery loop, and kill -9 of it ends all of them at once (jobs.leases).
            "--pool=threads",
            f"--loglevel={loglevel or settings.log_level}",
            "--without-gossip",
            "--without-mingle",
            "-n",
            f"evalgate-{os.getpid()}@%h",
        ]
    )


@main.group()
def images() -> None:
    """Sandbox images."""


@images.command("build")
@click.option("--force", is_flag=True, help="rebuild even if up to date")
def images_build(force: bool) -> None:
    """Build the job and sidecar images if missing or stale (air-gap friendly)."""
    from service.sandbox import images as img
    from service.sandbox.errors import SandboxError

    settings = get_settings()
    client = _docker_or_exit()
    specs = [img.ImageSpec("job", settings.job_image), img.ImageSpec("sidecar", settings.sidecar_image)]
    try:
        ids = img.build_all(
            client, specs, settings.data_dir / "wheelhouse", lambda m: click.echo(f"  {m}"), force=force
        )
    except SandboxError as e:
        _fail(str(e))
    for kind, image_id in ids.items():
        click.echo(f"{kind:8s} {image_id}")


@images.command("lock")
def images_lock() -> None:
    """Regenerate the hash-locked requirement files from the *.in pins (needs PyPI)."""
    from service.sandbox import images as img

    img.lock(img.IMAGES_DIR / "pip.in", img.IMAGES_DIR / "pip.lock", click.echo)
    for kind in ("job", "sidecar"):
        img.lock(img.IMAGES_DIR / kind / "requirements.in", img.IMAGES_DIR / kind / "requirements.lock", click.echo)


@main.group()
def sandbox() -> None:
    """Sandbox runtime set-up."""


@sandbox.command("setup")
def sandbox_setup() -> None:
    """Register gVisor (runsc) with the Docker engine: two runtimes, job and sidecar (needs root)."""
    from service.sandbox.errors import SandboxError
    from service.sandbox.runtimes import setup_runsc

    client = _docker_or_exit()
    try:
        setup_runsc(client, log=click.echo)
    except (SandboxError, PermissionError) as e:
        _fail(str(e))


def _sessions() -> sessionmaker[Session]:
    from service.db import make_engine, migrate
    from service.schema import make_sessionmaker

    settings = get_settings()
    assert settings.database_url is not None  # Settings derives it when unset
    migrate(settings.database_url)
    return make_sessionmaker(make_engine(settings.database_url))


main.add_command(policy_commands.quotas)
main.add_command(policy_commands.policy)
main.add_command(policy_commands.usage)
main.add_command(governance_commands.approvals)
main.add_command(governance_commands.partners)
main.add_command(governance_commands.models)
main.add_command(governance_commands.datasets)


@main.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--role", required=True, type=click.Choice([r.value for r in Role]))
@click.option("--name", required=True)
@click.option("--expires", default="30d", show_default=True, help="e.g. 12h, 30d, 2w")
def keys_create(role: str, name: str, expires: str) -> None:
    """Create a key. It is printed once, on stdout, and never stored."""
    from service.auth import service as auth
    from service.db import session_scope
    from service.errors import EvalgateError

    try:
        with session_scope(_sessions()) as s:
            key, plaintext = auth.create_key(s, name=name, role=role, expires_in=auth.parse_duration(expires))
            expires_at = key.expires_at
    except EvalgateError as e:
        _fail(f"{e.code}: {e.detail}")
    click.echo(f"created {role} key for {name}, expires {expires_at.isoformat()} (shown once):", err=True)
    click.echo(plaintext)


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by its id (the part after eg_)."""
    from service.auth import service as auth
    from service.db import session_scope
    from service.errors import EvalgateError

    try:
        with session_scope(_sessions()) as s:
            auth.revoke_key(s, key_id)
    except EvalgateError as e:
        _fail(f"{e.code}: {e.detail}")
    click.echo(f"revoked {key_id}")


@keys.command("list")
@click.option("--name", default=None, help="one principal's keys")
def keys_list(name: str | None) -> None:
    """Every key: id, principal, role, created, expires, revoked (never a secret)."""
    from service.auth import repository as auth_repo
    from service.db import utcnow

    now = utcnow()
    with _sessions()() as s:
        for k in auth_repo.keys(s, name):
            state = "revoked" if k.revoked_at else "expired" if k.expires_at <= now else "active"
            click.echo(
                f"{k.key_id}  {k.principal.name:20s} {k.principal.role:10s} {state:8s} "
                f"created {k.created_at:%Y-%m-%d %H:%M} expires {k.expires_at:%Y-%m-%d %H:%M}"
            )


@keys.command("rotate")
@click.argument("key_id")
@click.option("--expires", default="30d", show_default=True, help="the new key's lifetime, e.g. 12h, 30d, 2w")
@click.option("--grace", default=None, help="how long the old key keeps working, e.g. 12h (default: not at all)")
def keys_rotate(key_id: str, expires: str, grace: str | None) -> None:
    """A new key for the same principal and role; the old one is revoked (or expires after --grace)."""
    from datetime import timedelta

    from service.auth import service as auth
    from service.db import session_scope
    from service.errors import EvalgateError

    try:
        with session_scope(_sessions()) as s:
            key, plaintext = auth.rotate_key(
                s,
                key_id,
                expires_in=auth.parse_duration(expires),
                grace=auth.parse_duration(grace) if grace else timedelta(0),
            )
            new_id = key.key_id
    except EvalgateError as e:
        _fail(f"{e.code}: {e.detail}")
    click.echo(f"rotated {key_id} -> {new_id} (shown once):", err=True)
    click.echo(plaintext)


def _api() -> Api:
    from service.client import Api

    key = os.environ.get("EVALGATE_API_KEY")
    if not key:
        _fail("set EVALGATE_API_KEY to your key (keys are never taken as arguments)", 2)
    return Api(os.environ.get("EVALGATE_URL", "http://127.0.0.1:8000"), key)


def _print_job(job: dict[str, Any]) -> None:
    from service.client import describe_noise

    if job["state"] == JobState.RELEASED:
        click.secho(
            "released metrics" + (" (the same release as before)" if job.get("reused") else "") + ":", fg="green"
        )
        disclosure = job["result"].get("disclosure", {})
        for k, v in job["result"]["metrics"].items():
            noise = disclosure.get("noise", {}).get(k)
            how = f"  ({describe_noise(noise)})" if noise else ""
            click.echo(f"  {k:24s} {v}{how}")
        for withheld in disclosure.get("suppressed", []):
            click.echo(f"  {withheld['metric']:24s} withheld: {withheld['reason']}")
        if "bits" in disclosure:
            click.echo(f"  ({disclosure['bits']} bits charged)")
    elif job.get("twin"):
        _print_twin(job)
    else:
        click.secho(f"{job['state']}: {job.get('error_class') or ''}", fg="yellow")


def _print_twin(job: dict[str, Any]) -> None:
    """A twin job: everything a real job hides (its output, the gate's reason), then the verdict."""
    run, rule = job["twin"], "-" * 72
    for stream in ("stdout", "stderr"):
        click.echo(f"{rule}\nthe job's {stream} (on the twin; a real job never shows it):")
        click.echo(run[stream].rstrip() or "(none)")
    click.echo(f"{rule}\nexit code {run['exit_code']}; the sidecar's usage: {json.dumps(run['usage'], sort_keys=True)}")
    verdict = run.get("verdict") or {}
    if verdict.get("outcome") == "released":
        click.secho("the gate would release (values from the twin, not the real data):", fg="green")
        for k, v in sorted(verdict["metrics"].items()):
            click.echo(f"  {k:24s} {v}")
        for withheld in verdict.get("disclosure", {}).get("suppressed", []):
            click.echo(f"  {withheld['metric']:24s} withheld: {withheld['reason']}")
    else:
        click.secho(f"the real job would end {job['error_class']}: {verdict.get('reason') or ''}", fg="yellow")
    cost = verdict.get("would_cost")
    if cost:
        click.echo(
            f"the real job would cost epsilon {cost['epsilon_total']:g} and carry at most {cost['leakage_bits']:g} bits"
        )


@main.group()
def suites() -> None:
    """Evaluation suites."""


@suites.command("upload")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
def suites_upload(path: Path) -> None:
    """Upload a suite: a directory with suite.yaml at its top (packed for you), or a .tar.gz/.zip."""
    from service.client import ApiError
    from service.errors import EvalgateError
    from service.registry.bundles import pack_directory

    api = _api()
    try:
        suite = api.upload_suite(pack_directory(path) if path.is_dir() else path.read_bytes())
    except ApiError as e:
        _fail(str(e))
    except EvalgateError as e:
        _fail(f"{e.code}: {e.detail}")
    state = "approved" if suite["approved"] else "waiting for operator approval"
    click.echo(f"suite {suite['ref']} sha256:{suite['sha256']} ({state})")


@suites.command("publish")
@click.argument("ref")
@click.option("--withdraw", is_flag=True, help="unpublish: other partners' new jobs may no longer use it")
def suites_publish(ref: str, withdraw: bool) -> None:
    """Let every partner use one of your suite versions, given as owner/name@version."""
    from service.client import ApiError

    try:
        suite = _api().publish_suite(ref, published=not withdraw)
    except (ApiError, ValueError) as e:
        _fail(str(e))
    click.echo(f"suite {suite['ref']} {'published' if suite['published'] else 'not published'}")


@main.command()
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--no-wait", is_flag=True)
@click.option("--json", "as_json", is_flag=True, help="print the final job as JSON")
@click.option("--dry-run", is_flag=True, help="only say what it would cost and whether it would be admitted now")
@click.option(
    "--target",
    type=click.Choice(["real", "twin"]),
    default=None,
    help="twin: run on the dataset's synthetic twin beside the model's stand-in; no privacy cost, and you see "
    "the job's stdout, stderr and the release gate's verdict (default: the spec's `target`, else real)",
)
def submit(spec_file: Path, no_wait: bool, as_json: bool, dry_run: bool, target: str | None) -> None:
    """Submit a job spec (YAML) and wait for its released metrics. Exit codes: 0 released (on the twin:
    the gate would release it), 1 not released or refused; with --dry-run: 0 would be admitted now, 1
    would be refused now (the refusal and what to do instead are printed), 2 the request itself is bad
    (unknown names, metrics, policy)."""
    from service.client import ApiError

    api = _api()
    try:
        spec = yaml.safe_load(spec_file.read_text())
        if target is not None and isinstance(spec, dict):
            spec["target"] = target
        if dry_run:
            preview = api.preview(spec)
            click.echo(json.dumps(preview, indent=2)) if as_json else _print_preview(preview)
            sys.exit(0 if preview["admitted"] else 1)
        job = api.submit(spec)
        click.echo(f"job {job['id']} {job['state']}")
        if no_wait:
            return
        t0 = time.monotonic()
        job = api.wait(job["id"], on_change=lambda j: click.echo(f"  [{time.monotonic() - t0:6.1f}s] {j['state']}"))
    except ApiError as e:
        _fail(str(e), 2 if dry_run else 1)
    except yaml.YAMLError as e:
        _fail(f"{spec_file} is not valid YAML: {e}")
    click.echo(json.dumps(job, indent=2)) if as_json else _print_job(job)
    sys.exit(0 if job["state"] in (JobState.RELEASED, JobState.JUDGED) else 1)


def _print_preview(p: dict[str, Any]) -> None:
    cost = p["cost"]
    if p.get("reuses"):
        click.echo(f"would return your earlier job {p['reuses']} of the same release: nothing spent")
        return
    if p.get("twin_jobs_left") is not None:  # a twin job spends nothing but one of the day's twin jobs
        if p["admitted"]:
            click.echo(
                f"would run on the twin now, spending nothing; twin jobs left today after it: {p['twin_jobs_left']}"
            )
        else:
            r = p["refusal"]
            click.echo(f"would be refused now: {r['error']}: {r['detail']}")
            for a in r["alternatives"]:
                click.echo(f"  instead: {a}")
        return
    click.echo("would spend:")
    click.echo(
        f"  epsilon {cost['epsilon_total']:g} ({cost['epsilon_per_metric']:g} for each of "
        f"{', '.join(cost['noised_metrics']) or 'no noised metric'})"
    )
    click.echo(f"  leakage bits {cost['leakage_bits']:g} (charged today)")
    click.echo(f"  model rows {cost['model_rows']} asked, {cost['model_rows_granted']} granted")
    if p["admitted"]:
        left = p["left"]
        click.echo(f"would be admitted now, as {p['state']}; left after it:")
        click.echo(f"  epsilon on the dataset {left['epsilon']:g}, leakage bits today {left['leakage_bits_today']:g}")
        click.echo(
            f"  model rows today {left['model_rows_today']}, releases in the window {left['releases_in_window']}, "
            f"jobs in progress {left['jobs_in_progress']} of {left['jobs_in_progress_limit']}"
        )
    else:
        r = p["refusal"]
        click.echo(f"would be refused now: {r['error']}: {r['detail']}")
        for a in r["alternatives"]:
            click.echo(f"  instead: {a}")


@main.command()
@click.argument("job_id")
def status(job_id: str) -> None:
    """Show one job."""
    from service.client import ApiError

    try:
        job = _api().job(job_id)
    except ApiError as e:
        _fail(str(e))
    click.echo(json.dumps(job, indent=2))


@main.group()
def audit() -> None:
    """The audit log."""


@audit.command("verify")
def audit_verify() -> None:
    """Recompute the hash chain; exit 1 if any event was edited, inserted or deleted."""
    from service.db import session_scope
    from service.ledger import service as ledger

    with session_scope(_sessions()) as s:
        v = ledger.verify(s)
    if v.ok:
        click.secho(f"audit log intact: {v.size} events, head {v.head_hash}", fg="green")
    else:
        _fail(f"audit log BROKEN at event {v.first_bad_seq}: {v.problem}")


@main.command("errors")
def errors_table() -> None:
    """Print the table of every stable error code (docs/errors.md is this output)."""
    from service.errors import catalogue_markdown

    click.echo(catalogue_markdown(), nl=False)


# `evalgate verify`'s exit codes (README, "Verifying a result").
VERIFIED, VERIFY_FAILED, VERIFY_USAGE, VERIFY_INCOMPLETE = 0, 1, 2, 3


@main.command("verify")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", "key", help="the service's public key: a note verifier key, base64, or a file holding one")
@click.option(
    "--since",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="a checkpoint saved earlier: check that the log still extends it",
)
def verify(bundle: Path, key: str | None, since: Path | None) -> None:
    """Verify a result offline: signature, statement, checkpoint, inclusion and (--since) consistency.

    Exit 0: verified; 1: a check failed (the message names it); 2: unusable arguments or files;
    3: what could be checked holds, but not everything was (no --key, or a bundle without a log proof).
    """
    from service.transparency import note
    from service.transparency.verify import VerificationFailed, parse_key, verify_bundle

    try:
        data = json.loads(bundle.read_text())
        key_text = key
        if key is not None and Path(key).is_file():
            key_text = Path(key).read_text()
        public_key = parse_key(key_text) if key_text is not None else None
        saved = since.read_text() if since is not None else None
    except note.NoteError as e:
        _fail(f"--key: {e}", VERIFY_USAGE)
    except (OSError, UnicodeError, ValueError) as e:  # JSON's errors are ValueErrors
        _fail(f"cannot read the input: {e}", VERIFY_USAGE)
    try:
        report = verify_bundle(data, public_key, saved)
    except VerificationFailed as e:
        _fail(f"FAILED {e.check}: {e.reason}", VERIFY_FAILED)
    where = f" (entry {report.leaf_index} of {report.tree_size})" if report.tree_size is not None else ""
    click.echo(f"job {report.job_id}{where}: verified {', '.join(report.checked)}")
    if not report.key_trusted:
        click.secho("not trusted: no --key given, checked against the bundle's own key", fg="yellow", err=True)
    if report.not_checked:
        missing = ", ".join(report.not_checked)
        click.secho(f"not checked: {missing} (the bundle has no log proof)", fg="yellow", err=True)
    if not report.complete:
        sys.exit(VERIFY_INCOMPLETE)
    click.secho("OK", fg="green")


@main.group()
def db() -> None:
    """Database."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply migrations."""
    _sessions()
    click.echo("schema at head")


@main.command()
def demo() -> None:
    """Run a whole evaluation on this machine: demo model + data, a partner job, released metrics."""
    from service.demo import run_demo

    _docker_or_exit()
    sys.exit(run_demo(get_settings()))


@main.group()
def dev() -> None:
    """Develop a suite on this machine against a synthetic twin (no privacy cost)."""


@dev.command("init")
@click.argument("name")
def dev_init(name: str) -> None:
    """Write NAME/ with suite.yaml, main.py and README.md: a suite that passes `dev run` as it is."""
    from service.dev.skeleton import write_skeleton

    try:
        root = write_skeleton(name, Path.cwd())
    except (ValueError, FileExistsError) as e:
        _fail(str(e), 2)
    click.echo(f"wrote {root}/suite.yaml, main.py, README.md; next: evalgate dev run {name} --model M@V --dataset D@V")


@dev.command("run")
@click.argument("suite_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "model_ref", help="the model version (name@version) whose stand-in to run beside")
@click.option("--dataset", "dataset_ref", help="the dataset version (name@version) whose twin to run on")
@click.option("--metrics", default="", help="comma-separated; default: every declared one (rows mode: accuracy)")
@click.option(
    "--epsilon", type=float, default=None, help="ε per noised metric (default EVALGATE_DP_EPSILON_PER_METRIC)"
)
@click.option("--output", default=None, help="rows mode: the model output to read (default: as a job would)")
@click.option("--server", default=None, help="the evalgate API (default EVALGATE_URL)")
@click.option(
    "--key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="default: EVALGATE_API_KEY"
)
@click.option(
    "--twin-dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="a local twin (.npz)"
)
@click.option(
    "--stand-in", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="a local stand-in (.onnx)"
)
def dev_run(
    suite_dir: Path,
    model_ref: str | None,
    dataset_ref: str | None,
    metrics: str,
    epsilon: float | None,
    output: str | None,
    server: str | None,
    key_file: Path | None,
    twin_dataset: Path | None,
    stand_in: Path | None,
) -> None:
    """Run a suite on a dataset's twin beside a model's stand-in, in the job image and sandbox of a
    real job; show its output, the sidecar's usage and what the release gate would do, with its cost.
    Exit: 0 would be released, 1 would be rejected by the gate, 2 nothing ran (setup), 3 the job failed."""
    import tempfile

    from service.dev import assets as dev_assets
    from service.dev.report import lines
    from service.dev.run import DevError, DevExit, run_suite
    from service.errors import EvalgateError
    from service.sandbox.errors import SandboxError
    from service.sandbox.runner import Sandbox
    from service.sandbox.runtimes import resolve

    settings = get_settings()
    with tempfile.TemporaryDirectory(prefix="evalgate-dev-assets-") as tmp:
        dest = Path(tmp)
        dest.chmod(0o755)  # the sandbox's users read the twin and the stand-in from here
        try:
            if twin_dataset is not None and stand_in is not None:
                got = dev_assets.from_files(twin_dataset, stand_in, dest)
            elif model_ref and dataset_ref and twin_dataset is None and stand_in is None:
                from service.client import Api

                key = key_file.read_text().strip() if key_file else os.environ.get("EVALGATE_API_KEY")
                if not key:
                    _fail("give --key-file or set EVALGATE_API_KEY (keys are never taken as arguments)", DevExit.SETUP)
                url = server or os.environ.get("EVALGATE_URL", "http://127.0.0.1:8000")
                got = dev_assets.from_server(Api(url, key), model_ref, dataset_ref, dest)
            else:
                _fail("give --model and --dataset (from the server), or --twin-dataset and --stand-in", DevExit.SETUP)
            client = _docker_or_exit()
            sandbox = Sandbox(client, deployment=f"{settings.queue}-dev", state_dir=settings.data_dir / "sandbox")
            result = run_suite(
                settings,
                sandbox,
                resolve(client, settings.docker_runtime),
                suite_dir,
                got,
                requested=[m for m in metrics.split(",") if m],
                epsilon=epsilon,
                output=output,
            )
        except DevError as e:
            _fail(str(e), DevExit.SETUP)
        except EvalgateError as e:
            _fail(f"{e.code}: {e.detail}" + "".join(f"\n  - {a}" for a in e.alternatives), DevExit.SETUP)
        except SandboxError as e:
            _fail(str(e), DevExit.SETUP)
    for line in lines(result, got):
        click.echo(line)
    sys.exit(result.exit)


if __name__ == "__main__":
    main()
