"""Build the job and sidecar images locally, with no registry and no network during the build.

1. Base image: pulled if a registry answers, else bootstrapped from Debian packages (debootstrap).
2. Wheelhouse: every Python package the images need, downloaded on the host by `pip download`
   against hash-locked requirement files. An air-gapped operator copies this directory over.
3. Images: built with network_mode=none from a context holding the Dockerfile, the wheels and the
   service's own code; labelled with the context's digest, so a stale image is rebuilt.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import APIError, BuildError, ImageNotFound

from service.sandbox.errors import SandboxError

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = REPO_ROOT / "sandbox_images"
INFERENCE_DIR = REPO_ROOT / "service" / "inference"
BASE_TAG = "evalgate-base:bookworm"
PULL_REF = "python:3.11-slim"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
CONTEXT_LABEL = "org.evalgate.context-sha256"
PYTHON_TAG = "3.11"
PLATFORMS = {
    "x86_64": ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "aarch64": ["manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"],
}

Log = Callable[[str], None]


@dataclass(frozen=True)
class ImageSpec:
    kind: str  # "job" or "sidecar"
    tag: str

    def files(self) -> dict[str, Path]:
        """Context path -> source file, wheels excluded (the lock file pins them by hash)."""
        src = IMAGES_DIR / self.kind
        files = {"Dockerfile": src / "Dockerfile", "requirements.lock": src / "requirements.lock"}
        # The channel (contract, protocol, client) is one package in both images, from one source.
        channel = ["__init__.py", "contract.py", "protocol.py", "client.py", "rows.py"]
        if self.kind == "job":
            for p in sorted((src / "sdk").rglob("*.py")):
                files[f"sdk/{p.relative_to(src / 'sdk').as_posix()}"] = p
        else:
            channel += ["server.py", "model.py"]
        for name in channel:
            files[f"evalgate_inference/{name}"] = INFERENCE_DIR / name
        return files


def context_digest(spec: ImageSpec, base_id: str) -> str:
    h = hashlib.sha256(base_id.encode() + b"\n")
    for rel, path in sorted(spec.files().items()):
        h.update(f"{rel}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def machine() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def _pip_download(lock: Path, dest: Path, log: Log) -> None:
    if machine() not in PLATFORMS:
        raise SandboxError(f"no wheel platform known for {machine()}")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--require-hashes",
        "--only-binary=:all:",
        "--python-version",
        PYTHON_TAG,
        "--implementation",
        "cp",
        "--dest",
        str(dest),
        "-r",
        str(lock),
    ]
    for plat in PLATFORMS[machine()]:
        cmd += ["--platform", plat]
    log(f"wheelhouse: pip download -r {lock.relative_to(REPO_ROOT)}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SandboxError(f"pip download failed for {lock.name}:\n{proc.stderr[-2000:]}")


def wheelhouse(dest: Path, log: Log) -> Path:
    """Download (or reuse) every locked wheel into dest. pip checks each file against its hash."""
    dest.mkdir(parents=True, exist_ok=True)
    for lock in [
        IMAGES_DIR / "pip.lock",
        IMAGES_DIR / "job" / "requirements.lock",
        IMAGES_DIR / "sidecar" / "requirements.lock",
    ]:
        _pip_download(lock, dest, log)
    return dest


def _locked_files(lock: Path, wheels: Path) -> list[Path]:
    names = []
    for line in lock.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "--")):
            names.append(line.split("==")[0].split()[0].lower().replace("-", "_"))
    found = []
    for name in names:
        matches = [p for p in wheels.glob("*.whl") if p.name.lower().split("-")[0] == name]
        if not matches:
            raise SandboxError(f"wheel for {name} missing from {wheels}")
        found.extend(matches)
    return found


def ensure_base(client: docker.DockerClient, log: Log) -> str:
    try:
        base_id: str = client.images.get(BASE_TAG).id
        return base_id
    except ImageNotFound:
        pass
    try:
        log(f"base image: trying to pull {PULL_REF}")
        image = client.images.pull(PULL_REF)
        image.tag(BASE_TAG)
        pulled_id: str = image.id
        return pulled_id
    except APIError as e:
        log(f"base image: pull failed ({e.explanation or e}); bootstrapping Debian bookworm with debootstrap")
    return bootstrap_base(client, log)


def bootstrap_base(client: docker.DockerClient, log: Log) -> str:
    if shutil.which("debootstrap") is None:
        raise SandboxError("no registry reachable and debootstrap is missing: apt-get install debootstrap")
    with tempfile.TemporaryDirectory(prefix="evalgate-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3", "bookworm", str(root), DEBIAN_MIRROR],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise SandboxError(f"debootstrap failed (it needs root):\n{proc.stderr[-2000:]}")
        # Nothing in the sandbox needs apt or its caches.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(root / junk, ignore_errors=True)
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(tarball), "."], check=True)
        repo, tag = BASE_TAG.split(":")
        client.api.import_image_from_file(str(tarball), repository=repo, tag=tag)
    base_id: str = client.images.get(BASE_TAG).id
    return base_id


def image_is_current(client: docker.DockerClient, spec: ImageSpec, digest: str) -> bool:
    try:
        current: bool = client.images.get(spec.tag).labels.get(CONTEXT_LABEL) == digest
        return current
    except ImageNotFound:
        return False


def build_image(client: docker.DockerClient, spec: ImageSpec, base_id: str, wheels: Path, digest: str, log: Log) -> str:
    with tempfile.TemporaryDirectory(prefix=f"evalgate-{spec.kind}-ctx-") as tmp:
        ctx = Path(tmp)
        for rel, src in spec.files().items():
            (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, ctx / rel)
        (ctx / "wheels").mkdir()
        for whl in _locked_files(ctx / "requirements.lock", wheels):
            shutil.copy2(whl, ctx / "wheels" / whl.name)
        shutil.copy2(_locked_files(IMAGES_DIR / "pip.lock", wheels)[0], ctx / "pip.zip")
        log(f"building {spec.tag} (network disabled)")
        try:
            image, _ = client.images.build(
                path=str(ctx),
                tag=spec.tag,
                buildargs={"BASE": base_id},
                rm=True,
                forcerm=True,
                pull=False,
                network_mode="none",
                labels={CONTEXT_LABEL: digest},
            )
        except BuildError as e:
            tail = "".join(str(c.get("stream", c.get("error", ""))) for c in list(e.build_log)[-20:])
            raise SandboxError(f"building {spec.tag} failed: {e.msg}\n{tail}") from None
    image_id: str = image.id
    return image_id


def build_all(
    client: docker.DockerClient, specs: list[ImageSpec], wheel_dir: Path, log: Log, force: bool = False
) -> dict[str, str]:
    """Build whatever is missing or stale. Returns kind -> image id."""
    base_id = ensure_base(client, log)
    ids: dict[str, str] = {}
    wheels: Path | None = None
    for spec in specs:
        digest = context_digest(spec, base_id)
        if not force and image_is_current(client, spec, digest):
            log(f"{spec.tag} is up to date")
        else:
            wheels = wheels or wheelhouse(wheel_dir, log)
            build_image(client, spec, base_id, wheels, digest, log)
        ids[spec.kind] = client.images.get(spec.tag).id
    return ids


def lock(requirements_in: Path, out: Path, log: Log) -> None:
    """Write a hash-locked requirements file covering x86_64 and aarch64 wheels (developer tool)."""
    lines = [f"# Generated by `evalgate images lock` from {requirements_in.name}. Do not edit.\n"]
    pins = [
        line.strip() for line in requirements_in.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    for pin in pins:
        hashes: set[str] = set()
        for arch, plats in PLATFORMS.items():
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--python-version",
                    PYTHON_TAG,
                    "--implementation",
                    "cp",
                    "--dest",
                    tmp,
                    pin,
                ]
                for plat in plats:
                    cmd += ["--platform", plat]
                subprocess.run(cmd, check=True, capture_output=True)
                for whl in Path(tmp).glob("*.whl"):
                    hashes.add(hashlib.sha256(whl.read_bytes()).hexdigest())
                    log(f"{pin} [{arch}]: {whl.name}")
        lines.append(pin + "".join(f" \\\n    --hash=sha256:{h}" for h in sorted(hashes)) + "\n")
    out.write_text("".join(lines))
