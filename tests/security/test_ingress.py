"""API ingress against a real server: uvicorn in its own process on 127.0.0.1, spoken to with raw
sockets, so a test sees what a client on the network sees (when an answer comes, whether the server
read the body, how much memory it took) and not what an in-process client lets through.

Every client of a test connects from its own loopback address (127.0.x.y): the limiter on failed
authentication counts per address, and one test's failures must not spend another's."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, File, UploadFile
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.db import make_engine, session_scope
from service.ingress import FORM_MAX_BYTES, AuthFailures, Body, RoutePolicy, route_policies
from service.jobs.models import Job
from service.ledger import service as ledger
from service.ledger.models import AuditEvent, AuditHead
from service.registry.models import SuiteVersion
from service.schema import make_sessionmaker
from tests import factories

REPO = Path(__file__).resolve().parents[1]
MiB = 1 << 20
# Routes anyone may call without a key; any other route must refuse before reading.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/v1/attestation-key"),
    ("GET", "/openapi.json"),
    ("HEAD", "/openapi.json"),
    ("GET", "/docs"),
    ("HEAD", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("HEAD", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("HEAD", "/redoc"),
}
# The results site's pages and forms: signed in by a session cookie, which the site checks before it
# reads a form (tests/site); ingress bounds their bodies (forms: FORM_MAX_BYTES) but asks no key.
SITE = "/site/"
FAILURES_PER_MINUTE = 5
BUNDLE_MAX = 256 << 10

SERVER = """
import os, sys, time

import uvicorn

from service.config import Settings
from service.main import create_app

settings = Settings.model_validate_json(os.environ["INGRESS_TEST_SETTINGS"])
slow_commit_s = float(os.environ["INGRESS_TEST_SLOW_COMMIT_S"])
if slow_commit_s:
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    @event.listens_for(Session, "before_commit")
    def _slow(session):
        time.sleep(slow_commit_s)

uvicorn.run(create_app(settings), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""

_hosts = itertools.count(1)


def fresh_address() -> str:
    n = next(_hosts)
    return f"127.0.{n // 250 + 1}.{n % 250 + 1}"


class Server:
    """`create_app` under uvicorn in a subprocess, with its own data and temporary directories."""

    def __init__(self, tmp: Path, slow_commit_s: float = 0.0, **overrides: Any):
        self.settings = factories.settings(tmp / "data", **overrides)
        self.tmpdir = tmp / "server-tmp"
        self.tmpdir.mkdir(parents=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log_path = tmp / "server.log"
        env = {
            **os.environ,
            "INGRESS_TEST_SETTINGS": self.settings.model_dump_json(),
            "INGRESS_TEST_SLOW_COMMIT_S": str(slow_commit_s),
            "TMPDIR": str(self.tmpdir),  # where the server would spool an upload
        }
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", SERVER, str(self.port)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_ready()
        self.sessions: sessionmaker[Session] = make_sessionmaker(make_engine(str(self.settings.database_url)))

    def _wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready:\n{self.log_path.read_text(errors='replace')[-3000:]}")

    def key(self, name: str, role: str) -> dict[str, str]:
        with session_scope(self.sessions) as s:
            return factories.bearer(factories.key(s, name, role))

    def memory_kib(self) -> dict[str, int]:
        """VmRSS and VmHWM of the server process."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return {k: int(v) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M)}

    def files(self) -> dict[str, int]:
        """Every file the server keeps (but the SQLite database), and every temporary file, by size."""
        found = {}
        for root in (self.settings.data_dir, self.tmpdir):
            for p in root.rglob("*"):
                if p.is_file() and not p.name.startswith("evalgate.db"):
                    found[str(p)] = p.stat().st_size
        return found

    def count(self, model: type) -> int:
        with self.sessions() as s:
            return int(s.execute(select(func.count()).select_from(model)).scalar_one())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(
        tmp_path_factory.mktemp("ingress"), auth_failures_per_minute=FAILURES_PER_MINUTE, bundle_max_bytes=BUNDLE_MAX
    )
    yield s
    s.stop()


# -- a client that sends exactly what the test says --------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


def connect(server: Server, address: str | None = None) -> socket.socket:
    return socket.create_connection(
        ("127.0.0.1", server.port), timeout=10, source_address=(address or fresh_address(), 0)
    )


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_answer(sock: socket.socket, method: str = "POST") -> Answer:
    """Waits at most the socket's timeout: a server waiting for a body it wants to read fails this."""
    response = http.client.HTTPResponse(sock, method=method)
    response.begin()
    raw = response.read()
    headers = {k.lower(): v for k, v in response.getheaders()}
    is_json = headers.get("content-type", "").startswith("application/json")
    return Answer(response.status, headers, json.loads(raw) if raw and is_json else {})


def headers_only(server: Server, method: str, path: str, headers: dict[str, str], address: str | None = None) -> Answer:
    """Sends the request line and headers, never a byte of the body they announce, and reads the answer."""
    with connect(server, address) as sock:
        sock.sendall(request_head(method, path, headers))
        return read_answer(sock, method)


def get(server: Server, path: str, headers: dict[str, str], address: str) -> Answer:
    return headers_only(server, "GET", path, headers, address)


@dataclass
class Streamed:
    answer: Answer
    sent: int  # body bytes the client got into its socket before the server closed the connection


def stream_chunked(
    server: Server, path: str, headers: dict[str, str], chunks: Iterator[bytes], address: str | None = None
) -> Streamed:
    """POSTs a chunked body from a second thread while this one waits for the answer, as a client that
    keeps sending until the server stops it would."""
    sent = 0
    with connect(server, address) as sock:
        sock.sendall(request_head("POST", path, {**headers, "Transfer-Encoding": "chunked"}))

        def send() -> None:
            nonlocal sent
            try:
                for chunk in chunks:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent += len(chunk)
                sock.sendall(b"0\r\n\r\n")
            except OSError:  # the server answered and closed the connection: what we want
                pass

        sender = threading.Thread(target=send)
        sender.start()
        try:
            answer = read_answer(sock)
        finally:
            with contextlib.suppress(OSError):  # already closed by the server
                sock.shutdown(socket.SHUT_RDWR)
            sender.join()
    return Streamed(answer, sent)


def repeat(piece: bytes, total: int) -> Iterator[bytes]:
    for _ in range(total // len(piece)):
        yield piece


def assert_error_shape(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, answer
    assert answer.body["error"] == code and set(answer.body) == {"error", "detail", "alternatives"}, answer
    assert "x-request-id" in answer.headers


def policies(server: Server) -> list[RoutePolicy]:
    """What ingress derives from the app's routes (as it does when the app starts)."""
    from service.main import create_app

    return route_policies(create_app(server.settings).routes)


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


# -- refused before the body is read --------------------------------------------------------------------------


def test_no_key_512_mib_upload_is_refused_on_its_headers_alone(server: Server):
    before = server.files()
    multipart = {"Content-Type": "multipart/form-data; boundary=b0undary", "Content-Length": str(512 * MiB)}
    with connect(server) as sock:
        sock.sendall(request_head("POST", "/v1/models", multipart))
        answer = read_answer(sock)  # not a byte of the 512 MiB was sent
        assert sock.recv(1) == b""  # and the server closed the connection rather than read it
    assert_error_shape(answer, 401, "missing_key")
    assert answer.headers["connection"] == "close"
    # The same upload to a route whose limit is smaller is refused for its size, also unread.
    assert_error_shape(headers_only(server, "POST", "/v1/suites", multipart), 413, "bundle_too_large")
    assert server.files() == before and not any(server.tmpdir.iterdir())


def test_a_key_of_the_wrong_role_is_refused_before_its_upload_is_read(server: Server):
    """A partner's or a researcher's key on an operator's upload route: 403 on the headers alone,
    audited, with the connection closed rather than 512 MiB read and spooled."""
    before = server.files()
    multipart = {"Content-Type": "multipart/form-data; boundary=b0undary", "Content-Length": str(512 * MiB)}
    for role, path in (("partner", "/v1/models"), ("researcher", "/v1/datasets/demo-blobs/1/twin")):
        key = server.key(f"wrong-{role}", role)
        with connect(server) as sock:
            sock.sendall(request_head("PUT" if path.endswith("/twin") else "POST", path, {**key, **multipart}))
            answer = read_answer(sock)  # not a byte of the body was sent
            assert sock.recv(1) == b""
        assert_error_shape(answer, 403, "wrong_role")
        assert answer.headers["connection"] == "close"
    assert server.files() == before and not any(server.tmpdir.iterdir())
    with server.sessions() as s:
        denied = ledger.events_for(s, "route:POST /v1/models")
    assert any(e["actor"] == "partner:wrong-partner" and e["data"]["reason"] == "wrong_role" for e in denied)


def test_no_key_256_mib_chunked_json_is_refused_before_it_is_read(server: Server):
    get(server, "/v1/jobs", {}, fresh_address())  # warm the path up: what it allocates once is not the body
    baseline = server.memory_kib()
    peak = dict(baseline)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak["VmRSS"] = max(peak["VmRSS"], server.memory_kib()["VmRSS"])
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()

    def document() -> Iterator[bytes]:  # one JSON string of 256 MiB
        yield b'{"suite": "'
        yield from repeat(b"a" * (64 << 10), 256 * MiB)
        yield b'"}'

    try:
        streamed = stream_chunked(server, "/v1/jobs", {"Content-Type": "application/json"}, document())
    finally:
        done.set()
        sampler.join()
    after = server.memory_kib()
    grew_kib = max(peak["VmRSS"], after["VmRSS"]) - baseline["VmRSS"]
    hwm_kib = after["VmHWM"] - baseline["VmHWM"]
    print(
        f"256 MiB chunked, no key: the client pushed {streamed.sent} bytes before the server closed;"
        f" server RSS +{grew_kib} KiB, peak +{hwm_kib} KiB"
    )
    assert grew_kib < 4096 and hwm_kib < 4096
    assert_error_shape(streamed.answer, 401, "missing_key")
    assert streamed.sent < 256 * MiB


def test_every_route_is_public_or_refuses_a_keyless_request_unread(server: Server):
    table = policies(server)
    served = {(m, p.path) for p in table for m in p.methods}
    from service.main import create_app

    for path, operations in create_app(server.settings).openapi()["paths"].items():
        for method in operations:
            assert (method.upper(), path) in served, f"{method} {path} is in the OpenAPI but ingress does not know it"
    api = [p for p in table if not p.path.startswith(SITE)]
    assert {(m, p.path) for p in api if not p.authenticated for m in p.methods} == PUBLIC
    assert all(not p.authenticated for p in table if p.path.startswith(SITE))
    for policy in api:
        for method in sorted(policy.methods):
            path = concrete(policy.path)
            if not policy.authenticated:
                if method == "GET":
                    assert get(server, path, {}, fresh_address()).status == 200, path
                continue
            # A body the route would take, announced and never sent: the 401 must come without it.
            length = 0 if policy.body is Body.NONE else 1000
            headers = {"Content-Length": str(length), "Content-Type": "application/json"}
            if policy.body is Body.UPLOAD:
                headers["Content-Type"] = "multipart/form-data; boundary=b0undary"
            answer = headers_only(server, method, path, headers)
            assert_error_shape(answer, 401, "missing_key")


def test_every_route_refuses_a_body_over_its_limit_unread(server: Server):
    partner = server.key("acme", "partner")
    expected = {Body.NONE: 0, Body.JSON: server.settings.json_max_bytes, Body.FORM: FORM_MAX_BYTES}
    uploads = {
        "/v1/suites": "bundle_too_large",
        "/v1/models": "model_too_large",
        "/v1/datasets": "dataset_too_large",
        "/v1/models/{name}/{version}/twin": "model_too_large",
        "/v1/datasets/{name}/{version}/twin": "dataset_too_large",
    }
    # The site's forms larger than a key and a token, each named here with the most it may take.
    larger_forms = {
        "/site/console/partners/{partner}": 64 << 10,
        "/site/me/suites": int(Settings.model_fields["bundle_max_bytes"].default) + (64 << 10),
    }
    for policy in policies(server):
        limit = policy.limit(server.settings)
        if policy.body is Body.UPLOAD:
            assert limit > getattr(server.settings, str(policy.limit_setting)) > 0
            code = uploads[policy.path]
        elif policy.body is Body.FORM and policy.path in larger_forms:
            assert limit == larger_forms[policy.path]
            code = "body_too_large"
        else:
            assert limit == expected[policy.body], policy.path
            code = "body_too_large"
        for method in sorted(policy.methods - {"HEAD"}):
            answer = headers_only(server, method, concrete(policy.path), {**partner, "Content-Length": str(limit + 1)})
            assert_error_shape(answer, 413, code)
            assert answer.headers["connection"] == "close"


def test_a_chunked_body_over_the_limit_is_cut_and_leaves_nothing(server: Server):
    partner = server.key("acme", "partner")
    files, suites, jobs = server.files(), server.count(SuiteVersion), server.count(Job)
    with server.sessions() as s:
        audit_size = s.execute(select(AuditHead.size)).scalar_one()

    def multipart(file_bytes: int) -> Iterator[bytes]:
        yield b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="s.tar.gz"\r\n\r\n'
        yield from repeat(b"\x1f" * (16 << 10), file_bytes)
        yield b"\r\n--b0undary--\r\n"

    upload = {**partner, "Content-Type": "multipart/form-data; boundary=b0undary"}
    streamed = stream_chunked(server, "/v1/suites", upload, multipart(BUNDLE_MAX + (512 << 10)))
    assert_error_shape(streamed.answer, 413, "bundle_too_large")
    spec = json.dumps({**factories.job_spec(), "padding": "x" * (2 * MiB)}).encode()
    json_body = iter([spec[i : i + (64 << 10)] for i in range(0, len(spec), 64 << 10)])
    streamed = stream_chunked(server, "/v1/jobs", {**partner, "Content-Type": "application/json"}, json_body)
    assert_error_shape(streamed.answer, 413, "body_too_large")
    assert streamed.answer.headers["connection"] == "close"
    assert server.files() == files and not any(server.tmpdir.iterdir())
    assert (server.count(SuiteVersion), server.count(Job)) == (suites, jobs)
    with server.sessions() as s:
        assert s.execute(select(AuditHead.size)).scalar_one() == audit_size


# -- failed authentication ----------------------------------------------------------------------------------


def test_failed_keys_are_rate_limited_per_address_and_a_known_key_still_works(server: Server):
    partner = server.key("acme", "partner")
    attacker, neighbour = fresh_address(), fresh_address()
    bad = factories.bearer("eg_AAAAAAAAAAAAAAAA_" + "x" * 43)
    assert get(server, "/v1/whoami", partner, attacker).status == 200
    for _ in range(FAILURES_PER_MINUTE):
        assert_error_shape(get(server, "/v1/whoami", bad, attacker), 401, "invalid_key")
    for headers in [bad] * 20 + [{}]:
        limited = get(server, "/v1/whoami", headers, attacker)
        assert_error_shape(limited, 429, "too_many_auth_failures")
        assert 1 <= int(limited.headers["retry-after"]) <= 60 // FAILURES_PER_MINUTE + 1
    assert get(server, "/v1/whoami", partner, attacker).status == 200  # it authenticated here before
    assert get(server, "/v1/whoami", server.key("newcomer", "partner"), attacker).status == 429  # never seen: waits
    assert_error_shape(get(server, "/v1/jobs", bad, neighbour), 401, "invalid_key")  # per address
    # The ledger got the five denials and one refusal for the window, not one row per attempt.
    with server.sessions() as s:
        events = ledger.events_for(s, "route:GET /v1/whoami")
        assert ledger.verify(s).ok
    assert sum(e["data"]["reason"] == "invalid_key" for e in events) == FAILURES_PER_MINUTE
    refusals = [e for e in events if e["data"].get("client") == attacker]
    assert [e["data"]["reason"] for e in refusals] == ["too_many_auth_failures"]


def test_a_keyless_request_with_a_long_path_costs_the_audit_log_its_route_not_its_path(server: Server):
    """A denial is audited before any key is checked: it records the route's template, so a path of
    60 KB sent without a key costs the log a few hundred bytes, not twice the path."""
    address = fresh_address()
    long_path = "/v1/jobs/" + "a" * 60_000
    assert_error_shape(get(server, long_path, {}, address), 401, "missing_key")
    with server.sessions() as s:
        row = s.execute(
            select(AuditEvent).where(AuditEvent.action == "access.denied").order_by(AuditEvent.seq.desc()).limit(1)
        ).scalar_one()
    assert row.subject == "route:GET /v1/jobs/{job_id}"
    assert len(row.record) < 1000 and "aaaa" not in row.record
    assert "aaaa" not in server.log_path.read_text()


def test_a_refused_address_costs_no_key_lookup(settings: Settings, monkeypatch: pytest.MonkeyPatch):
    from service.auth import service as auth_service
    from service.main import create_app

    lookups = []
    authenticate = auth_service.authenticate
    monkeypatch.setattr(auth_service, "authenticate", lambda *a, **k: lookups.append(1) or authenticate(*a, **k))
    settings.auth_failures_per_minute = 3
    bad = factories.bearer("eg_AAAAAAAAAAAAAAAA_" + "x" * 43)
    with TestClient(create_app(settings)) as client:
        with session_scope(client.app.state.sessionmaker) as s:
            partner = factories.bearer(factories.key(s, "acme", "partner"))
        assert client.get("/v1/whoami", headers=partner).status_code == 200
        assert len(lookups) == 1  # ingress's; current_caller took the caller it found
        answers = [client.get("/v1/jobs", headers=bad).status_code for _ in range(10)]
    assert answers == [401] * 3 + [429] * 7
    assert len(lookups) == 1 + 3


def test_the_limiter_forgets_the_oldest_addresses_beyond_its_bound():
    limiter = AuthFailures(per_minute=1, max_addresses=3, max_vouched=2)
    for i in range(10):
        limiter.failed(f"10.0.0.{i}", now=0.0)
    assert len(limiter) == 3
    assert limiter.wait_s("10.0.0.9", now=0.0) is not None and limiter.wait_s("10.0.0.0", now=0.0) is None
    assert limiter.wait_s("10.0.0.9", now=60.0) is None  # refilled after a minute
    for token in ("a", "b", "c"):
        limiter.vouch(token, ok=True)
    assert not limiter.vouched("a") and limiter.vouched("c")


def test_a_multipart_route_without_a_limit_stops_the_app():
    app = FastAPI()

    @app.post("/unbounded")
    def unbounded(file: UploadFile = File()) -> None:
        """Takes any file."""

    with pytest.raises(RuntimeError, match="upload_limit"):
        route_policies(app.routes)


# -- a write is answered after it committed --------------------------------------------------------------


def test_a_201_is_sent_only_after_the_write_committed(tmp_path: Path):
    """Commits are slowed by a second: a server that answered before committing would be caught with
    the row still missing when the client, on its 201, looks through a connection of its own."""
    server = Server(tmp_path, slow_commit_s=1.0)
    try:
        partner = server.key("acme", "partner")
        bundle = factories.suite_bundle(factories.unique("committed"), "print(1)", ["score"])
        r = httpx.post(f"{server.url}/v1/suites", headers=partner, files={"file": ("s.tar.gz", bundle)}, timeout=60)
        with server.sessions() as s:
            found = s.execute(select(SuiteVersion).where(SuiteVersion.sha256 == r.json()["sha256"])).scalars().all()
        assert r.status_code == 201, r.text
        assert len(found) == 1
    finally:
        server.stop()
