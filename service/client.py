"""A small HTTP client for the evalgate API, used by the CLI (`submit`, `status`, `demo`)."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from service.jobs.states import TERMINAL


class ApiError(Exception):
    def __init__(self, status: int, body: object):
        self.status, self.body = status, body
        detail = body.get("detail") if isinstance(body, dict) else body
        super().__init__(f"{status} {body.get('error', '') if isinstance(body, dict) else ''}: {detail}")


class Api:
    def __init__(self, base_url: str, key: str, timeout: float = 60.0):
        # The key travels only in a header; it never appears in a URL, argv or a log line.
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)

    def _json(self, resp: httpx.Response) -> dict[str, Any]:
        try:
            body: dict[str, Any] = resp.json()
        except ValueError:
            body = {"error": "http_error", "detail": resp.text[:200]}
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, body)
        return body

    def register_model(self, name: str, version: str, path: Path) -> dict[str, Any]:
        with path.open("rb") as f:
            return self._json(self.http.post("/v1/models", data={"name": name, "version": version}, files={"file": f}))

    def register_dataset(self, name: str, version: str, path: Path, visibility: str = "private") -> dict[str, Any]:
        with path.open("rb") as f:
            return self._json(
                self.http.post(
                    "/v1/datasets", data={"name": name, "version": version, "visibility": visibility}, files={"file": f}
                )
            )

    def upload_suite(self, bundle: bytes) -> dict[str, Any]:
        """A .tar.gz or .zip bundle; the server tells the format from its content."""
        return self._json(self.http.post("/v1/suites", files={"file": ("suite-bundle", bundle)}))

    def publish_suite(self, ref: str, published: bool = True) -> dict[str, Any]:
        """Publish (or withdraw) one of your suite versions, given as owner/name@version."""
        owner, slash, rest = ref.partition("/")
        name, at, version = rest.partition("@")
        if not (owner and slash and name and at and version):
            raise ValueError(f"give the suite as owner/name@version, got {ref!r}")
        action = "publish" if published else "unpublish"
        return self._json(self.http.post(f"/v1/suites/{owner}/{name}/{version}/{action}"))

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._json(self.http.post("/v1/jobs", json=spec))

    def preview(self, spec: dict[str, Any]) -> dict[str, Any]:
        """A dry run: what the job would spend and leave, and whether it would be admitted now."""
        return self._json(self.http.post("/v1/jobs", params={"dry_run": "true"}, json=spec))

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json(self.http.get(f"/v1/jobs/{job_id}"))

    def budget(self) -> dict[str, Any]:
        """Bits, ε, model rows, releases and jobs in progress: used and left."""
        return self._json(self.http.get("/v1/budget"))

    def datasets(self) -> list[dict[str, Any]]:
        return self._json_list(self.http.get("/v1/datasets"))

    def models(self) -> list[dict[str, Any]]:
        return self._json_list(self.http.get("/v1/models"))

    def _json_list(self, resp: httpx.Response) -> list[dict[str, Any]]:
        if resp.status_code >= 400:
            self._json(resp)
        body: list[dict[str, Any]] = resp.json()
        return body

    def download_twin(self, kind: str, ref: str, dest: Path) -> str:
        """A model's stand-in or a dataset's twin (kind "models" or "datasets", ref name@version) into
        dest; returns its sha256, checked against the digest the server sent."""
        name, _, version = ref.partition("@")
        digest = hashlib.sha256()
        with self.http.stream("GET", f"/v1/{kind}/{name}/{version}/twin") as resp:
            if resp.status_code >= 400:
                resp.read()
                self._json(resp)
            with dest.open("wb") as f:
                for chunk in resp.iter_bytes():
                    digest.update(chunk)
                    f.write(chunk)
            sent = resp.headers.get("repr-digest", "")
        if sent != f"sha-256=:{base64.b64encode(digest.digest()).decode()}:":
            raise ApiError(
                502, {"error": "digest_mismatch", "detail": f"{kind} {ref}: the twin's bytes do not match {sent!r}"}
            )
        return digest.hexdigest()

    def wait(
        self,
        job_id: str,
        timeout_s: float = 3600,
        on_change: Callable[[dict[str, Any]], None] | None = None,
        poll_s: float = 0.25,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        last = None
        while True:
            job = self.job(job_id)
            if job["state"] != last and on_change:
                on_change(job)
            last = job["state"]
            if job["state"] in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout_s:.0f}s")
            time.sleep(poll_s)


def describe_noise(noise: dict[str, Any]) -> str:
    """One released metric's noise, for a person: on the value, or on the counts it is made of."""
    on = " on its counts" if noise.get("on") == "counts" else ""
    return f"{noise['mechanism']} noise{on}, scale {noise['scale']:.4g}, ε {noise['epsilon']}"
