"""`evalgate demo`: the whole path on one machine, through the real HTTP API and real containers."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Self

import click

from service.auth.roles import Role
from service.config import Settings
from service.jobs.states import JobState

if TYPE_CHECKING:
    from service.client import Api
    from service.jobs.dispatch import Dispatcher


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalServer:
    """uvicorn in a thread on a free loopback port (embedded worker: no Redis needed)."""

    def __init__(self, settings: Settings, dispatcher: Dispatcher | None = None):
        """`dispatcher` replaces the one from settings (tests record jobs instead of running them)."""
        import uvicorn

        from service.main import create_app

        self.port = _free_port()
        app = create_app(settings, dispatcher=dispatcher)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _reproduce(op: Api, job_id: str, say: Callable[[str], None], timeout_s: float = 600) -> dict[str, object]:
    """The operator reproduces the released job (a second sandbox run, compared by HMAC); its outcome."""
    for _ in range(10):  # a busy moment (429, 503) says when to ask again
        asked = op.http.post(f"/v1/jobs/{job_id}/reproduce")
        if asked.status_code not in (429, 503):
            break
        time.sleep(min(5.0, float(asked.headers.get("Retry-After", "1"))))
    if asked.status_code != 202:
        say(f"   reproduction refused: {asked.text}")
        return {}
    say(f"   the operator asked for a reproduction ({asked.json()['id']})")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = op.http.get(f"/v1/jobs/{job_id}/reproductions").json()["reproductions"]
        mine = next(r for r in found if r["id"] == asked.json()["id"])
        if mine["outcome"] is not None:
            log = mine.get("log") or {}
            return {"outcome": mine["outcome"], "reason": mine["reason"], "log_index": log.get("leaf_index")}
        time.sleep(0.25)
    return {"outcome": None}


def _twin_run(settings: Settings, partner: Api, say: Callable[[str], None]) -> None:
    """The partner's first step: a new suite (`evalgate dev init`) run on the dataset's synthetic twin
    beside the model's stand-in (`evalgate dev run`), which shows what a real job hides."""
    from service.dev import assets as dev_assets
    from service.dev.report import lines
    from service.dev.run import run_suite
    from service.dev.skeleton import write_skeleton
    from service.sandbox.client import docker_client
    from service.sandbox.runner import Sandbox
    from service.sandbox.runtimes import resolve

    root = settings.data_dir / "demo" / "dev"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    root.chmod(0o755)
    suite = write_skeleton("my-first-suite", root)
    got = dev_assets.from_server(partner, "demo-classifier@1", "demo-blobs@1", root)
    client = docker_client()
    sandbox = Sandbox(client, deployment=f"{settings.queue}-dev", state_dir=settings.data_dir / "sandbox")
    result = run_suite(settings, sandbox, resolve(client, settings.docker_runtime), suite, got, requested=[])
    say("   the partner tries a new suite on the synthetic twin first (evalgate dev init, evalgate dev run):")
    for line in lines(result, got)[-4:]:
        say(f"     {line}")


def run_demo(settings: Settings) -> int:
    from service.auth import service as auth
    from service.client import Api, describe_noise
    from service.db import make_engine, migrate, session_scope
    from service.demo_assets import write_demo
    from service.ledger import service as ledger
    from service.registry import service as registry
    from service.sandbox import images as img
    from service.sandbox.client import docker_client
    from service.schema import make_sessionmaker

    t0 = time.monotonic()
    say = click.echo
    # The demo runs its own embedded worker, and pads completion times to 5 s first (30 s by default) so
    # it does not keep you waiting.
    settings = settings.model_copy(
        update={"broker_url": None, "timing_buckets_s": sorted({5.0, *settings.timing_buckets_s})}
    )
    say("1. sandbox images")
    img.build_all(
        docker_client(timeout=900),
        [img.ImageSpec("job", settings.job_image), img.ImageSpec("sidecar", settings.sidecar_image)],
        settings.data_dir / "wheelhouse",
        lambda m: say(f"   {m}"),
    )
    assert settings.database_url is not None  # Settings derives it when unset
    migrate(settings.database_url)
    sessions = make_sessionmaker(make_engine(settings.database_url))
    with session_scope(sessions) as s:
        _, operator_key = auth.create_key(
            s, name="demo-operator", role=Role.OPERATOR, expires_in=auth.parse_duration("1h")
        )
        _, partner_key = auth.create_key(
            s, name="demo-partner", role=Role.PARTNER, expires_in=auth.parse_duration("1h")
        )
    model_path, data_path = write_demo(settings.data_dir / "demo")
    with LocalServer(settings) as server:
        say(f"2. API at {server.url} (embedded worker, database {settings.database_url})")
        op = Api(server.url, operator_key)
        model = op.register_model("demo-classifier", "1", model_path)
        data = op.register_dataset("demo-blobs", "1", data_path)
        say(
            f"3. operator registered model demo-classifier@1 sha256:{model['sha256'][:16]}…, "
            f"dataset demo-blobs@1 ({data['rows']} rows) sha256:{data['sha256'][:16]}…"
        )
        partner = Api(server.url, partner_key)
        _twin_run(settings, partner, say)
        spec = {
            "suite": registry.builtin_ref("classification"),
            "model": "demo-classifier@1",
            "dataset": "demo-blobs@1",
            "metrics": ["accuracy", "macro_f1", "log_loss", "ece", "misclassified"],
            "resources": {"timeout_s": 120},
            "seed": 42,
        }
        preview = partner.preview(spec)
        cost = preview["cost"]
        say(
            f"   dry run first (nothing spent): ε {cost['epsilon_total']}, at most {cost['leakage_bits']} bits, "
            f"{cost['model_rows_granted']} model rows; "
            + ("it would be admitted now" if preview["admitted"] else f"it would be refused: {preview['refusal']}")
        )
        job = partner.submit(spec)
        privacy = job["spec"]["privacy"]
        say(
            f"4. partner submitted job {job['id']}"
            + (" (the same release as before: returned, not re-run)" if job.get("reused") else "")
        )
        say(
            f"   ε {privacy['epsilon_per_metric']} per noised metric × {len(privacy['noised_metrics'])} "
            f"= {privacy['epsilon_total']} ({privacy['mechanism'] or 'no noise'})"
        )
        t_job = time.monotonic()
        job = partner.wait(
            job["id"], timeout_s=600, on_change=lambda j: say(f"   [{time.monotonic() - t_job:5.1f}s] {j['state']}")
        )
        budget = partner.budget()
        reproduction: dict[str, object] = {}
        if job["state"] == JobState.RELEASED:
            # While the server runs: the release's bundle for `evalgate verify` (an operator's, with its
            # log proof), the service's key, and a reproduction of the job asked for by the operator.
            bundle_path = settings.data_dir / "demo" / f"{job['id']}.attestation.json"
            key_path = settings.data_dir / "demo" / "evalgate.pub"
            bundle = op.http.get(f"/v1/jobs/{job['id']}/attestation")
            key = op.http.get("/v1/attestation-key")
            if bundle.status_code == 200 and key.status_code == 200:
                bundle_path.write_text(bundle.text)
                key_path.write_text(key.json()["public_key"] + "\n")
            reproduction = _reproduce(op, job["id"], say)
    if job["state"] != JobState.RELEASED:
        click.secho(
            f"the demo job ended {job['state']} ({job['error_class']}); see operator_log in the jobs table",
            fg="red",
            err=True,
        )
        return 1
    result = job["result"]
    say("5. released metrics (typed, scanned, noised where policy says, rounded):")
    disclosure = result["disclosure"]
    for k, v in result["metrics"].items():
        noise = disclosure["noise"].get(k)
        how = describe_noise(noise) if noise else "rounded only"
        say(f"     {k:14s} {v:<10} {how}")
    for s_ in disclosure["suppressed"]:
        say(f"     {s_['metric']:14s} withheld: {s_['reason']}")
    say(
        f"   this release carries at most {disclosure['bits']} bits; completed within "
        f"{result['provenance']['completed_within_s']:g} s (padded)"
    )
    eps_left = ", ".join(f"{e['dataset']} {e['left']:g} of {e['budget']:g}" for e in budget["epsilon"]) or "none spent"
    say(
        f"   budget left today: {budget['leakage_bits']['left']:g} of {budget['leakage_bits']['limit']:g} bits, "
        f"{int(budget['model_rows']['left'])} of {int(budget['model_rows']['limit'])} model rows; ε left: {eps_left}"
    )
    say("   budget left for the assets' lifetimes (never resets):")
    for entry in budget["lifetime"]:
        say(
            f"     {entry['asset']:28s} {entry['left']:g} of {entry['limit']:g} {entry['resource']}"
            f"  ({entry['derivation']})"
        )
    p = result["provenance"]
    say("6. provenance:")
    say(f"     spec     sha256:{p['spec_sha256']}")
    for part in ("suite", "model", "dataset"):
        # A suite is recorded as owner/name@version (its `ref`): the bare name the job used is not enough.
        ref = p[part].get("ref") or f"{p[part]['name']}@{p[part]['version']}"
        say(f"     {part:8s} {ref} sha256:{p[part]['sha256']}")
    say(f"     job image     {p['images']['job']}")
    say(f"     sidecar image {p['images']['sidecar']}")
    say(f"     seed {p['seed']}; inference {p['inference']}")
    attestation = result["attestation"]
    say(f"     signature     {attestation['signature'][:32]}… (ed25519, key {attestation['key_id']})")
    # The demo's server has stopped by now: `evalgate serve` serves the same page (sign in with a key).
    say(f"     results site  http://127.0.0.1:8000/site/jobs/{job['id']} (under `evalgate serve`)")
    if bundle_path.exists() and key_path.exists():
        say(f"     verify it offline: evalgate verify {bundle_path} --key {key_path}")
    if reproduction:
        ended = str(reproduction.get("outcome") or "not finished in time")
        why = f" ({reproduction['reason']})" if reproduction.get("reason") else ""
        say(f"     reproduced by the operator: {ended}{why}; transparency-log entry {reproduction.get('log_index')}")
    with session_scope(sessions) as s:
        v = ledger.verify(s)
    say(f"7. audit log: {'intact' if v.ok else 'BROKEN: ' + str(v.problem)}, {v.size} events, head {v.head_hash[:16]}…")
    say(f"demo finished in {time.monotonic() - t0:.1f}s")
    return 0 if v.ok else 1
