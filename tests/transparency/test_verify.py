"""`evalgate verify`, offline: a real bundle verifies; each field of it tampered with, and the log
rewritten (an entry edited, deleted or reordered; a fork), fail with the check that broke named."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.cli import main
from service.release import service as release_service
from service.release.signing import Signer
from service.transparency import dsse, note
from service.transparency import service as tlog
from tests import factories
from tests.harness import harness
from tests.transparency.helpers import bundle, checkpoint, filler, release_job, rewrite

Bundle = dict[str, Any]


@pytest.fixture(scope="module")
def released(tmp_path_factory, demo_files) -> Any:
    """One SQLite deployment: 3 entries, a checkpoint a researcher saved (size 3), a release, 2 more
    entries, a second release; the first release's bundle with a consistency proof from 3."""
    tmp = tmp_path_factory.mktemp("verify")
    for h in harness(factories.settings(tmp / "data"), demo_files):
        filler(h, 3)
        saved = checkpoint(h)
        first = release_job(h, demo_files)
        filler(h, 2)
        release_job(h, demo_files, metric="macro_f1")
        yield {
            "bundle": bundle(h, first, since=3),
            "saved": saved,
            "key": h.client.get("/v1/attestation-key").json()["public_key"],
            "vkey": h.client.get("/v1/log/checkpoint", headers=h.researcher).json()["verifier_key"],
        }


def run(tmp_path: Path, b: Bundle | str, *args: str) -> Any:
    path = tmp_path / "bundle.json"
    path.write_text(b if isinstance(b, str) else json.dumps(b))
    return CliRunner().invoke(main, ["verify", str(path), *args])


def saved_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "checkpoint.txt"
    path.write_text(text)
    return str(path)


def test_a_bundle_verifies_with_the_key_as_base64_as_a_verifier_key_or_a_file(released, tmp_path):
    since = saved_file(tmp_path, released["saved"])
    for k in (released["key"], released["vkey"], saved_file(tmp_path / "..", released["vkey"])):
        r = run(tmp_path, released["bundle"], "--key", k, "--since", since)
        assert r.exit_code == 0, r.output
        assert "verified signature, statement, checkpoint, inclusion, consistency" in r.output and "OK" in r.output


def test_without_a_key_it_is_only_integrity(released, tmp_path):
    r = run(tmp_path, released["bundle"])
    assert r.exit_code == 3 and "not trusted" in r.output


def test_a_bundle_without_log_proof_is_incomplete(released, tmp_path):
    b = copy.deepcopy(released["bundle"]) | {"log": None}
    r = run(tmp_path, b, "--key", released["key"])
    assert r.exit_code == 3 and "not checked: checkpoint, inclusion" in r.output


def restate(b: Bundle, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit the signed statement inside the envelope (the signature stays the old one)."""
    statement = json.loads(base64.b64decode(b["envelope"]["payload"]))
    change(statement)
    b["envelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()


def flip(b64: str) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def checkpoint_line(b: Bundle, line: int, value: str) -> None:
    lines = b["log"]["checkpoint"].split("\n")
    lines[line] = value
    b["log"]["checkpoint"] = "\n".join(lines)


TAMPERING: dict[str, tuple[Callable[[Bundle], Any], str]] = {
    "job_id": (lambda b: b.update(job_id="0" * 32), "statement"),
    "document.job_id": (lambda b: b["document"].update(job_id="0" * 32), "statement"),
    "document.metrics value": (lambda b: b["document"]["metrics"].update(accuracy=0.9999), "statement"),
    "document.metrics added": (lambda b: b["document"]["metrics"].update(macro_f1=0.5), "statement"),
    "document.metrics removed": (lambda b: b["document"].update(metrics={}), "statement"),
    "document missing": (lambda b: b.pop("document"), "bundle"),
    "envelope.payload: metrics digest": (
        lambda b: restate(b, lambda s: s["subject"][0]["digest"].update(sha256="0" * 64)),
        "signature",
    ),
    "envelope.payload: seed": (lambda b: restate(b, lambda s: s["predicate"].update(seed=7)), "signature"),
    "envelope.payload not base64": (lambda b: b["envelope"].update(payload="%%%"), "signature"),
    "envelope.payloadType": (lambda b: b["envelope"].update(payloadType="application/json"), "signature"),
    "envelope.signatures[0].sig": (
        lambda b: b["envelope"]["signatures"][0].update(sig=flip(b["envelope"]["signatures"][0]["sig"])),
        "signature",
    ),
    "envelope.signatures empty": (lambda b: b["envelope"].update(signatures=[]), "signature"),
    "log.leaf_index": (lambda b: b["log"].update(leaf_index=b["log"]["leaf_index"] - 1), "inclusion"),
    "log.leaf_index missing": (lambda b: b["log"].pop("leaf_index"), "bundle"),
    "log.inclusion_proof[0]": (
        lambda b: b["log"]["inclusion_proof"].__setitem__(0, flip(b["log"]["inclusion_proof"][0])),
        "inclusion",
    ),
    "log.inclusion_proof shortened": (lambda b: b["log"]["inclusion_proof"].pop(), "inclusion"),
    "log.inclusion_proof lengthened": (lambda b: b["log"]["inclusion_proof"].append("A" * 43 + "="), "inclusion"),
    "log.checkpoint origin": (lambda b: checkpoint_line(b, 0, "evalgate.elsewhere"), "checkpoint"),
    "log.checkpoint size": (lambda b: checkpoint_line(b, 1, "5"), "checkpoint"),
    "log.checkpoint root": (lambda b: checkpoint_line(b, 2, base64.b64encode(b"\0" * 32).decode()), "checkpoint"),
    "log.checkpoint signature": (
        lambda b: checkpoint_line(b, 4, b["log"]["checkpoint"].split("\n")[4][:-8] + "AAAAAAA="),
        "checkpoint",
    ),
    "log.checkpoint unsigned": (
        lambda b: b["log"].update(checkpoint=b["log"]["checkpoint"].split("\n\n")[0]),
        "checkpoint",
    ),
    "log.consistency.proof[0]": (
        lambda b: b["log"]["consistency"]["proof"].__setitem__(0, flip(b["log"]["consistency"]["proof"][0])),
        "consistency",
    ),
    "log.consistency missing": (lambda b: b["log"].update(consistency=None), "consistency"),
    "log.consistency.old_size": (lambda b: b["log"]["consistency"].update(old_size=2), "consistency"),
}


@pytest.mark.parametrize("field", sorted(TAMPERING))
def test_each_field_tampered_with_fails_naming_its_check(released, tmp_path, field):
    b = copy.deepcopy(released["bundle"])
    change, check = TAMPERING[field]
    change(b)
    r = run(tmp_path, b, "--key", released["key"], "--since", saved_file(tmp_path, released["saved"]))
    assert r.exit_code == 1, r.output
    assert f"FAILED {check}:" in r.output, r.output


def resigned(b: Bundle, key: Ed25519PrivateKey) -> Bundle:
    """The bundle re-signed throughout by another key: its statement, checkpoint and verifier key."""
    raw = key.public_key().public_bytes_raw()
    out = copy.deepcopy(b)
    statement = json.loads(base64.b64decode(b["envelope"]["payload"]))
    out["envelope"] = dsse.seal(statement, "forger", key.sign)
    origin = b["log"]["checkpoint"].split("\n", 1)[0]
    text = b["log"]["checkpoint"].split("\n\n", 1)[0] + "\n"
    out["log"]["checkpoint"] = note.sign(text, origin, raw, key.sign)
    out["verifier_key"] = note.verifier_key(origin, raw)
    return out


def test_a_bundle_signed_by_another_key_passes_only_against_its_own_key(released, tmp_path):
    forged = resigned(released["bundle"], Ed25519PrivateKey.generate())
    assert run(tmp_path, forged).exit_code == 3  # consistent in itself, but the key is the bundle's own
    r = run(tmp_path, forged, "--key", released["key"])
    assert r.exit_code == 1 and "FAILED signature:" in r.output


def test_a_saved_checkpoint_of_another_log_or_key_fails(released, tmp_path):
    other = Signer(Ed25519PrivateKey.generate())
    text = released["saved"].split("\n\n", 1)[0] + "\n"
    origin = text.split("\n", 1)[0]
    for forged, why in (
        (note.sign(text, origin, other.public_key_raw, other.sign_bytes), "another key"),
        (note.sign(text.replace(origin, "evalgate.other", 1), "evalgate.other", *_signer(released)), "signature"),
    ):
        r = run(tmp_path, released["bundle"], "--key", released["key"], "--since", saved_file(tmp_path, forged))
        assert r.exit_code == 1 and "FAILED since checkpoint:" in r.output, (why, r.output)


def _signer(released: Any) -> tuple[bytes, Callable[[bytes], bytes]]:
    """A key that is not the service's, posing under its own name (the service's key stays unknown)."""
    k = Ed25519PrivateKey.generate()
    return k.public_key().public_bytes_raw(), k.sign


@pytest.mark.parametrize("content", ["not json", "[1, 2]", "{}"])
def test_an_unusable_bundle_fails(released, tmp_path, content):
    r = run(tmp_path, content, "--key", released["key"])
    assert r.exit_code == (2 if content == "not json" else 1), r.output
    assert "cannot read the input" in r.output if content == "not json" else "FAILED bundle:" in r.output


def test_an_unusable_key_is_a_usage_error(released, tmp_path):
    r = run(tmp_path, released["bundle"], "--key", "not-a-key")
    assert r.exit_code == 2 and "--key" in r.output


# -- the log rewritten by someone with write access to the database ------------------------------------


def setup_log(api, demo_files) -> tuple[str, str, str]:
    """Two releases amid filler entries, and a checkpoint saved after the first: (job, job, saved)."""
    filler(api, 2)
    first = release_job(api, demo_files)
    filler(api, 3)
    saved = checkpoint(api)  # size 6: the first release is entry 2
    second = release_job(api, demo_files, metric="macro_f1")
    return first, second, saved


def verify_second(api, tmp_path, second: str, saved: str) -> Any:
    size = note.parse_checkpoint(saved.split("\n\n", 1)[0] + "\n").size
    return run(tmp_path, bundle(api, second, since=size), "--key", key_of(api), "--since", saved_file(tmp_path, saved))


def key_of(api) -> str:
    return str(api.client.get("/v1/attestation-key").json()["public_key"])


def test_the_untouched_log_verifies_against_the_saved_checkpoint(api, demo_files, tmp_path):
    _, second, saved = setup_log(api, demo_files)
    r = verify_second(api, tmp_path, second, saved)
    assert r.exit_code == 0, r.output


def set_leaf_index(api, job_id: str, index: int | None) -> None:
    """Point a release at where the rewritten log holds it (or at nothing)."""
    with api.db() as s:
        result = release_service.existing(s, job_id)
        assert result is not None
        result.leaf_index = index


def last_release_index(api) -> int:
    with api.db() as s:
        return max(e.idx for e in tlog.entries(s, 0, tlog.size(s)) if e.kind == "release")


REWRITES: dict[str, Callable[[list[Any]], list[Any]]] = {
    "edit an entry": lambda leaves: [leaves[0], ("test", '{"filler":"edited"}'), *leaves[2:]],
    "delete an entry": lambda leaves: [leaves[0], *leaves[2:]],
    "reorder two entries": lambda leaves: [leaves[1], leaves[0], *leaves[2:]],
}


@pytest.mark.parametrize("how", sorted(REWRITES))
def test_a_rewritten_history_fails_consistency(api, demo_files, tmp_path, how):
    _, second, saved = setup_log(api, demo_files)
    rewrite(api, REWRITES[how])
    set_leaf_index(api, second, last_release_index(api))  # the second release is still in the log
    filler(api, 1)  # and the log grew since: no two checkpoints of one size to compare
    r = verify_second(api, tmp_path, second, saved)
    assert r.exit_code == 1 and "FAILED consistency:" in r.output, r.output
    assert "history was rewritten" in r.output


def test_a_deleted_release_fails_inclusion(api, demo_files, tmp_path):
    first, _, _ = setup_log(api, demo_files)
    rewrite(api, lambda leaves: [*leaves[:2], *leaves[3:]])  # the first release's entry (2) is gone
    r = run(tmp_path, bundle(api, first), "--key", key_of(api))
    assert r.exit_code == 1 and "FAILED inclusion:" in r.output, r.output


def test_a_fork_is_caught_at_the_same_size_and_after_it(api, demo_files, tmp_path):
    first, second, saved = setup_log(api, demo_files)
    # Another history from the saved checkpoint's size on (entry 5 differs), shown to this reader.
    rewrite(api, lambda leaves: [*leaves[:5], ("test", '{"filler":"fork"}')])
    set_leaf_index(api, second, None)
    since = saved_file(tmp_path, saved)
    r = run(tmp_path / "..", bundle(api, first, since=6), "--key", key_of(api), "--since", since)
    assert r.exit_code == 1 and "FAILED consistency: two checkpoints of size 6 differ" in r.output, r.output
    filler(api, 1)
    r = run(tmp_path, bundle(api, first, since=6), "--key", key_of(api), "--since", since)
    assert r.exit_code == 1 and "FAILED consistency:" in r.output and "rewritten" in r.output, r.output
