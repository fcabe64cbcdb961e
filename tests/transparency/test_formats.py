"""The wire formats against their specifications' own examples: C2SP signed-note (its verifier key
and signed note, c2sp.org/signed-note at commit 5ba5ee8) and DSSE's PAE (secure-systems-lab/dsse,
protocol.md, "Test Vectors", at commit eebf7b5)."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.release.signing import Signer
from service.transparency import dsse, note

# c2sp.org/signed-note, "Verifier keys", "Example".
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n"
    "\n"
    "\u2014 example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)


def test_the_signed_note_specs_example_verifies():
    name, key = note.parse_verifier_key(SPEC_VKEY)
    assert name == "example.com/foo" and note.verifier_key(name, key) == SPEC_VKEY
    assert note.open_note(SPEC_NOTE, name, key) == "This is an example message.\n"
    with pytest.raises(note.NoteError, match="altered"):
        note.open_note(SPEC_NOTE.replace("example message", "exemplary message"), name, key)
    with pytest.raises(note.NoteError, match="no signature by"):
        note.open_note(SPEC_NOTE, "example.com/bar", key)


def test_a_verifier_key_with_a_wrong_hash_is_refused():
    with pytest.raises(note.NoteError, match="hash"):
        note.parse_verifier_key(SPEC_VKEY.replace("530d903a", "530d903b"))


def test_a_checkpoint_we_sign_reads_back_and_another_keys_does_not():
    signer, other = Signer(Ed25519PrivateKey.generate()), Signer(Ed25519PrivateKey.generate())
    cp = note.Checkpoint("evalgate.example/log", 42, bytes(range(32)))
    signed = note.sign(cp.text(), cp.origin, signer.public_key_raw, signer.sign_bytes)
    assert signed.startswith("evalgate.example/log\n42\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n\n\u2014 ")
    assert note.open_checkpoint(signed, signer.public_key_raw) == cp
    with pytest.raises(note.NoteError, match="another key"):
        note.open_checkpoint(signed, other.public_key_raw)


def test_pae_is_the_dsse_specs_example():
    assert dsse.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_an_envelope_opens_only_unaltered_and_under_its_key():
    signer = Signer(Ed25519PrivateKey.generate())
    statement = {"_type": dsse.STATEMENT_TYPE, "subject": [], "predicateType": "x", "predicate": {}}
    envelope = dsse.seal(statement, signer.key_id, signer.sign_bytes)
    assert dsse.open_envelope(envelope, signer.public_key_raw) == statement
    altered = dict(envelope, payload=base64.b64encode(json.dumps(statement | {"predicate": 1}).encode()).decode())
    with pytest.raises(dsse.EnvelopeError, match="no signature"):
        dsse.open_envelope(altered, signer.public_key_raw)
    with pytest.raises(dsse.EnvelopeError, match="no signature"):
        dsse.open_envelope(envelope, Signer(Ed25519PrivateKey.generate()).public_key_raw)
